import Foundation
import Medusa
import TestSupport
import Testing
import Worker

/// `generate --heads` under `mpirun -np P`: rank 0 builds and verifies the trees, every rank runs
/// the one forward per step, and greedy output equals plain greedy decoding's on any P and tree.
@Suite(.serialized, .timeLimit(.minutes(10))) struct MedusaParallelTests {
    /// Random heads in this project's format for a model of `hidden` features.
    static func headsFile(hidden: Int, vocabulary: Int, heads: Int = 4, ownLMHead: Bool = false) throws -> String {
        let v = RandomHeads.values(heads: heads, layers: 1, hidden: hidden, vocabulary: ownLMHead ? vocabulary : nil)
        let path = try makeTemporaryDirectory() + "/heads.safetensors"
        try MedusaHeadWeights.write(blocks: v.blocks, lmHeads: v.lmHeads, hiddenSize: hidden, vocabularySize: vocabulary,
                                    baseModel: "random", to: path)
        return path
    }

    /// A wide two-level tree as a medusa_choices file.
    static func wideTreeFile() throws -> String {
        let path = try makeTemporaryDirectory() + "/wide.json"
        let choices = (0..<10).map { [$0] } + (0..<5).map { [$0, 0] } + [[0, 1], [0, 2], [0, 0, 0]]
        try JSONSerialization.data(withJSONObject: choices).write(to: URL(fileURLWithPath: path))
        return path
    }

    /// Plain greedy tokens on one process, then Medusa on P = 1, 2, 3 with each tree.
    static func checkIdentical(model: String, heads: String, prompt: [String], maxTokens: Int) throws -> [[String: Any]] {
        let common = ["generate", "--model", model] + prompt + ["--max-tokens", "\(maxTokens)", "--ignore-eos",
                                                                 "--threads", "1", "--json"]
        let plain = try TensorParallelTests.run(np: 1, common)
        let expected = try #require(plain["token_ids"] as? [Int])
        #expect(expected.count == maxTokens)
        var reports: [[String: Any]] = []
        for (tree, depth) in [("chain", 4), (try wideTreeFile(), 3), ("mc_sim_7b_63", 4)] {
            for np in 1...3 {
                let r = try TensorParallelTests.run(np: np, common + ["--heads", heads, "--tree", tree])
                #expect(r["token_ids"] as? [Int] == expected, "np=\(np) tree \(tree)")
                let steps = r["steps"] as? Int ?? 0
                #expect(steps > 0 && steps < maxTokens, "np=\(np) tree \(tree): \(steps) steps")
                #expect((r["accepted_histogram"] as? [Int])?.reduce(0, +) == steps)
                #expect((r["per_head_acceptance"] as? [Double])?.count == depth, "one entry per head the tree uses")
                reports.append(r)
            }
        }
        return reports
    }

    @Test("greedy Medusa equals plain greedy on a synthetic model, P = 1, 2, 3, three trees")
    func syntheticModel() throws {
        let config = TensorParallelTests.config
        let model = try TensorParallelTests.model(.q4_1)
        for ownLMHead in [false, true] {
            let heads = try Self.headsFile(hidden: config.hiddenSize, vocabulary: config.vocabularySize, ownLMHead: ownLMHead)
            _ = try Self.checkIdentical(model: model, heads: heads, prompt: ["--prompt", "Hello ranks"], maxTokens: 32)
        }
    }

    @Test("greedy Medusa with random heads equals plain greedy on SmolLM2, P = 1, 2, 3, three trees")
    func smolLM2() throws {
        guard let model = try TestData.model() else { return }
        let heads = try Self.headsFile(hidden: 576, vocabulary: 49152)
        let reports = try Self.checkIdentical(model: model, heads: heads,
                                              prompt: ["--chat", "What is the capital of France?"], maxTokens: 24)
        #expect((reports[0]["text"] as? String)?.contains("Paris") == true)
    }

    @Test("bad heads, trees and acceptance options are one clear line")
    func errors() throws {
        let config = TensorParallelTests.config
        let model = try TensorParallelTests.model(.q8_0)
        let dir = try makeTemporaryDirectory()
        let wrongHidden = try Self.headsFile(hidden: 64, vocabulary: config.vocabularySize)
        let tooFew = try Self.headsFile(hidden: config.hiddenSize, vocabulary: config.vocabularySize, heads: 2)
        let heads = try Self.headsFile(hidden: config.hiddenSize, vocabulary: config.vocabularySize)
        let badTree = dir + "/bad.json"
        try Data("[[0], [1, 1]]".utf8).write(to: URL(fileURLWithPath: badTree))
        let base = ["generate", "--model", model, "--prompt", "x", "--max-tokens", "4"]
        let cases: [([String], String)] = [
            (base + ["--heads", wrongHidden], "hidden size"),
            (base + ["--heads", dir + "/absent"], "absent"),
            (base + ["--heads", tooFew, "--tree", "mc_sim_7b_63"], ""),
            (base + ["--heads", tooFew, "--tree", "chain"], ""),
            (base + ["--heads", heads, "--tree", badTree], "needs its prefix [1]"),
            (base + ["--heads", heads, "--tree", "bushy"], "unknown tree 'bushy'"),
            (base + ["--tree", "chain"], "--tree needs --heads"),
            (base + ["--heads", heads, "--accept", "maybe"], "--accept must be greedy, typical or sample"),
            (base + ["--heads", heads, "--accept", "sample"], "needs --temperature above 0"),
            (base + ["--heads", heads, "--accept", "greedy", "--temperature", "0.7"], "--accept greedy keeps only argmax"),
        ]
        for (arguments, expected) in cases {
            let r = try BinaryRunner.run(arguments)
            if expected.isEmpty {
                // Presets adapt to the number of heads: these run.
                #expect(r.status == 0, "\(arguments): \(r.stderr)")
                continue
            }
            #expect(r.status != 0, "\(arguments) exited 0")
            #expect(r.stderr.contains(expected), "\(arguments): stderr was \(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count <= 3, "\(arguments): \(r.stderr)")
        }
        let tooDeep = dir + "/deep.json"
        try Data("[[0], [0, 0], [0, 0, 0]]".utf8).write(to: URL(fileURLWithPath: tooDeep))
        let r = try MPIRunner.run(np: 2, arguments: base + ["--heads", tooFew, "--tree", tooDeep], timeout: 60)
        #expect(r.status != 0)
        #expect(r.stderr.contains("error: rank 0: tree path [0, 0, 0] is 3 deep but there are only 2 heads"), "\(r.stderr)")
    }

    @Test("typical acceptance and lossless sampling run across ranks and report their statistics")
    func otherAcceptanceRules() throws {
        let config = TensorParallelTests.config
        let model = try TensorParallelTests.model(.q8_0)
        let heads = try Self.headsFile(hidden: config.hiddenSize, vocabulary: config.vocabularySize)
        let base = ["generate", "--model", model, "--prompt", "Hello", "--max-tokens", "20", "--ignore-eos",
                    "--threads", "1", "--json", "--heads", heads, "--tree", "mc_sim_7b_63"]
        for extra in [["--accept", "typical"], ["--accept", "typical", "--temperature", "0.8"], ["--temperature", "0.8", "--seed", "3"]] {
            let one = try TensorParallelTests.run(np: 1, base + extra)
            let two = try TensorParallelTests.run(np: 2, base + extra)
            #expect((one["token_ids"] as? [Int])?.count == 20, "\(extra)")
            // The same seed and the same arithmetic on every P: the same tokens.
            #expect(two["token_ids"] as? [Int] == one["token_ids"] as? [Int], "\(extra)")
            #expect((one["mean_accepted_tokens"] as? Double ?? 0) >= 1)
        }
    }
}
