import Medusa
import Worker

/// Per-head accuracy of Medusa heads on answers the model gives now (not stored data): at each
/// answer row, where the token k + 1 places further in the answer ranks among head k's guesses.
public struct HeadAccuracy: Sendable, Equatable {
    /// Guesses ranked per head.
    public static let ranks = 10
    /// atRank[k][r]: rows where the true token was head k's guess of rank r.
    public var atRank: [[Int]]
    /// Rows where head k had a token to guess.
    public var counts: [Int]
    public var answers = 0
    public var rows = 0

    public init(heads: Int) {
        atRank = [[Int]](repeating: [Int](repeating: 0, count: Self.ranks), count: heads)
        counts = [Int](repeating: 0, count: heads)
    }

    /// Per head, the share of rows whose true token was the guess of each rank.
    public var rankAccuracy: [[Double]] {
        zip(atRank, counts).map { hits, n in hits.map { n > 0 ? Double($0) / Double(n) : 0 } }
    }

    /// Per head, the share of rows whose true token was among the `k` best guesses.
    public func topAccuracy(_ k: Int) -> [Double] { rankAccuracy.map { $0.prefix(k).reduce(0, +) } }

    public var top1Accuracy: [Double] { topAccuracy(1) }
    public var top5Accuracy: [Double] { topAccuracy(5) }

    /// Answers `prompt` greedily and scores every head on every row of the answer.
    public mutating func score(
        prompt: [Int32], heads: MedusaHeads, generator: Generator, maxTokens: Int, stopAt: (Int32) -> Bool
    ) throws(GenerationError) {
        var sampler = Sampler(parameters: SamplingParameters(temperature: 0), seed: 0)
        let answer = try generator.generateWithHiddenStates(prompt: prompt, maxTokens: maxTokens, sampler: &sampler, stopAt: stopAt)
        let h = generator.model.config.hiddenSize, k = counts.count
        answers += 1
        rows += answer.tokens.count
        answer.hidden.withUnsafeBufferPointer { hidden in
            for j in answer.tokens.indices where j + 1 < answer.tokens.count {
                let guesses = heads.propose(hidden: hidden.baseAddress! + j * h, sequence: [],
                                            topK: [Int](repeating: Self.ranks, count: k))
                for d in 0..<k where j + 1 + d < answer.tokens.count {
                    counts[d] += 1
                    if let rank = guesses[d].firstIndex(of: answer.tokens[j + 1 + d]) { atRank[d][rank] += 1 }
                }
            }
        }
    }
}
