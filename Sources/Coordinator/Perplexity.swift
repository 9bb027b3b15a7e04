import Foundation
import Worker

/// Perplexity of a token stream with llama.cpp's convention: consecutive chunks of `context`
/// tokens, each evaluated from an empty cache; the negative log-likelihood is scored on the second
/// half of each chunk (logits at positions context/2 ..< context - 1 predicting the next token).
public struct PerplexityResult: Sendable, Codable, Equatable {
    public var ppl: Double
    public var tokensScored: Int
    public var chunks: Int
    /// Mean negative log-likelihood per scored token (natural log).
    public var meanNLL: Double

    enum CodingKeys: String, CodingKey {
        case ppl
        case tokensScored = "tokens_scored"
        case chunks
        case meanNLL = "mean_nll"
    }
}

public enum PerplexityError: Error, CustomStringConvertible, Sendable {
    case tooFewTokens(have: Int, context: Int)
    case contextTooSmall(Int)
    case model(ModelError)

    public var description: String {
        switch self {
        case .tooFewTokens(let have, let ctx):
            "the text has \(have) tokens; perplexity needs at least one chunk of \(ctx) (lower --ctx)"
        case .contextTooSmall(let c): "--ctx \(c) is too small for perplexity (need at least 4)"
        case .model(let e): e.description
        }
    }
}

public enum Perplexity {
    /// - Parameters:
    ///   - bos: when the vocabulary adds BOS, the first token of each chunk is replaced by it (as llama.cpp does).
    ///   - onChunk: progress, with the running perplexity after each chunk.
    public static func evaluate(
        model: LlamaModel, tokens: [Int32], context: Int, maxChunks: Int? = nil, bos: Int32? = nil,
        onChunk: (Int, Double) -> Void = { _, _ in }
    ) throws(PerplexityError) -> PerplexityResult {
        guard context >= 4 else { throw .contextTooSmall(context) }
        guard context <= model.contextLength else {
            throw .model(.contextFull(committed: 0, adding: context, capacity: model.contextLength))
        }
        var chunkCount = tokens.count / context
        if let m = maxChunks { chunkCount = min(chunkCount, m) }
        guard chunkCount > 0 else { throw .tooFewTokens(have: tokens.count, context: context) }

        let vocab = model.config.vocabularySize
        let hiddenSize = model.config.hiddenSize
        let first = context / 2
        let logitRows = 16
        var logits = [Float](repeating: 0, count: logitRows * vocab)
        var nll = 0.0
        var count = 0
        for chunk in 0..<chunkCount {
            var chunkTokens = Array(tokens[(chunk * context)..<((chunk + 1) * context)])
            if let bos { chunkTokens[0] = bos }
            model.cache.reset()
            var start = 0
            while start < context {
                let end = min(context, start + model.maxStepTokens)
                let stepTokens = Array(chunkTokens[start..<end])
                let positions = (start..<end).map { Int32($0) }
                let hidden: UnsafeBufferPointer<Float>
                do {
                    hidden = try stepTokens.withUnsafeBufferPointer { t throws(ModelError) in
                        try positions.withUnsafeBufferPointer { p throws(ModelError) in
                            try model.forward(tokens: t, positions: p, mask: .causal(stepTokens.count))
                        }
                    }
                } catch { throw .model(error) }
                model.cache.commit(count: stepTokens.count)
                // Score rows at positions first ..< context - 1 that fall in this step.
                var row = max(start, first)
                while row < min(end, context - 1) {
                    let rows = min(logitRows, min(end, context - 1) - row)
                    logits.withUnsafeMutableBufferPointer { out in
                        model.logits(hidden: hidden.baseAddress! + (row - start) * hiddenSize, rows: rows, into: out.baseAddress!)
                        for r in 0..<rows {
                            let target = Int(chunkTokens[row + r + 1])
                            nll -= logSoftmax(UnsafeBufferPointer(start: out.baseAddress! + r * vocab, count: vocab), at: target)
                            count += 1
                        }
                    }
                    row += rows
                }
                start = end
            }
            onChunk(chunk + 1, exp(nll / Double(count)))
        }
        return PerplexityResult(ppl: exp(nll / Double(count)), tokensScored: count, chunks: chunkCount, meanNLL: nll / Double(count))
    }

    /// log softmax(logits)[index], in double precision.
    static func logSoftmax(_ logits: UnsafeBufferPointer<Float>, at index: Int) -> Double {
        var maxValue = -Float.infinity
        for v in logits { maxValue = max(maxValue, v) }
        var sum = 0.0
        for v in logits { sum += exp(Double(v - maxValue)) }
        return Double(logits[index] - maxValue) - log(sum)
    }
}
