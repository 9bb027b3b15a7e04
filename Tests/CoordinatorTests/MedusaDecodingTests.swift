import Coordinator
import Foundation
import Medusa
import TestSupport
import Testing
import Worker

/// Medusa decoding in one process: the output equals plain decoding's whatever the guesses, a
/// source that guesses right is accepted to full depth, and lossless sampling samples what plain
/// sampling samples.
@Suite struct MedusaDecodingTests {
    static func load(type: TensorType = .q8_0, context: Int = 256, seed: UInt64 = 7) throws -> LlamaModel {
        var synthetic = SyntheticLlama(config: SyntheticLlama.smallConfig, weightType: type, seed: seed)
        let path = try makeTemporaryDirectory() + "/tiny.gguf"
        try synthetic.write(to: path)
        return try LlamaModel(gguf: GGUFFile(path: path), contextLength: context, maxStepTokens: 128, threads: 2)
    }

    static let prompt: [Int32] = [72, 101, 108, 108, 111, 32, 116, 114, 101, 101]

    static func plain(_ model: LlamaModel, prompt: [Int32] = prompt, maxTokens: Int, stop: Int32? = nil) throws -> GenerationResult {
        var sampler = Sampler(parameters: SamplingParameters(temperature: 0), seed: 0)
        return try Generator(model: model).generate(prompt: prompt, maxTokens: maxTokens, sampler: &sampler, stopAt: { $0 == stop })
    }

    static func medusa(
        _ model: LlamaModel, source: any CandidateSource, tree: CandidateTree, prompt: [Int32] = prompt,
        maxTokens: Int, stop: Int32? = nil
    ) throws -> GenerationResult {
        var sampler = Sampler(parameters: SamplingParameters(temperature: 0), seed: 0)
        return try MedusaGenerator(model: model, source: source, tree: tree, rule: .greedy)
            .generate(prompt: prompt, maxTokens: maxTokens, sampler: &sampler, stopAt: { $0 == stop })
    }

    static let wideChoices: [[Int]] = (0..<8).map { [$0] } + (0..<4).map { [$0, 0] } + [[0, 1], [0, 0, 0], [0, 0, 1]]

    @Test("greedy Medusa with random heads gives plain greedy's tokens", arguments: ["chain", "wide", "mc_sim_7b_63"])
    func greedyMatchesPlain(treeName: String) throws {
        for type in [TensorType.q8_0, .q4_1] {
            let model = try Self.load(type: type)
            let expected = try Self.plain(model, maxTokens: 60)
            for ownLMHead in [false, true] {
                let weights = RandomHeads.make(heads: 4, layers: 2, hidden: model.config.hiddenSize,
                                               vocabulary: ownLMHead ? model.config.vocabularySize : nil)
                let heads = try MedusaHeads(weights: weights, model: model)
                let tree = treeName == "wide"
                    ? try CandidateTree(choices: Self.wideChoices)
                    : try #require(CandidateTree.preset(treeName, headCount: 4))
                let got = try Self.medusa(model, source: heads, tree: tree, maxTokens: 60)
                #expect(got.tokens == expected.tokens, "\(type) \(treeName) own LM head: \(ownLMHead)")
                let stats = try #require(got.medusa)
                #expect(stats.steps > 0 && stats.steps < 60)
                #expect(stats.acceptedHistogram.reduce(0, +) == stats.steps)
            }
        }
    }

    /// Proposes the true continuation at rank 0 of every depth and other tokens below it.
    final class Oracle: CandidateSource {
        let reference: [Int32]
        let depth: Int
        let vocabulary: Int32
        var calls = 0

        init(reference: [Int32], depth: Int, vocabulary: Int) {
            self.reference = reference
            self.depth = depth
            self.vocabulary = Int32(vocabulary)
        }

        func propose(hidden: UnsafePointer<Float>, sequence: [Int32], topK: [Int]) -> [[Int32]] {
            calls += 1
            #expect(Array(reference.prefix(sequence.count)) == sequence, "the sequence so far is the true one")
            return topK.enumerated().map { d, k in
                let at = sequence.count + d
                let truth = at < reference.count ? reference[at] : 0
                return (0..<Int32(k)).map { ($0 + truth) % vocabulary }
            }
        }
    }

    @Test("a source that guesses right is accepted to full depth every step, with the same output")
    func rightGuessesAcceptFullDepth() throws {
        let model = try Self.load()
        let expected = try Self.plain(model, maxTokens: 80)
        for tree in [CandidateTree.preset("chain", headCount: 4)!, CandidateTree.preset("mc_sim_7b_63", headCount: 4)!] {
            let oracle = Oracle(reference: Self.prompt + expected.tokens, depth: 4, vocabulary: model.config.vocabularySize)
            let got = try Self.medusa(model, source: oracle, tree: tree, maxTokens: 60)
            #expect(got.tokens == Array(expected.tokens.prefix(60)))
            let stats = try #require(got.medusa)
            // Every step keeps 4 guesses plus the model's own token: 59 tokens after the first need 12 steps.
            #expect(stats.steps == 12)
            #expect(stats.acceptedHistogram[4] == stats.steps)
            #expect(stats.meanAcceptedTokens == 5)
            #expect(stats.perHeadAcceptance == [1, 1, 1, 1])
            #expect(oracle.calls == stats.steps)
        }
    }

