import ArgumentParser
import Coordinator
import Foundation
import Medusa
import Worker

#if canImport(Glibc)
import Glibc
#endif

/// Set by SIGINT: the training loop saves a checkpoint and stops.
nonisolated(unsafe) private var interrupted: sig_atomic_t = 0

struct TrainHeadsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train-heads",
        abstract: "Train Medusa heads on the frozen model's own answers (self-distillation, Medusa-1).",
        discussion: """
            1. Data: the model answers each prompt (chat template applied, greedy unless --temperature; with \
            --answers-per-prompt N, N - 1 more answers sampled at --extra-temperature), and every answer token is stored with the hidden state that chose it, in OUT/distill (appended per answer: an \
            interrupted run, a second epoch or a resumed run never regenerates). 2. Training: head k learns the token \
            k + 2 places after each row's position (loss sum_k 0.8^k CE_k), AdamW with linear warm-up and cosine decay, \
            gradient clipping, checkpoints in OUT/checkpoint.safetensors (every --checkpoint-every steps, at each epoch's \
            end, and on Ctrl-C). The answers to every 20th prompt are held out to report accuracy. 3. Output: OUT/medusa_heads.safetensors \
            (this project's heads format) and OUT/config.json (base model and its sha256, prompts, command, accuracies).
            """)

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Output folder.")
    var out: String

    @Option(help: "Number of heads.")
    var heads: Int = 4

    @Option(help: "Residual blocks per head.")
    var layers: Int = 1

    @Flag(help: "Each head's LM head: shared with the base model (frozen, small files) or its own (initialised from the base, trained).")
    var lmHead: LMHeadChoice = .sharedLmHead

    @Option(help: "JSON Lines prompts (\"prompt\" strings or MT-Bench \"turns\") (default: data/train_prompts.jsonl, searched upwards).")
    var prompts: String?

    @Option(help: "Use the first N prompts (default: all).")
    var samples: Int?

    @Option(help: "Longest answer per prompt, in tokens.")
    var maxTokens: Int = 256

    @Option(help: "Sampling temperature of each prompt's first answer (0: greedy, the setting Medusa's greedy decoding uses).")
    var temperature: Float = 0

    @Option(help: "Answers per prompt: the first at --temperature, the others sampled at --extra-temperature (more varied data from the same prompts; a later run with a larger value adds answers to the cached data).")
    var answersPerPrompt: Int = 1

    @Option(help: "Sampling temperature of every answer after a prompt's first.")
    var extraTemperature: Float = 0.7

    @Option(help: "Answers generated together, sharing each forward (continuous batching, as `serve` does).")
    var parallel: Int = 8

    @Option(help: "The vocabulary of the training softmax: `seen` (the tokens of the training answers; training is several times faster, and the heads file lists them as the heads' candidate tokens, so decoding scores only those LM-head rows; shared LM head only) or `full` (default: seen with a shared LM head, full with own LM heads). Held-out accuracy is over the full vocabulary either way.")
    var trainVocabulary: TrainVocabulary?

    @Option(help: "Keep as the heads' candidate tokens only the N most frequent tokens of the training answers (with the seen vocabulary): each head then scores N LM-head rows per step instead of every seen token's, and rare tokens, which heads seldom guess right, are never proposed. Default: every seen token. --resume of a finished run writes the file again with the new list.")
    var candidates: Int?

    @Option(help: "Storage of the heads file's matrices: f32, f16 (half the size) or bf16. Training is fp32 either way; --resume of a finished run writes the file again in another storage.")
    var dtype: HeadsStorage = .f32

    @Option(help: "Passes over the training rows.")
    var epochs: Int = 1

    @Option(help: "Peak learning rate.")
    var lr: Float = 1e-3

    @Option(help: "AdamW's decoupled weight decay of the heads' matrices (not their biases).")
    var weightDecay: Float = 0

    @Option(help: "Rows per training step.")
    var batch: Int = 256

    @Option(help: "Linear warm-up steps before the cosine decay.")
    var warmup: Int = 40

    @Option(help: "Save a checkpoint every N steps.")
    var checkpointEvery: Int = 100

    @Option(help: "Seed of the data order (and of sampled answers).")
    var seed: UInt64 = 0

    @Flag(help: "Continue from OUT/checkpoint.safetensors.")
    var resume = false

    enum LMHeadChoice: EnumerableFlag {
        case sharedLmHead, ownLmHead
    }

    enum TrainVocabulary: String, ExpressibleByArgument, CaseIterable {
        case seen, full
    }

    enum HeadsStorage: String, ExpressibleByArgument, CaseIterable {
        case f32, f16, bf16

        var type: TensorType {
            switch self {
            case .f32: .f32
            case .f16: .f16
            case .bf16: .bf16
            }
        }
    }

    private var vocabulary: TrainVocabulary { trainVocabulary ?? (lmHead == .sharedLmHead ? .seen : .full) }

    func validate() throws {
        guard heads >= 1 && heads <= 16 else { throw ValidationError("--heads must be between 1 and 16, got \(heads)") }
        guard layers >= 1 && layers <= 8 else { throw ValidationError("--layers must be between 1 and 8, got \(layers)") }
        if let samples, samples < 1 { throw ValidationError("--samples must be at least 1, got \(samples)") }
        guard maxTokens >= 2 else { throw ValidationError("--max-tokens must be at least 2, got \(maxTokens)") }
        guard parallel >= 1 && parallel <= 64 else { throw ValidationError("--parallel must be between 1 and 64, got \(parallel)") }
        guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be >= 0, got \(temperature)") }
        guard answersPerPrompt >= 1 && answersPerPrompt <= 64 else {
            throw ValidationError("--answers-per-prompt must be between 1 and 64, got \(answersPerPrompt)")
        }
        guard extraTemperature > 0, extraTemperature.isFinite else {
            throw ValidationError("--extra-temperature must be positive, got \(extraTemperature)")
        }
        if let candidates {
            guard candidates >= 1 else { throw ValidationError("--candidates must be at least 1, got \(candidates)") }
            guard vocabulary == .seen else { throw ValidationError("--candidates needs the seen training vocabulary (and the shared LM head)") }
        }
        if trainVocabulary == .seen && lmHead == .ownLmHead {
            throw ValidationError("--train-vocabulary seen needs the shared LM head: own LM heads learn every token's row")
        }
        guard epochs >= 1 else { throw ValidationError("--epochs must be at least 1, got \(epochs)") }
        guard lr > 0, lr.isFinite else { throw ValidationError("--lr must be positive, got \(lr)") }
        guard weightDecay >= 0, weightDecay.isFinite else {
            throw ValidationError("--weight-decay must be >= 0, got \(weightDecay)")
        }
        guard batch >= 1 else { throw ValidationError("--batch must be at least 1, got \(batch)") }
        guard warmup >= 0 else { throw ValidationError("--warmup must be >= 0, got \(warmup)") }
        guard checkpointEvery >= 1 else { throw ValidationError("--checkpoint-every must be at least 1, got \(checkpointEvery)") }
    }

    func run() throws {
        let group = RankGroup.join()
        try group.run {
            let loaded = try group.loadModel(modelOptions, sequences: parallel)
            let promptsFile = try prompts ?? BenchPrompts.findDefault(BenchPrompts.trainingRelativePath)
            let texts = try BenchPrompts.load(path: promptsFile, limit: samples ?? Int.max)
            try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
            let checkpointPath = out + "/checkpoint.safetensors"
            if !resume, FileManager.default.fileExists(atPath: checkpointPath) {
                throw CommandError("\(checkpointPath) exists: pass --resume to continue it, or choose another --out")
            }
            let modelHash = try ModelHash.sha256(of: loaded.path)
            let provenance = DistillationSet.Provenance(
                model: (loaded.path as NSString).lastPathComponent, modelSHA256: modelHash,
                hiddenSize: loaded.model.config.hiddenSize, vocabularySize: loaded.model.config.vocabularySize,
                promptsSHA256: try sha256Hex(ofFile: promptsFile), maxTokens: maxTokens, temperature: temperature,
                extraTemperature: extraTemperature, seed: seed)
            let data = try DistillationSet(directory: out + "/distill", provenance: provenance)
            try distill(loaded, texts: texts, into: data)
            // The other ranks are done: training runs on rank 0 alone.
            _ = try group.finish(loaded.model)
            let baseLMHead = Self.dequantized(loaded.model.weights.output)
            try train(loaded, data: data, baseLMHead: baseLMHead, checkpointPath: checkpointPath,
                      base: (provenance.model, modelHash), promptsFile: promptsFile, promptCount: texts.count)
        }
    }

    /// Makes every answer the data does not hold yet (`--answers-per-prompt` per prompt),
    /// `--parallel` at a time (each answer is the one the prompt gets alone: the engine's steps are
    /// batch invariant); each is appended as it ends.
    private func distill(_ loaded: LoadedModel, texts: [String], into data: DistillationSet) throws {
        let tokenizer = loaded.tokenizer
        let answered = data.answered
        // Variant-major: every prompt's first answer comes before any second one.
        let todo = (0..<answersPerPrompt).flatMap { variant in
            texts.indices.map { DistillationSet.AnswerKey(prompt: $0, variant: variant) }
        }.filter { !answered.contains($0) }
        guard !todo.isEmpty else {
            progress("[data] \(data.answers.count) answers, \(data.rowCount) rows already in \(data.directory)\n")
            return
        }
        let engine = try BatchEngine(model: loaded.model, tokenizer: tokenizer,
                                     configuration: .init(maxSequences: parallel, maxQueued: todo.count))
        var streams: [AsyncStream<CompletionEvent>] = []  // kept: a dropped stream cancels its request
        var keys: [DistillationSet.AnswerKey] = []  // by request tag
        for key in todo {
            let tokens = loaded.userMessageTokens(texts[key.prompt])
            guard tokens.count + 2 < loaded.model.contextLength else {
                if key.variant == 0 {
                    progress("[data] prompt \(key.prompt + 1) skipped: \(tokens.count) tokens do not fit --ctx \(loaded.model.contextLength)\n")
                }
                continue
            }
            // Variant 0 keeps the seeds of data made before several answers per prompt.
            let request = CompletionRequest(
                prompt: tokens, maxTokens: min(maxTokens, loaded.model.contextLength - tokens.count),
                sampling: SamplingParameters(temperature: key.variant == 0 ? temperature : extraTemperature),
                seed: seed &+ UInt64(key.prompt) &+ (UInt64(key.variant) << 32), tag: keys.count,
                recordsHiddenStates: true)
            keys.append(key)
            streams.append(try engine.submit(request))
        }
        let start = Date()
        var made = 0, done = 0
        var failure: (any Error)?
        engine.onSequenceEnd = { request, tokens, hidden in
            guard failure == nil else { return }
            let key = keys[request.tag]
            do { try data.append(prompt: key.prompt, variant: key.variant, hidden: hidden, tokens: tokens) } catch {
                failure = error
                engine.shutdown(grace: 0)
                return
            }
            made += tokens.count
            done += 1
            let elapsed = Date().timeIntervalSince(start)
            let eta = elapsed / Double(done) * Double(streams.count - done)
            progress(String(format: "\r[data] %d/%d answers, %d rows, %.1f tok/s, ETA %@   ", done, streams.count,
                            data.rowCount, Double(made) / elapsed, Self.duration(eta)))
        }
        try withExtendedLifetime(streams) { try engine.run(untilIdle: true) }
        progress("\n")
        if let failure { throw failure }
    }

    private func train(
        _ loaded: LoadedModel, data: DistillationSet, baseLMHead: [Float], checkpointPath: String,
        base: (file: String, sha256: String), promptsFile: String, promptCount: Int
    ) throws {
        let (hidden, tokens) = try data.load()
        let targets = data.targets(tokens: tokens, heads: heads)
        let h = loaded.model.config.hiddenSize
        // The answers to every 20th prompt are held out for the accuracies reported at the end
        // (by prompt, not by position: answers are stored in the order they finish).
        var trainRows: [Int] = [], heldOutRows: [Int] = []
        for answer in data.answers {
            let rows = answer.start..<(answer.start + answer.count)
            if answer.prompt % 20 == 19 { heldOutRows += rows } else { trainRows += rows }
        }
        guard !trainRows.isEmpty else { throw CommandError("no training rows: the answers are empty") }
        // With `seen`, the softmax runs over the tokens of the training answers (which hold every
        // training target): the LM head's rows of those tokens, targets renumbered to match.
        let fullVocabulary = loaded.model.config.vocabularySize
        var trainingLMHead = baseLMHead, trainingTargets = targets
        var candidateTokens: [Int32]?
        if vocabulary == .seen {
            var occurrences = [Int](repeating: 0, count: fullVocabulary)
            for r in trainRows { occurrences[Int(tokens[r])] += 1 }
            let kept = occurrences.indices.filter { occurrences[$0] > 0 }
            var renumbered = [Int32](repeating: -1, count: fullVocabulary)
            for (j, token) in kept.enumerated() { renumbered[token] = Int32(j) }
            trainingLMHead = kept.flatMap { baseLMHead[($0 * h)..<(($0 + 1) * h)] }
            trainingTargets = targets.map { $0.map { $0 < 0 ? -1 : renumbered[Int($0)] } }
            candidateTokens = kept.map { Int32($0) }
            progress("[train] softmax over the \(kept.count) tokens of the training answers (of \(fullVocabulary))\n")
            if let candidates, candidates < kept.count {
                candidateTokens = Self.mostFrequent(candidates, occurrences: occurrences)
                progress("[train] candidate tokens: the \(candidates) most frequent of the training answers\n")
            }
        }
        let trainingVocabulary = trainingLMHead.count / h
        let stepsPerEpoch = (trainRows.count + batch - 1) / batch
        let configuration = HeadTrainer.Configuration(
            heads: heads, layers: layers, hiddenSize: h, vocabularySize: trainingVocabulary,
            ownLMHead: lmHead == .ownLmHead, learningRate: lr, weightDecay: weightDecay, warmupSteps: min(warmup, stepsPerEpoch * epochs / 2),
            totalSteps: stepsPerEpoch * epochs, seed: seed)
        let trainer: HeadTrainer
        if resume, FileManager.default.fileExists(atPath: checkpointPath) {
            trainer = try HeadTrainer.load(from: checkpointPath, baseLMHead: trainingLMHead)
            guard trainer.configuration == configuration else {
                throw CommandError("\(checkpointPath) was made with other settings (\(trainer.configuration)); use the same options or another --out")
            }
            progress("[train] resuming at step \(trainer.step) of \(configuration.totalSteps)\n")
        } else {
            trainer = try HeadTrainer(configuration: configuration, baseLMHead: trainingLMHead)
        }
        func makeBatch(_ rows: ArraySlice<Int>, _ targets: [[Int32]]) -> TrainingBatch {
            var x = [Float](repeating: 0, count: rows.count * h)
            for (i, r) in rows.enumerated() { x.replaceSubrange((i * h)..<((i + 1) * h), with: hidden[(r * h)..<((r + 1) * h)]) }
            return TrainingBatch(hidden: x, targets: (0..<heads).map { k in rows.map { targets[k][$0] } })
        }
        signal(SIGINT) { _ in interrupted = 1 }
        defer { signal(SIGINT, SIG_DFL) }
        let start = Date()
        let firstStep = trainer.step
        var recent: [BatchStatistics] = []
        var order: [Int] = [], orderEpoch = -1
        while trainer.step < configuration.totalSteps {
            let epoch = trainer.step / stepsPerEpoch
            // The epoch's order: a shuffle seeded by --seed and the epoch, so a resumed run replays
            // it; made once per epoch.
            if orderEpoch != epoch {
                var rng = SeededGenerator(seed: seed &+ 0x9E37 &* UInt64(epoch + 1))
                order = trainRows.shuffled(using: &rng)
                orderEpoch = epoch
            }
            let offset = (trainer.step % stepsPerEpoch) * batch
            let stats = try trainer.train(makeBatch(order[offset..<min(order.count, offset + batch)], trainingTargets))
            recent.append(stats)
            if recent.count > 20 { recent.removeFirst() }
            let done = trainer.step - firstStep
            let perStep = Date().timeIntervalSince(start) / Double(done)
            let accuracy = (0..<heads).map { k in
                let correct = recent.reduce(0) { $0 + $1.top1Correct[k] }, count = recent.reduce(0) { $0 + $1.targetCount[k] }
                return String(format: "%.2f", count > 0 ? Double(correct) / Double(count) : 0)
            }
            progress(String(format: "\r[train] step %d/%d epoch %d/%d loss %.3f top-1 [%@] %.2f s/step ETA %@   ",
                            trainer.step, configuration.totalSteps, epoch + 1, epochs,
                            recent.reduce(0) { $0 + $1.loss } / Double(recent.count), accuracy.joined(separator: " "),
                            perStep, Self.duration(perStep * Double(configuration.totalSteps - trainer.step))))
            if trainer.step % checkpointEvery == 0 || trainer.step % stepsPerEpoch == 0 { try trainer.save(to: checkpointPath) }
            if interrupted != 0 {
                try trainer.save(to: checkpointPath)
                progress("\n[train] interrupted: checkpoint saved at step \(trainer.step); continue with --resume\n")
                throw ExitCode(130)
            }
        }
        progress("\n")
        try trainer.save(to: checkpointPath)

        // Held-out accuracy over the full vocabulary, then the heads and their record.
        let scorer = vocabulary == .seen ? try trainer.rescored(baseLMHead: baseLMHead) : trainer
        var top1 = [Int](repeating: 0, count: heads), top5 = top1, count = top1
        var offset = 0
        while offset < heldOutRows.count {
            let stats = try scorer.evaluate(makeBatch(heldOutRows[offset..<min(heldOutRows.count, offset + batch)], targets))
            for k in 0..<heads {
                top1[k] += stats.top1Correct[k]
                top5[k] += stats.top5Correct[k]
                count[k] += stats.targetCount[k]
            }
            offset += batch
        }
        let top1Accuracy = (0..<heads).map { count[$0] > 0 ? Double(top1[$0]) / Double(count[$0]) : 0 }
        let top5Accuracy = (0..<heads).map { count[$0] > 0 ? Double(top5[$0]) / Double(count[$0]) : 0 }
        let exported = trainer.export()
        try MedusaHeadWeights.write(
            blocks: exported.blocks, lmHeads: exported.lmHeads, hiddenSize: h, vocabularySize: fullVocabulary,
            baseModel: "\(base.file) sha256:\(base.sha256)", to: out + "/" + MedusaHeadWeights.weightsFileNames[0],
            dtype: dtype.type, candidateTokens: candidateTokens)
        let record: [String: Any] = [
            "format": MedusaHeadWeights.formatName,
            "base_model": ["file": base.file, "sha256": base.sha256],
            "medusa_num_heads": heads, "medusa_num_layers": layers, "shared_lm_head": lmHead == .sharedLmHead,
            "prompts": ["file": (promptsFile as NSString).lastPathComponent, "sha256": data.provenance.promptsSHA256,
                        "count": promptCount],
            "answers": data.answers.count, "train_rows": trainRows.count, "held_out_rows": heldOutRows.count,
            "max_tokens": maxTokens, "temperature": Double("\(temperature)") ?? 0, "epochs": epochs, "lr": Double("\(lr)") ?? 0,
            "weight_decay": Double("\(weightDecay)") ?? 0,
            "batch": batch, "steps": trainer.step, "seed": seed, "answers_per_prompt": answersPerPrompt,
            "extra_temperature": Double("\(extraTemperature)") ?? 0,
            "train_vocabulary": vocabulary.rawValue, "train_vocabulary_tokens": trainingVocabulary, "dtype": dtype.rawValue,
            "candidate_tokens": candidateTokens?.count ?? fullVocabulary,
            "command": (["medusa-worker"] + CommandLine.arguments.dropFirst()).joined(separator: " "),
            "held_out_top1_accuracy": top1Accuracy, "held_out_top5_accuracy": top5Accuracy,
        ]
        try JSONSerialization.data(withJSONObject: record, options: [.prettyPrinted, .sortedKeys])
            .write(to: URL(fileURLWithPath: out + "/config.json"), options: .atomic)
        emit("heads written to \(out)/\(MedusaHeadWeights.weightsFileNames[0]); held-out top-1 accuracy per head: "
            + top1Accuracy.map { String(format: "%.3f", $0) }.joined(separator: " ") + "\n")
    }

    /// The `count` tokens that occur most often (`occurrences[token]`; ties: the lower id first),
    /// ascending.
    static func mostFrequent(_ count: Int, occurrences: [Int]) -> [Int32] {
        let ranked = occurrences.indices.filter { occurrences[$0] > 0 }
            .sorted { occurrences[$0] != occurrences[$1] ? occurrences[$0] > occurrences[$1] : $0 < $1 }
        return ranked.prefix(count).sorted().map { Int32($0) }
    }

    /// The LM head as fp32 [vocabulary, hidden].
    static func dequantized(_ w: WeightMatrix) -> [Float] {
        var out = [Float](repeating: 0, count: w.rows * w.columns)
        out.withUnsafeMutableBufferPointer { o in
            for r in 0..<w.rows { w.dequantizeRow(r, into: o.baseAddress! + r * w.columns) }
        }
        return out
    }

    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "?" }
        let s = Int(seconds.rounded())
        return s >= 3600 ? "\(s / 3600)h\(s % 3600 / 60)m" : (s >= 60 ? "\(s / 60)m\(s % 60)s" : "\(s)s")
    }
}

/// The sha256 that identifies a base model: its GGUF file's, or for a Hugging Face folder, the
/// hash of its safetensors files' bytes in name order.
enum ModelHash {
    static func sha256(of path: String) throws -> String {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw CommandError("\(path): no such file or folder")
        }
        guard isDirectory.boolValue else { return try sha256Hex(ofFile: path) }
        let files = try FileManager.default.contentsOfDirectory(atPath: path).filter { $0.hasSuffix(".safetensors") }.sorted()
        return try sha256Hex(ofFiles: files.map { (path as NSString).appendingPathComponent($0) })
    }
}
