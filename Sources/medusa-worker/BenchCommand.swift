import ArgumentParser
import Coordinator
import Foundation
import Worker

struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure decoding speed on a set of chat prompts, or the verify-step cost curve T(n).",
        discussion: """
            Default mode: for each prompt (the first turns of MT-Bench by default, in the model's chat template if it has one), greedy plain decoding, \
            --runs times; prints the median decode and prefill tokens/s per prompt and overall, and where \
            a decode step's time goes (matmul, attention, allreduce, other, lm_head, sampling_other). With --heads, \
            each run of a prompt decodes it plainly and then with Medusa (greedy), and reports Medusa's tokens/s, its \
            ratio to plain decoding, tokens per verify step, whether the outputs are identical, and Medusa's time split \
            (medusa_heads: the heads and their LM head; lm_head: the verifier's rows).

            --verify-curve: T(n) for n = 1 ... --max-nodes, one verify step of n tokens (forward with a \
            causal mask over the step plus the LM head on all n rows) after --context committed tokens; \
            the input to choosing a Medusa tree. On a group, each step's time in allreduce, plan broadcast \
            and logit gather and rank 0's bytes are reported too.

            --allreduce-sizes: no model; the time of one allreduce of each number of floats across the \
            group (what the network and MPI cost per call, without the forward between calls), median \
            of --runs x 100 calls. A decode step makes two allreduces of hidden-size floats per layer.
            """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup(title: "Medusa (decoding mode: each prompt also runs with Medusa, greedy, side by side)") var medusaOptions: MedusaOptions

    @Option(help: "JSON Lines file of prompts: objects with a \"turns\" array (MT-Bench's format, first turn used) or a \"prompt\" string (default: ../shared/data/mt_bench_question.jsonl, searched upwards from the working directory).")
    var prompts: String?

    @Option(help: "Use at most this many prompts.")
    var limit: Int = 8

    @Option(help: "Maximum tokens to generate per prompt.")
    var maxTokens: Int = 128

    @Option(help: "Repetitions of each measurement (the median is reported).")
    var runs: Int = 3

    @Flag(help: "Keep generating past end-of-generation tokens (every run then decodes --max-tokens tokens).")
    var ignoreEos = false

    @Flag(help: "Measure the verify-step curve T(n) instead of decoding prompts.")
    var verifyCurve = false

    @Option(help: "With --verify-curve: the largest step measured.")
    var maxNodes: Int = 64

    @Option(help: "With --verify-curve: committed tokens in the cache before each step.")
    var context: Int = 128

    @Flag(help: "Time each distinct weight matrix product (first layer, LM head) on its own for n = 1, 2, 4, 8, 16.")
    var kernels = false

    @Option(help: "Comma-separated float counts: time one allreduce of each across the group (no model is loaded).")
    var allreduceSizes: String?

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    func validate() throws {
        guard limit >= 1 else { throw ValidationError("--limit must be at least 1, got \(limit)") }
        guard maxTokens >= 1 else { throw ValidationError("--max-tokens must be at least 1, got \(maxTokens)") }
        guard runs >= 1 else { throw ValidationError("--runs must be at least 1, got \(runs)") }
        guard maxNodes >= 1 && maxNodes <= 512 else { throw ValidationError("--max-nodes must be between 1 and 512, got \(maxNodes)") }
        guard context >= 1 else { throw ValidationError("--context must be at least 1, got \(context)") }
    }

    func run() throws {
        let group = RankGroup.join()
        if let allreduceSizes {
            try group.run { try runAllreduce(group, sizes: allreduceSizes) }
            return
        }
        try group.run {
            let loaded = try group.loadModel(modelOptions)
            defer { _ = try? group.finish(loaded.model) }
            if kernels {
                try runKernels(loaded)
            } else if verifyCurve {
                try runVerifyCurve(loaded)
            } else {
                try runPrompts(loaded)
            }
        }
    }

    private func runAllreduce(_ group: RankGroup, sizes text: String) throws {
        let sizes = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !sizes.isEmpty, sizes.allSatisfy({ ($0 ?? 0) > 0 }) else {
            throw CommandError("--allreduce-sizes must be positive float counts separated by commas, got '\(text)'")
        }
        let points = try Benchmark.allreduce(group.communicator, sizes: sizes.map { $0! }, calls: 100 * runs)
        guard group.isCoordinator else { return }
        if json {
            try emitJSON(points)
            return
        }
        emit("allreduce across \(group.communicator.size) ranks, median of \(100 * runs) calls\n")
        emit("   floats      bytes  us/call\n")
        for p in points {
            emit(String(format: "%9d %10d %8.1f\n", p.floats, p.floats * 4, p.seconds * 1e6))
        }
    }

    private func runKernels(_ loaded: LoadedModel) throws {
        let points = Benchmark.kernels(model: loaded.model, ns: [1, 2, 4, 8, 16], runs: max(runs, 20))
        if json {
            try emitJSON(points)
            return
        }
        emit("matmul inputs \(loaded.model.matmulInputs.described), \(modelOptions.threadCount) threads, median of \(max(runs, 20))\n")
        emit("matrix        type  rows x cols       n     us/call   GB/s  us/row\n")
        for p in points {
            emit(String(format: "%-12@ %5@ %6d x %-6d %3d %10.1f %6.2f %7.1f\n",
                        p.name, p.type, p.rows, p.columns, p.n, p.seconds * 1e6, p.bytesPerSecond / 1e9,
                        p.seconds * 1e6 / Double(p.n)))
        }
    }

    private func runVerifyCurve(_ loaded: LoadedModel) throws {
        let model = loaded.model
        guard context + maxNodes <= model.contextLength else {
            throw CommandError("--context \(context) + --max-nodes \(maxNodes) exceeds the KV cache (\(model.contextLength) tokens; raise --ctx)")
        }
        guard maxNodes <= model.maxStepTokens else {
            throw CommandError("--max-nodes \(maxNodes) exceeds the largest step (\(model.maxStepTokens) tokens)")
        }
        // A fixed English context, repeated to the requested length.
        let text = String(repeating: "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun. ", count: 1 + context / 16)
        let tokens = Array(loaded.tokenizer.encode(text, addSpecial: false, parseSpecial: false).prefix(context))
        let curve = try Benchmark.verifyCurve(model: model, context: tokens, maxNodes: maxNodes, runs: runs)
        if json {
            struct Report: Encodable {
                var threads: Int, ranks: Int, context: Int, runs: Int, matmul_inputs: String, kernels: String?, cache_type: String
                var curve: [Point]
                struct Point: Encodable {
                    var n: Int, ms: Double, ratio: Double
                    // On a group: rank 0's collectives per step (mean over the runs).
                    var allreduce_calls: Int?, allreduce_ms: Double?, broadcast_ms: Double?, gather_ms: Double?
                    var sent_bytes: Int?, received_bytes: Int?
                }
            }
            let group = loaded.model.communicator.size > 1
            try emitJSON(Report(
                threads: modelOptions.threadCount, ranks: loaded.model.communicator.size, context: tokens.count, runs: runs,
                matmul_inputs: model.matmulInputs.rawValue, kernels: model.matmulInputs.kernels,
                cache_type: model.kvCacheType.rawValue, curve: curve.map { p in
                    let t = p.traffic
                    return .init(n: p.nodes, ms: p.seconds * 1e3, ratio: p.ratio,
                                 allreduce_calls: group ? t.allreduce.calls : nil, allreduce_ms: group ? t.allreduce.seconds * 1e3 : nil,
                                 broadcast_ms: group ? t.broadcast.seconds * 1e3 : nil, gather_ms: group ? t.gather.seconds * 1e3 : nil,
                                 sent_bytes: group ? t.total.sent : nil, received_bytes: group ? t.total.received : nil)
                }))
        } else {
            emit("verify step T(n): \(tokens.count) committed tokens, \(modelOptions.threadCount) threads, matmul inputs \(model.matmulInputs.described), \(model.kvCacheType) KV cache, median of \(runs)\n")
            if model.communicator.size > 1 {
                emit("    n      ms  T(n)/T(1)  allreduce ms  bcast ms  gather ms  rank 0 sent KB  received KB\n")
                for p in curve {
                    let t = p.traffic
                    emit(String(format: "%5d %7.2f %10.2f %13.2f %9.2f %10.2f %15.1f %12.1f\n", p.nodes, p.seconds * 1e3, p.ratio,
                                t.allreduce.seconds * 1e3, t.broadcast.seconds * 1e3, t.gather.seconds * 1e3,
                                Double(t.total.sent) / 1e3, Double(t.total.received) / 1e3))
                }
            } else {
                emit("    n      ms  T(n)/T(1)\n")
                for p in curve {
                    emit(String(format: "%5d %7.2f %10.2f\n", p.nodes, p.seconds * 1e3, p.ratio))
                }
            }
        }
    }

    private func runPrompts(_ loaded: LoadedModel) throws {
        let texts = try BenchPrompts.load(path: prompts, limit: limit)
        let generator = Generator(model: loaded.model)
        let medusa = try medusaOptions.generator(model: loaded.model, temperature: 0)
        let tokenizer = loaded.tokenizer
        let ignore = ignoreEos
        let stop = { (token: Int32) in ignore ? false : tokenizer.isEndOfGeneration(token) }
        struct PromptReport: Encodable {
            var prompt_tokens: Int
            var generated_tokens: Int
            var decode_tokens_per_second: Double
            var prefill_tokens_per_second: Double
            // With --heads.
            var medusa_decode_tokens_per_second: Double?
            var speedup: Double?
            var mean_accepted_tokens: Double?
            var identical_output: Bool?
        }
        var reports: [PromptReport] = []
        var plainSplit = SplitSum(), medusaSplit = SplitSum()
        var plainNetwork = Benchmark.NetworkUse(), medusaNetwork = Benchmark.NetworkUse()
        var steps = 0, gained = 0
        for (index, text) in texts.enumerated() {
            let tokens = loaded.userMessageTokens(text)
            var decode: [Double] = [], prefill: [Double] = [], medusaDecode: [Double] = []
            var generated = 0
            var identical = true
            var promptSteps = 0, promptGained = 0
            for _ in 0..<runs {
                // Plain and Medusa alternate, so a slow moment of the machine hits both.
                let plain = try Benchmark.plainDecodeTokens(generator: generator, prompt: tokens, maxTokens: maxTokens, stopAt: stop)
                decode.append(plain.run.decodeTokensPerSecond)
                prefill.append(plain.run.prefillTokensPerSecond)
                generated = plain.run.generatedTokens
                plainSplit.add(plain.run)
                plainNetwork = plainNetwork + plain.run.network
                if let medusa {
                    let m = try Benchmark.medusaDecode(generator: medusa, prompt: tokens, maxTokens: maxTokens, stopAt: stop)
                    medusaDecode.append(m.run.decodeTokensPerSecond)
                    medusaSplit.add(m.run)
                    medusaNetwork = medusaNetwork + m.run.network
                    identical = identical && m.tokens == plain.tokens
                    promptSteps += m.stats.steps
                    promptGained += m.stats.tokensGained
                }
            }
            steps += promptSteps
            gained += promptGained
            var report = PromptReport(
                prompt_tokens: tokens.count, generated_tokens: generated,
                decode_tokens_per_second: Benchmark.median(decode), prefill_tokens_per_second: Benchmark.median(prefill))
            if medusa != nil {
                report.medusa_decode_tokens_per_second = Benchmark.median(medusaDecode)
                report.speedup = report.medusa_decode_tokens_per_second! / report.decode_tokens_per_second
                report.mean_accepted_tokens = promptSteps > 0 ? Double(promptGained) / Double(promptSteps) : 0
                report.identical_output = identical
            }
            reports.append(report)
            if !json {
                var line = String(
                    format: "[%d/%d] %d prompt tokens, %d generated: decode %.1f tok/s, prefill %.1f tok/s",
                    index + 1, texts.count, tokens.count, generated, report.decode_tokens_per_second,
                    report.prefill_tokens_per_second)
                if let m = report.medusa_decode_tokens_per_second {
                    line += String(format: "; Medusa %.1f tok/s (%.2fx), %.2f tokens/step%@", m, report.speedup!,
                                   report.mean_accepted_tokens!, identical ? "" : ", OUTPUT DIFFERS")
                }
                progress(line + "\n")
            }
        }
        let plainRate = Benchmark.median(reports.map(\.decode_tokens_per_second))
        let prefillRate = Benchmark.median(reports.map(\.prefill_tokens_per_second))
        let medusaRate = medusa == nil ? nil : Benchmark.median(reports.compactMap(\.medusa_decode_tokens_per_second))
        let meanAccepted = steps > 0 ? Double(gained) / Double(steps) : nil
        let allIdentical = medusa == nil ? nil : reports.allSatisfy { $0.identical_output == true }
        if json {
            struct Report: Encodable {
                var threads: Int, ranks: Int, runs: Int, max_tokens: Int, matmul_inputs: String, kernels: String?, cache_type: String
                var plain_decode_tokens_per_second: Double
                var prefill_tokens_per_second: Double
                var decode_time_share: [String: Double]
                var medusa_decode_tokens_per_second: Double?
                var speedup: Double?
                var mean_accepted_tokens: Double?
                var identical_output: Bool?
                var tree_nodes: Int?
                var medusa_time_share: [String: Double]?
                var decode_network: NetworkSummary?
                var medusa_network: NetworkSummary?
                var prompts: [PromptReport]
            }
            let ranks = loaded.model.communicator.size
            try emitJSON(Report(
                threads: modelOptions.threadCount, ranks: loaded.model.communicator.size, runs: runs, max_tokens: maxTokens,
                matmul_inputs: loaded.model.matmulInputs.rawValue, kernels: loaded.model.matmulInputs.kernels,
                cache_type: loaded.model.kvCacheType.rawValue, plain_decode_tokens_per_second: plainRate, prefill_tokens_per_second: prefillRate,
                decode_time_share: plainSplit.shares, medusa_decode_tokens_per_second: medusaRate,
                speedup: medusaRate.map { $0 / plainRate }, mean_accepted_tokens: meanAccepted,
                identical_output: allIdentical, tree_nodes: medusa?.tree.count,
                medusa_time_share: medusa == nil ? nil : medusaSplit.shares,
                decode_network: ranks > 1 ? NetworkSummary(plainNetwork) : nil,
                medusa_network: ranks > 1 && medusa != nil ? NetworkSummary(medusaNetwork) : nil, prompts: reports))
        } else {
            emit("\(texts.count) prompts, \(runs) runs each, \(modelOptions.threadCount) threads, \(loaded.model.communicator.size) ranks, matmul inputs \(loaded.model.matmulInputs.described), \(loaded.model.kvCacheType) KV cache\n")
            emit(String(format: "plain decoding: %.1f tok/s (median over prompts of each prompt's median)\n", plainRate))
            emit(String(format: "prefill:        %.1f tok/s\n", prefillRate))
            emit("decode step time: \(plainSplit.described)\n")
            if loaded.model.communicator.size > 1 { emit("decode network: \(NetworkSummary(plainNetwork).described)\n") }
            if let medusaRate, let medusa {
                emit(String(format: "Medusa (%d-node tree): %.1f tok/s, %.2fx plain, %.2f tokens per verify step, output %@\n",
                            medusa.tree.count, medusaRate, medusaRate / plainRate, meanAccepted ?? 0,
                            allIdentical == true ? "identical" : "DIFFERS"))
                emit("Medusa decode time: \(medusaSplit.described)\n")
                if loaded.model.communicator.size > 1 { emit("Medusa network: \(NetworkSummary(medusaNetwork).described)\n") }
            }
        }
    }
}

