import Foundation
import Medusa
import Worker

/// Why generation stopped.
public enum FinishReason: String, Sendable, Codable {
    /// An end-of-generation token was produced.
    case stop
    /// The token limit or the context was reached.
    case length
}

/// What a generation produced, with its timings.
public struct GenerationResult: Sendable {
    public var tokens: [Int32] = []
    public var promptTokens = 0
    public var finishReason = FinishReason.length
    /// Wall time of the prompt's prefill.
    public var prefillSeconds: Double = 0
    /// Wall time from the end of prefill to the last token.
    public var decodeSeconds: Double = 0
    /// Verify-step statistics when Medusa decoding produced the tokens.
    public var medusa: MedusaStats?
}

/// Problems with a generation request, reported before any work is done.
public enum GenerationError: Error, CustomStringConvertible, Sendable, Equatable {
    case emptyPrompt
    case promptTooLong(tokens: Int, context: Int)
    case model(ModelError)

    public var description: String {
        switch self {
        case .emptyPrompt: "the prompt is empty"
        case .promptTooLong(let t, let c):
            "the prompt is \(t) tokens but the context holds \(c) (raise --ctx or shorten the prompt)"
        case .model(let e): e.description
        }
    }
}

/// Plain autoregressive decoding on one sequence: prefill the prompt, then one token per step.
public final class Generator {
    public let model: LlamaModel
    private var logits: [Float]
    private var hidden: [Float]
    /// When set, the decode phase of `generate` (not the prefill) records its forward time split here.
    public var decodeProfile: StepProfile?

    public init(model: LlamaModel) {
        self.model = model
        logits = [Float](repeating: 0, count: model.config.vocabularySize)
        hidden = [Float](repeating: 0, count: model.config.hiddenSize)
    }

    /// Feeds `tokens` through the model after what the cache holds, in causal steps of at most
    /// `model.maxStepTokens`, and leaves the logits of the last token in `lastLogits`.
    public func prefill(_ tokens: [Int32]) throws(ModelError) {
        var start = 0
        while start < tokens.count {
            let end = min(tokens.count, start + model.maxStepTokens)
            try step(Array(tokens[start..<end]))
            start = end
        }
    }

    /// The logits left by the last prefill or step.
    public var lastLogits: [Float] { logits }

    /// The final-normed hidden state of the last token of the last prefill or step.
    public var lastHidden: [Float] { hidden }

    /// One causal step over `tokens` (committed afterwards); keeps the last row's logits.
    private func step(_ tokens: [Int32]) throws(ModelError) {
        let base = model.cache.committed
        let positions = (0..<tokens.count).map { Int32(base + $0) }
        let rows = try tokens.withUnsafeBufferPointer { t throws(ModelError) in
            try positions.withUnsafeBufferPointer { p throws(ModelError) in
                try model.forward(tokens: t, positions: p, mask: .causal(tokens.count))
            }
        }
        model.cache.commit(count: tokens.count)
        let h = model.config.hiddenSize
        let last = rows.baseAddress! + (tokens.count - 1) * h
        hidden.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: last, count: h) }
        logits.withUnsafeMutableBufferPointer { out in
            model.logits(hidden: last, rows: 1, into: out.baseAddress!)
        }
    }

    /// The start of every generation loop: checks the prompt, empties the cache and prefills it.
    /// Returns the result so far (prompt tokens, prefill time) and when the prefill ended.
    func begin(prompt: [Int32]) throws(GenerationError) -> (GenerationResult, DispatchTime) {
        guard !prompt.isEmpty else { throw .emptyPrompt }
        guard prompt.count < model.contextLength else {
            throw .promptTooLong(tokens: prompt.count, context: model.contextLength)
        }
        model.cache.reset()
        var result = GenerationResult()
        result.promptTokens = prompt.count
        let start = DispatchTime.now()
        do { try prefill(prompt) } catch { throw .model(error) }
        let prefillEnd = DispatchTime.now()
        result.prefillSeconds = seconds(start, prefillEnd)
        return (result, prefillEnd)
    }

    /// Generates up to `maxTokens` tokens after `prompt` (the cache is reset first). `onToken`
    /// sees each token as it is chosen; returning false stops early.
    public func generate(
        prompt: [Int32], maxTokens: Int, sampler: inout Sampler, stopAt isEndOfGeneration: (Int32) -> Bool,
        onToken: (Int32) -> Bool = { _ in true }
    ) throws(GenerationError) -> GenerationResult {
        var (result, prefillEnd) = try begin(prompt: prompt)
        result.finishReason = .length
        let savedProfile = model.profile
        if let decodeProfile { model.profile = decodeProfile }
        defer { model.profile = savedProfile }
        while result.tokens.count < maxTokens {
            let next = logits.withUnsafeBufferPointer { sampler.sample($0) }
            if isEndOfGeneration(next) {
                result.finishReason = .stop
                break
            }
            result.tokens.append(next)
            guard onToken(next) else { break }
            guard result.tokens.count < maxTokens, model.cache.available > 0 else { break }
            do { try step([next]) } catch { throw .model(error) }
        }
        result.decodeSeconds = seconds(prefillEnd, DispatchTime.now())
        return result
    }
}

func seconds(_ a: DispatchTime, _ b: DispatchTime) -> Double {
    Double(b.uptimeNanoseconds - a.uptimeNanoseconds) / 1e9
}
