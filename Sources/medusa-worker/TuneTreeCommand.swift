import ArgumentParser
import Coordinator
import Foundation
import Medusa
import Worker

struct TuneTreeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tune-tree",
        abstract: "Choose the Medusa tree that maximises expected tokens per second on this machine, rank count and threads.",
        discussion: """
            1. Per-head rank accuracies (as eval-heads, ranks 0-9) on held-out prompts. 2. The verify step's forward \
            time T(n) for n = 1 ... --max-nodes, plus the heads' time and one LM-head row, measured here. 3. For each \
            n, the greedy sparse tree (add the node with the largest product of accuracies along its path) and its \
            expected tokens per step E(n) = 1 + sum of those products; the chosen n maximises E(n) / step time, where a \
            step costs T(n) + heads + E(n) LM-head rows. 4. The chosen tree is run on the prompts to report the \
            measured tokens per step next to the expected. The tree is written in medusa_choices format (--out).
            """)

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Medusa heads: a folder or a safetensors file.")
    var heads: String

    @Option(help: "JSON Lines prompts for the accuracies (default: MT-Bench first turns).")
    var prompts: String?

    @Option(help: "Use at most this many prompts.")
    var limit: Int = 20

    @Option(help: "Longest answer per prompt, in tokens.")
    var maxTokens: Int = 128

    @Option(help: "Largest tree considered, counting the root.")
    var maxNodes: Int = 64

    @Option(help: "Repetitions of each timing (median).")
    var runs: Int = 3

    @Option(help: "Write the chosen tree here (JSON list of paths).")
    var out: String?

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    func validate() throws {
        guard limit >= 1 else { throw ValidationError("--limit must be at least 1, got \(limit)") }
        guard maxTokens >= 2 else { throw ValidationError("--max-tokens must be at least 2, got \(maxTokens)") }
        guard maxNodes >= 1 && maxNodes <= CandidateTree.maxNodes else {
            throw ValidationError("--max-nodes must be between 1 and \(CandidateTree.maxNodes), got \(maxNodes)")
        }
        guard runs >= 1 else { throw ValidationError("--runs must be at least 1, got \(runs)") }
    }

    func run() throws {
        let group = RankGroup.join()
        try group.run {
            let loaded = try group.loadModel(modelOptions)
            defer { _ = try? group.finish(loaded.model) }
            let model = loaded.model
            let source = try MedusaHeads(weights: MedusaHeadWeights(path: heads), model: model)
            let texts = try BenchPrompts.load(path: prompts, limit: limit)
            let tokenizer = loaded.tokenizer
            let promptTokens = texts.map(loaded.userMessageTokens).filter { $0.count + maxTokens + maxNodes < model.contextLength }
            guard !promptTokens.isEmpty else { throw CommandError("no prompt fits the context with --max-tokens and --max-nodes (raise --ctx)") }

            // 1. Accuracies.
            let generator = Generator(model: model)
            var accuracy = HeadAccuracy(heads: source.depth)
            for tokens in promptTokens {
                try accuracy.score(prompt: tokens, heads: source, generator: generator, maxTokens: maxTokens,
                                   stopAt: { tokenizer.isEndOfGeneration($0) })
            }

            // 2. Costs: the forward's T(n), the heads, one LM-head row.
            guard maxNodes <= model.maxStepTokens else { throw CommandError("--max-nodes exceeds the largest step (\(model.maxStepTokens))") }
            let context = Array(promptTokens[0].prefix(max(1, model.contextLength - maxNodes - 1)))
            let curve = try Benchmark.verifyCurve(model: model, context: context, maxNodes: maxNodes, runs: runs, lmHead: false)
            let (headsSeconds, rowSeconds) = try Self.fixedCosts(model: model, source: source, runs: max(runs, 5))
            func depth(_ choices: [[Int]]) -> Int { choices.map(\.count).max() ?? 0 }

            // 3. Trees and the choice.
            let trees = TreeSearch.greedy(accuracy: accuracy.rankAccuracy, maxNodes: maxNodes)
            let rows = trees.indices.filter { $0 < curve.count }.map { i -> Row in
                let step = curve[i].seconds + headsSeconds[depth(trees[i].choices)] + trees[i].expectedTokens * rowSeconds
                return Row(n: i + 1, expected_tokens: trees[i].expectedTokens, forward_ms: curve[i].seconds * 1e3,
                           step_ms: step * 1e3, expected_tokens_per_second: trees[i].expectedTokens / step)
            }
            // The best tree with at least one candidate; plain decoding (n = 1) is the yardstick.
            let plain = rows[0]
            guard let best = rows.dropFirst().max(by: { $0.expected_tokens_per_second < $1.expected_tokens_per_second }) else {
                throw CommandError("the heads never guess right on these prompts: no tree has any expected gain")
            }
            let chosen = try CandidateTree(choices: trees[best.n - 1].choices)
            if let out {
                try JSONSerialization.data(withJSONObject: chosen.choices).write(to: URL(fileURLWithPath: out))
            }

            // 4. Measured acceptance with the chosen tree.
            let medusa = try MedusaGenerator(model: model, source: source, tree: chosen, rule: .greedy)
            var steps = 0, gained = 0
            for tokens in promptTokens {
                var sampler = Sampler(parameters: SamplingParameters(temperature: 0), seed: 0)
                let r = try medusa.generate(prompt: tokens, maxTokens: maxTokens, sampler: &sampler,
                                            stopAt: { tokenizer.isEndOfGeneration($0) })
                steps += r.medusa?.steps ?? 0
                gained += r.medusa?.tokensGained ?? 0
            }
            let measured = steps > 0 ? Double(gained) / Double(steps) : 0
            let report = Report(
                threads: modelOptions.threadCount, ranks: model.communicator.size, answers: accuracy.answers,
                top1_accuracy: accuracy.top1Accuracy, top5_accuracy: accuracy.top5Accuracy,
                heads_ms: headsSeconds.map { $0 * 1e3 }, lm_head_row_ms: rowSeconds * 1e3,
                plain_tokens_per_second: plain.expected_tokens_per_second, chosen_nodes: best.n,
                expected_tokens_per_step: best.expected_tokens, measured_tokens_per_step: measured,
                choices: chosen.choices, curve: rows)
            if json {
                try emitJSON(report)
                return
            }
            emit("\(accuracy.answers) answers; top-1 per head: " + accuracy.top1Accuracy.map { String(format: "%.3f", $0) }.joined(separator: " ")
                + "; top-5: " + accuracy.top5Accuracy.map { String(format: "%.3f", $0) }.joined(separator: " ") + "\n")
            emit("heads per step by tree depth: " + headsSeconds.dropFirst().map { String(format: "%.2f", $0 * 1e3) }.joined(separator: ", ")
                + String(format: " ms; one LM-head row %.2f ms; %d threads, %d ranks\n", rowSeconds * 1e3, modelOptions.threadCount,
                         model.communicator.size))
            emit("    n  E(tokens)  forward ms  step ms  E/step (tok/s)\n")
            for r in rows where r.n <= 16 || r.n % 8 == 0 || r.n == best.n {
                emit(String(format: "%5d %10.3f %11.2f %8.2f %10.1f%@\n", r.n, r.expected_tokens, r.forward_ms, r.step_ms,
                            r.expected_tokens_per_second, r.n == best.n ? "  <- chosen" : ""))
            }
            emit(String(format: "chosen: %d nodes, expected %.2f tokens per step, measured %.2f\n", best.n, best.expected_tokens, measured))
            if best.expected_tokens_per_second <= plain.expected_tokens_per_second {
                emit(String(format: "no tree beats plain decoding here (%.1f vs %.1f tok/s expected): better heads or cheaper steps are needed\n",
                            best.expected_tokens_per_second, plain.expected_tokens_per_second))
            }
            emit("tree: \(chosen.choices)\n")
        }
    }

    struct Row: Encodable {
        var n: Int
        var expected_tokens: Double
        var forward_ms: Double
        var step_ms: Double
        var expected_tokens_per_second: Double
    }

    struct Report: Encodable {
        var threads: Int, ranks: Int, answers: Int
        var top1_accuracy: [Double], top5_accuracy: [Double]
        /// heads_ms[d]: the heads' time for a tree of depth d (only d heads run).
        var heads_ms: [Double], lm_head_row_ms: Double
        /// Plain decoding's rate under the same cost model (a step of one token, no heads).
        var plain_tokens_per_second: Double
        var chosen_nodes: Int, expected_tokens_per_step: Double, measured_tokens_per_step: Double
        var choices: [[Int]]
        var curve: [Row]
    }

    /// Median seconds of one heads proposal for trees of each depth 0 ... K (a tree of depth d runs
    /// d heads, top-10 each), and of one LM-head row.
    static func fixedCosts(model: LlamaModel, source: MedusaHeads, runs: Int) throws -> (heads: [Double], row: Double) {
        let h = model.config.hiddenSize
        let hidden = (0..<h).map { Float($0 % 7) * 0.1 - 0.3 }
        var logits = [Float](repeating: 0, count: model.config.vocabularySize)
        func time(_ body: () -> Void) -> Double {
            let start = DispatchTime.now()
            body()
            return Double(DispatchTime.now().uptimeNanoseconds - start.uptimeNanoseconds) / 1e9
        }
        let heads = [0.0] + (1...source.depth).map { d in
            Benchmark.median((0..<runs).map { _ in
                time {
                    _ = hidden.withUnsafeBufferPointer {
                        source.propose(hidden: $0.baseAddress!, sequence: [], topK: [Int](repeating: 10, count: d))
                    }
                }
            })
        }
        let row = Benchmark.median((0..<runs).map { _ in
            time {
                hidden.withUnsafeBufferPointer { x in
                    logits.withUnsafeMutableBufferPointer { model.logits(hidden: x.baseAddress!, rows: 1, into: $0.baseAddress!) }
                }
            }
        })
        return (heads, row)
    }
}