    @Test("at the end of the context the tree shrinks and the output still matches plain decoding")
    func contextEnd() throws {
        let model = try Self.load(context: 40)
        let expected = try Self.plain(model, maxTokens: 100)
        #expect(expected.tokens.count == 40 - Self.prompt.count + 1)
        let heads = try MedusaHeads(weights: RandomHeads.make(heads: 4, hidden: model.config.hiddenSize), model: model)
        let got = try Self.medusa(model, source: heads, tree: CandidateTree.preset("mc_sim_7b_63", headCount: 4)!, maxTokens: 100)
        #expect(got.tokens == expected.tokens)
        let oracle = Oracle(reference: Self.prompt + expected.tokens + [Int32](repeating: 0, count: 8), depth: 4,
                            vocabulary: model.config.vocabularySize)
        let right = try Self.medusa(model, source: oracle, tree: CandidateTree.preset("chain", headCount: 4)!, maxTokens: 100)
        #expect(right.tokens == expected.tokens)
        #expect(model.cache.committed == 40)
    }

    @Test("an end-of-generation token inside an accepted path ends the output there")
    func stopInsideAcceptedPath() throws {
        let model = try Self.load()
        let reference = try Self.plain(model, maxTokens: 40)
        let stop = reference.tokens[17]
        let expected = try Self.plain(model, maxTokens: 40, stop: stop)
        let oracle = Oracle(reference: Self.prompt + reference.tokens, depth: 4, vocabulary: model.config.vocabularySize)
        let got = try Self.medusa(model, source: oracle, tree: CandidateTree.preset("chain", headCount: 4)!, maxTokens: 40, stop: stop)
        #expect(got.tokens == expected.tokens)
        #expect(got.finishReason == .stop)
        for limit in [1, 2, 5, 6, 7] {
            let capped = try Self.medusa(model, source: oracle, tree: CandidateTree.preset("chain", headCount: 4)!, maxTokens: limit)
            #expect(capped.tokens == Array(reference.tokens.prefix(limit)), "max tokens \(limit)")
            #expect(capped.finishReason == .length)
        }
    }

    @Test("lossless speculative sampling draws the first tokens with plain sampling's distribution")
    func samplingMatchesPlainDistribution() throws {
        // The synthetic model's logits are far apart; at temperature 20 its top 4 tokens all matter
        // (the likeliest 3-token sequence has p = 0.12).
        let model = try Self.load(type: .f32, seed: 11)
        let parameters = SamplingParameters(temperature: 20, topK: 4, topP: 1)
        let length = 3
        // The exact distribution of the first `length` tokens under plain sampling, by enumeration.
        let generator = Generator(model: model)
        var scratch = Sampler(parameters: parameters, seed: 0)
        var exact: [[Int32]: Double] = [[]: 1]
        for _ in 0..<length {
            var next: [[Int32]: Double] = [:]
            for (prefix, p) in exact {
                model.cache.reset()
                try generator.prefill(Self.prompt + prefix)
                for q in generator.lastLogits.withUnsafeBufferPointer({ scratch.distribution($0) }) {
                    next[prefix + [q.token], default: 0] += p * Double(q.probability)
                }
            }
            exact = next
        }
        #expect(exact.count == 64)

        let weights = RandomHeads.make(heads: 3, hidden: model.config.hiddenSize, scale: 0.3, seed: 3)
        let heads = try MedusaHeads(weights: weights, model: model)
        let tree = try CandidateTree(choices: [[0], [1], [2], [0, 0], [1, 0], [0, 1], [0, 0, 0]])
        let medusa = try MedusaGenerator(model: model, source: heads, tree: tree, rule: .sample)
        let runs = 3000
        var counts: [[Int32]: Int] = [:]
        var plainCounts: [[Int32]: Int] = [:]
        var gained = 0, steps = 0
        for seed in 0..<UInt64(runs) {
            var sampler = Sampler(parameters: parameters, seed: seed)
            let r = try medusa.generate(prompt: Self.prompt, maxTokens: length, sampler: &sampler, stopAt: { _ in false })
            counts[r.tokens, default: 0] += 1
            gained += r.medusa!.tokensGained
            steps += r.medusa!.steps
            var plainSampler = Sampler(parameters: parameters, seed: seed)
            let p = try generator.generate(prompt: Self.prompt, maxTokens: length, sampler: &plainSampler, stopAt: { _ in false })
            plainCounts[p.tokens, default: 0] += 1
        }
        // Candidates were accepted in some steps and rejected in others, so both paths ran.
        #expect(gained > steps && gained < steps * (tree.depth + 1), "gained \(gained) tokens in \(steps) steps")

        // E[TV(empirical, exact)] <= 1/2 sum sqrt(p(1-p)/N) <= 1/2 sqrt(K/N); TV moves by at most 1/N
        // per sample, so (McDiarmid) it exceeds its mean by t with probability <= exp(-2 N t^2).
        let k = Double(exact.count), n = Double(runs)
        let bound = 0.5 * (k / n).squareRoot() + (log(1e6) / (2 * n)).squareRoot()
        func distance(_ counts: [[Int32]: Int]) -> Double {
            let keys = Set(exact.keys).union(counts.keys)
            return 0.5 * keys.reduce(0) { $0 + abs(Double(counts[$1] ?? 0) / n - (exact[$1] ?? 0)) }
        }
        let medusaDistance = distance(counts), plainDistance = distance(plainCounts)
        #expect(plainDistance < bound, "plain sampling: TV \(plainDistance), bound \(bound)")
        #expect(medusaDistance < bound, "Medusa sampling: TV \(medusaDistance), bound \(bound)")
        print("sampling test: TV plain \(plainDistance), Medusa \(medusaDistance), bound \(bound); \(gained) tokens in \(steps) steps")
    }
}