/// Decode time by part, summed over runs.
private struct SplitSum {
    var seconds: [String: Double] = [:]
    var total = 0.0

    mutating func add(_ run: Benchmark.DecodeRun) {
        for (part, s) in run.decodeSplit { seconds[part, default: 0] += s }
        total += run.decodeSeconds
    }

    var shares: [String: Double] { seconds.mapValues { total > 0 ? $0 / total : 0 } }

    var described: String {
        shares.sorted { $0.value > $1.value }.map { String(format: "%@ %.1f%%", $0.key, 100 * $0.value) }.joined(separator: ", ")
    }
}

/// Rank 0's collectives in a decode phase, per forward step and per token.
private struct NetworkSummary: Encodable {
    var steps: Int
    var tokens: Int
    var allreduce_calls_per_step: Double
    var allreduce_ms_per_step: Double
    /// The plan broadcasts (one per forward, one per LM-head call on a group).
    var broadcast_calls_per_step: Double
    var broadcast_ms_per_step: Double
    /// The vocabulary-parallel LM head's gathers of logit slices.
    var gather_calls_per_step: Double
    var gather_ms_per_step: Double
    /// Payload bytes per generated token that rank 0 sent and received, by kind of collective (see
    /// `CollectiveTraffic`: the data that has to move, not what the algorithm puts on the wire).
    var sent_bytes_per_token: [String: Double]
    var received_bytes_per_token: [String: Double]
    /// Bytes that left rank 0's network namespace (all interfaces but loopback) per token: on
    /// hosts of their own (or emulated hosts), the real traffic to the other ranks with headers.
    var interface_bytes_sent_per_token: Double?

