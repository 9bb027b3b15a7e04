import Medusa
import Worker

/// Per-head accuracy of Medusa heads on answers the model gives now (not stored data): head k at
/// each answer row is right when the token k + 1 places further in the answer is its top guess
/// (top-1) or among its five best (top-5).
public struct HeadAccuracy: Sendable, Equatable {
    public var top1: [Int]
    public var top5: [Int]
    /// Rows where head k had a token to guess.
    public var counts: [Int]
    public var answers = 0
    public var rows = 0

    public init(heads: Int) {
        top1 = [Int](repeating: 0, count: heads)
        top5 = top1
        counts = top1
    }

    public var top1Accuracy: [Double] { zip(top1, counts).map { $1 > 0 ? Double($0) / Double($1) : 0 } }
    public var top5Accuracy: [Double] { zip(top5, counts).map { $1 > 0 ? Double($0) / Double($1) : 0 } }

    /// Answers `prompt` greedily and scores every head on every row of the answer.
    public mutating func score(
        prompt: [Int32], heads: MedusaHeads, generator: Generator, maxTokens: Int, stopAt: (Int32) -> Bool
    ) throws(GenerationError) {
        var sampler = Sampler(parameters: SamplingParameters(temperature: 0), seed: 0)
        let answer = try generator.generateWithHiddenStates(prompt: prompt, maxTokens: maxTokens, sampler: &sampler, stopAt: stopAt)
        let h = generator.model.config.hiddenSize, k = top1.count
        answers += 1
        rows += answer.tokens.count
        answer.hidden.withUnsafeBufferPointer { hidden in
            for j in answer.tokens.indices where j + 1 < answer.tokens.count {
                let guesses = heads.propose(hidden: hidden.baseAddress! + j * h, sequence: [], topK: [Int](repeating: 5, count: k))
                for d in 0..<k where j + 1 + d < answer.tokens.count {
                    let truth = answer.tokens[j + 1 + d]
                    counts[d] += 1
                    if guesses[d].first == truth { top1[d] += 1 }
                    if guesses[d].contains(truth) { top5[d] += 1 }
                }
            }
        }
    }
}