    init(_ use: Benchmark.NetworkUse) {
        let s = Double(max(use.steps, 1)), t = Double(max(use.tokens, 1)), tr = use.traffic
        steps = use.steps
        tokens = use.tokens
        allreduce_calls_per_step = Double(tr.allreduce.calls) / s
        allreduce_ms_per_step = tr.allreduce.seconds * 1e3 / s
        broadcast_calls_per_step = Double(tr.broadcast.calls) / s
        broadcast_ms_per_step = tr.broadcast.seconds * 1e3 / s
        gather_calls_per_step = Double(tr.gather.calls) / s
        gather_ms_per_step = tr.gather.seconds * 1e3 / s
        let kinds = [("allreduce", tr.allreduce), ("broadcast", tr.broadcast), ("gather", tr.gather)]
        sent_bytes_per_token = Dictionary(uniqueKeysWithValues: kinds.map { ($0.0, Double($0.1.sent) / t) })
        received_bytes_per_token = Dictionary(uniqueKeysWithValues: kinds.map { ($0.0, Double($0.1.received) / t) })
        interface_bytes_sent_per_token = use.interfaceBytesSent.map { Double($0) / t }
    }

    var described: String {
        func kb(_ d: [String: Double], _ k: String) -> Double { (d[k] ?? 0) / 1e3 }
        var text = String(format: "per step %.0f allreduces %.2f ms, %.1f plan broadcasts %.2f ms, %.1f logit gathers %.2f ms; rank 0 per token sends %.1f KB (allreduce %.1f, broadcast %.1f), receives %.1f KB (allreduce %.1f, gather %.1f)",
                          allreduce_calls_per_step, allreduce_ms_per_step, broadcast_calls_per_step, broadcast_ms_per_step,
                          gather_calls_per_step, gather_ms_per_step,
                          sent_bytes_per_token.values.reduce(0, +) / 1e3, kb(sent_bytes_per_token, "allreduce"),
                          kb(sent_bytes_per_token, "broadcast"),
                          received_bytes_per_token.values.reduce(0, +) / 1e3, kb(received_bytes_per_token, "allreduce"),
                          kb(received_bytes_per_token, "gather"))
        if let wire = interface_bytes_sent_per_token { text += String(format: ", %.1f KB through its interfaces", wire / 1e3) }
        return text
    }
}

/// Prompt files: first turns of MT-Bench (or "prompt" strings), one JSON object per line.
enum BenchPrompts {
    /// Held out: benchmarks and evaluation only.
    static let defaultRelativePath = "../shared/data/mt_bench_question.jsonl"
    /// The prompts heads are trained on.
    static let trainingRelativePath = "data/train_prompts.jsonl"

    static func load(path: String?, limit: Int) throws -> [String] {
        let file = try path ?? findDefault()
        guard let data = FileManager.default.contents(atPath: file) else {
            throw CommandError("cannot read prompts file \(file)")
        }
        var prompts: [String] = []
        for (number, line) in String(decoding: data, as: UTF8.self).split(separator: "\n").enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            guard let object = try? JSONSerialization.jsonObject(with: Data(trimmed.utf8)) as? [String: Any] else {
                throw CommandError("\(file):\(number + 1): not a JSON object")
            }
            if let turns = object["turns"] as? [String], let first = turns.first {
                prompts.append(first)
            } else if let prompt = object["prompt"] as? String {
                prompts.append(prompt)
            } else {
                throw CommandError("\(file):\(number + 1): expected a \"turns\" array of strings or a \"prompt\" string")
            }
            if prompts.count == limit { break }
        }
        guard !prompts.isEmpty else { throw CommandError("\(file): no prompts") }
        return prompts
    }

    /// `relativePath` (default: MT-Bench's questions) from the working directory or any folder above it.
    static func findDefault(_ relativePath: String = defaultRelativePath) throws -> String {
        guard let found = findAbove(relativePath) else {
            throw CommandError("no --prompts given and \(relativePath) not found above the working directory")
        }
        return found
    }
}
