import Foundation
import Testing
import TestSupport
@testable import Medusa
@testable import Worker

/// The Medusa head trainer: its gradient against finite differences, its forward against the
/// inference heads', its loss against a Double reference, learning a synthetic task, bit-exact
/// reruns and resumes, checkpoint errors, the learning-rate schedule, clipping, and bad input.
@Suite(.serialized) struct HeadTrainerTests {
    /// Uniform values in +-scale.
    static func random(_ count: Int, scale: Float, _ generator: inout SeededGenerator) -> [Float] {
        (0..<count).map { _ in generator.nextSigned() * scale }
    }

    /// A trainer whose parameters are all random (blocks in +-blockScale, own LM heads in +-1),
    /// on a random base LM head.
    static func randomTrainer(_ configuration: HeadTrainer.Configuration, blockScale: Float = 0.4,
                              seed: UInt64 = 3) throws -> HeadTrainer {
        var generator = SeededGenerator(seed: seed)
        let c = configuration
        let base = random(c.vocabularySize * c.hiddenSize, scale: 1, &generator)
        let trainer = try HeadTrainer(configuration: c, baseLMHead: base)
        randomize(trainer, blockScale: blockScale, &generator)
        return trainer
    }

    /// Overwrites every parameter with random values.
    static func randomize(_ trainer: HeadTrainer, blockScale: Float, _ generator: inout SeededGenerator) {
        for tensor in trainer.layout.tensors {
            let scale: Float = tensor.name.hasSuffix("lm_head.weight") ? 1 : blockScale
            for i in tensor.offset..<(tensor.offset + tensor.count) { trainer.parameters[i] = generator.nextSigned() * scale }
        }
    }

    /// A batch of random hidden states; each head's target is random, or -1 with probability `missing`.
    static func randomBatch(_ c: HeadTrainer.Configuration, rows: Int, missing: Float = 0.3,
                            seed: UInt64 = 11) -> TrainingBatch {
        var generator = SeededGenerator(seed: seed)
        let hidden = random(rows * c.hiddenSize, scale: 1.5, &generator)
        let targets = (0..<c.heads).map { _ in
            (0..<rows).map { _ -> Int32 in
                generator.nextUnit() < missing ? -1 : Int32(generator.next() % UInt64(c.vocabularySize))
            }
        }
        return TrainingBatch(hidden: hidden, targets: targets)
    }

    static func parameters(_ trainer: HeadTrainer) -> [Float] { Array(trainer.parameters) }

    // MARK: The gradient

    @Test("the gradient equals central finite differences", arguments: [false, true])
    func gradientMatchesFiniteDifferences(ownLMHead: Bool) throws {
        let c = HeadTrainer.Configuration(heads: 2, layers: 2, hiddenSize: 8, vocabularySize: 11,
                                          ownLMHead: ownLMHead, totalSteps: 10)
        let trainer = try Self.randomTrainer(c)
        trainer.chunkRows = 2
        var batch = Self.randomBatch(c, rows: 5)
        batch.targets[0][1] = -1
        batch.targets[1][4] = -1
        _ = try trainer.pass(batch, backward: true)
        let analytic = Array(trainer.gradients)

        // Large enough that fp32 rounding of the loss stays well below the difference, small
        // enough that the third-order term does too.
        let delta: Float = 1e-2
        var checked = (weights: 0, biases: 0, lmHeads: 0)
        for tensor in trainer.layout.tensors {
            for i in tensor.offset..<(tensor.offset + tensor.count) {
                let saved = trainer.parameters[i]
                trainer.parameters[i] = saved + delta
                let plus = try trainer.evaluate(batch).loss
                trainer.parameters[i] = saved - delta
                let minus = try trainer.evaluate(batch).loss
                trainer.parameters[i] = saved
                let numeric = (plus - minus) / (Double(saved + delta) - Double(saved - delta))
                let a = Double(analytic[i])
                // Relative to the larger, or to 1e-3 for gradients too small to resolve better.
                let relative = abs(a - numeric) / max(abs(a), abs(numeric), 1e-3)
                #expect(relative < 1e-2, "\(tensor.name)[\(i - tensor.offset)]: analytic \(a), numeric \(numeric)")
                if tensor.name.hasSuffix("lm_head.weight") {
                    checked.lmHeads += 1
                } else if tensor.name.hasSuffix("bias") {
                    checked.biases += 1
                } else {
                    checked.weights += 1
                }
            }
        }
        #expect(checked.weights == 2 * 2 * 64 && checked.biases == 2 * 2 * 8)
        #expect(checked.lmHeads == (ownLMHead ? 2 * 11 * 8 : 0))
        // The frozen shared LM head still passes the gradient through to the blocks.
        #expect(analytic[trainer.layout.weight(0, 0)..<trainer.layout.bias(0, 0)].contains { $0 != 0 })
    }

    @Test("the loss and accuracies equal a Double reference over the trainer's logits")
    func lossMatchesReference() throws {
        let c = HeadTrainer.Configuration(heads: 3, layers: 1, hiddenSize: 16, vocabularySize: 40, totalSteps: 10,
                                          lossDecay: 0.7)
        let trainer = try Self.randomTrainer(c)
        trainer.chunkRows = 64
        // More rows than one LM-head chunk, with head 2 given no targets at all.
        var batch = Self.randomBatch(c, rows: 150)
        batch.targets[2] = Array(repeating: -1, count: 150)
        let statistics = try trainer.evaluate(batch)
        let logits = trainer.logits(hidden: batch.hidden)
        var expected = 0.0
        for k in 0..<c.heads {
            var sum = 0.0, count = 0, top1 = 0, top5 = 0
            for (i, target) in batch.targets[k].enumerated() where target >= 0 {
                let row = logits[k][(i * 40)..<((i + 1) * 40)].map(Double.init)
                let maximum = row.max()!
                sum += maximum + log(row.map { exp($0 - maximum) }.reduce(0, +)) - row[Int(target)]
                count += 1
                let top = logits[k][(i * 40)..<((i + 1) * 40)].withUnsafeBufferPointer { topTokens($0, count: 5) }
                if top.first == target { top1 += 1 }
                if top.contains(target) { top5 += 1 }
            }
            let mean = count == 0 ? 0 : sum / Double(count)
            expected += pow(0.7, Double(k)) * mean
            #expect(abs(statistics.headLoss[k] - mean) < 1e-5 * max(1, mean))
            #expect(statistics.targetCount[k] == count)
            #expect(statistics.top1Correct[k] == top1 && statistics.top5Correct[k] == top5)
        }
        #expect(statistics.targetCount[2] == 0 && statistics.headLoss[2] == 0)
        #expect(abs(statistics.loss - expected) < 1e-5 * expected)
        #expect(statistics.gradientNorm == nil && statistics.learningRate == nil)
    }

    @Test("heads trained over a subset of the vocabulary score the full vocabulary with the same parameters")
    func rescoredOverFullVocabulary() throws {
        let full = HeadTrainer.Configuration(heads: 2, layers: 1, hiddenSize: 8, vocabularySize: 12, totalSteps: 10)
        var generator = SeededGenerator(seed: 5)
        let base = Self.random(12 * 8, scale: 1, &generator)
        let subset = [1, 4, 5, 9]
        var small = full
        small.vocabularySize = subset.count
        let trainer = try HeadTrainer(configuration: small, baseLMHead: subset.flatMap { base[($0 * 8)..<($0 * 8 + 8)] })
        var batch = Self.randomBatch(small, rows: 6, missing: 0)
        for _ in 0..<3 { _ = try trainer.train(batch) }
        let rescored = try trainer.rescored(baseLMHead: base)
        #expect(rescored.configuration.vocabularySize == 12 && rescored.step == 3)
        #expect(Self.parameters(rescored) == Self.parameters(trainer))
        // The subset's logits are the full vocabulary's at the subset's tokens.
        let sub = trainer.logits(hidden: batch.hidden), all = rescored.logits(hidden: batch.hidden)
        for k in 0..<2 {
            for row in 0..<6 {
                for (j, token) in subset.enumerated() { #expect(abs(sub[k][row * 4 + j] - all[k][row * 12 + token]) < 1e-5) }
            }
        }
        batch.targets = batch.targets.map { $0.map { Int32(subset[Int($0)]) } }
        #expect(try rescored.evaluate(batch).targetCount == [6, 6])
        #expect(throws: HeadTrainerError.self) { try trainer.rescored(baseLMHead: [1, 2, 3]) }
    }

    @Test("heads with candidate tokens propose the best candidates by the full LM head's logits")
    func candidateTokensAtInference() throws {
        var synthetic = SyntheticLlama(config: SyntheticLlama.smallConfig, weightType: .f32, seed: 9)
        let directory = try makeTemporaryDirectory()
        try synthetic.write(to: directory + "/tiny.gguf")
        let model = try LlamaModel(gguf: GGUFFile(path: directory + "/tiny.gguf"), contextLength: 64, threads: 2)
        let (h, v) = (model.config.hiddenSize, model.config.vocabularySize)
        let c = HeadTrainer.Configuration(heads: 2, layers: 1, hiddenSize: h, vocabularySize: v, totalSteps: 10)
        let trainer = try HeadTrainer(configuration: c, baseLMHead: synthetic.tensors["token_embd.weight"]!.values)
        var generator = SeededGenerator(seed: 22)
        Self.randomize(trainer, blockScale: 0.15, &generator)
        let candidates = (0..<Int32(v)).filter { $0 % 3 == 1 || $0 == 0 }
        let exported = trainer.export()
        let path = directory + "/heads.safetensors"
        try MedusaHeadWeights.write(blocks: exported.blocks, lmHeads: nil, hiddenSize: h, vocabularySize: v,
                                    baseModel: "synthetic", to: path, candidateTokens: candidates)
        let heads = try MedusaHeads(weights: MedusaHeadWeights(path: path), model: model)
        let rows = 5
        let hidden = Self.random(rows * h, scale: 2, &generator)
        let logits = trainer.logits(hidden: hidden)
        var differsFromFull = false
        for i in 0..<rows {
            let proposed = hidden.withUnsafeBufferPointer {
                heads.propose(hidden: $0.baseAddress! + i * h, sequence: [1], topK: [4, 4])
            }
            for k in 0..<2 {
                let row = Array(logits[k][(i * v)..<((i + 1) * v)])
                let expected = candidates.sorted { (row[Int($0)], -$0) > (row[Int($1)], -$1) }.prefix(4)
                #expect(proposed[k] == Array(expected), "row \(i) head \(k)")
                let full = row.withUnsafeBufferPointer { topTokens($0, count: 4) }
                differsFromFull = differsFromFull || full != proposed[k]
            }
        }
        #expect(differsFromFull, "the candidates should change some proposals")
    }

    @Test("the vector exponential of the softmax is within a few ulp of exp, and floored at e^-87")
    func exponential() {
        var worst = 0.0
        for start in stride(from: -87.0 as Float, to: 0, by: 0.0371) {
            let x = SIMD8<Float>((0..<8).map { start + Float($0) * 0.0046 })
            let e = HeadTrainer.exp8(x)
            for i in 0..<8 {
                let exact = exp(Double(x[i]))
                worst = max(worst, abs(Double(e[i]) - exact) / exact)
            }
        }
        #expect(worst < 3e-7, "worst relative error \(worst)")
        #expect(HeadTrainer.exp8(SIMD8(repeating: 0)) == SIMD8(repeating: 1))
        let smallest = HeadTrainer.exp8(SIMD8(repeating: -87))
        #expect(abs(Double(smallest[0]) / exp(-87) - 1) < 3e-7)
        #expect(HeadTrainer.exp8(SIMD8(repeating: -100)) == smallest)
        #expect(HeadTrainer.exp8(SIMD8(repeating: -.infinity)) == smallest)
        #expect(HeadTrainer.exp8(SIMD8(repeating: .nan))[0].isNaN)
    }

    // MARK: Against inference

    @Test("exported heads written and loaded give MedusaHeads the trainer's top tokens", arguments: [false, true])
    func forwardMatchesInference(ownLMHead: Bool) throws {
        var synthetic = SyntheticLlama(config: SyntheticLlama.smallConfig, weightType: .f32, seed: 9)
        let directory = try makeTemporaryDirectory()
        try synthetic.write(to: directory + "/tiny.gguf")
        let model = try LlamaModel(gguf: GGUFFile(path: directory + "/tiny.gguf"), contextLength: 64, threads: 2)
        let (h, v) = (model.config.hiddenSize, model.config.vocabularySize)
        let base = synthetic.tensors["token_embd.weight"]!.values
        let c = HeadTrainer.Configuration(heads: 3, layers: 2, hiddenSize: h, vocabularySize: v,
                                          ownLMHead: ownLMHead, totalSteps: 10)
        let trainer = try HeadTrainer(configuration: c, baseLMHead: base)
        var generator = SeededGenerator(seed: 21)
        Self.randomize(trainer, blockScale: 0.15, &generator)

        let exported = trainer.export()
        #expect(exported.blocks.count == 3 && exported.blocks.allSatisfy { $0.count == 2 })
        #expect((exported.lmHeads != nil) == ownLMHead)
        let path = directory + "/heads.safetensors"
        try MedusaHeadWeights.write(blocks: exported.blocks, lmHeads: exported.lmHeads, hiddenSize: h,
                                    vocabularySize: v, baseModel: "synthetic", to: path)
        let heads = try MedusaHeads(weights: MedusaHeadWeights(path: path), model: model)

        let rows = 6
        let hidden = Self.random(rows * h, scale: 2, &generator)
        let logits = trainer.logits(hidden: hidden)
        for i in 0..<rows {
            let proposed = hidden.withUnsafeBufferPointer {
                heads.propose(hidden: $0.baseAddress! + i * h, sequence: [1], topK: [5, 5, 5])
            }
            for k in 0..<3 {
                let expected = logits[k].withUnsafeBufferPointer {
                    topTokens(UnsafeBufferPointer(rebasing: $0[(i * v)..<((i + 1) * v)]), count: 5)
                }
                #expect(proposed[k] == expected, "row \(i) head \(k)")
            }
        }
        // Different heads and rows really do disagree (the comparison is not of constants).
        #expect(Set((0..<3).map { k in logits[k].withUnsafeBufferPointer { argmax(UnsafeBufferPointer(rebasing: $0[0..<v])) } }).count > 1)
    }

    // MARK: Training

    /// Rows near one of V cluster centres; head k's target for cluster j is (j + k + 1) mod V.
    static func clusterBatch(_ c: HeadTrainer.Configuration, centres: [Float], rows: Int,
                             _ generator: inout SeededGenerator) -> TrainingBatch {
        let (h, v) = (c.hiddenSize, c.vocabularySize)
        var hidden: [Float] = []
        var targets = [[Int32]](repeating: [], count: c.heads)
        for _ in 0..<rows {
            let j = Int(generator.next() % UInt64(v))
            hidden += (0..<h).map { centres[j * h + $0] + 0.1 * generator.nextSigned() }
            for k in 0..<c.heads { targets[k].append(Int32((j + k + 1) % v)) }
        }
        return TrainingBatch(hidden: hidden, targets: targets)
    }

    @Test("training on a synthetic task lowers the loss and raises top-1 accuracy", arguments: [false, true])
    func learnsSyntheticTask(ownLMHead: Bool) throws {
        let c = HeadTrainer.Configuration(heads: 2, layers: 1, hiddenSize: 16, vocabularySize: 12, ownLMHead: ownLMHead,
                                          learningRate: 1e-2, warmupSteps: 20, totalSteps: 300)
        var generator = SeededGenerator(seed: 5)
        let base = Self.random(c.vocabularySize * c.hiddenSize, scale: 1, &generator)
        let centres = Self.random(c.vocabularySize * c.hiddenSize, scale: 1, &generator)
        let trainer = try HeadTrainer(configuration: c, baseLMHead: base)
        let heldOut = Self.clusterBatch(c, centres: centres, rows: 200, &generator)
        let before = try trainer.evaluate(heldOut)
        for _ in 0..<c.totalSteps {
            _ = try trainer.train(Self.clusterBatch(c, centres: centres, rows: 32, &generator))
        }
        let after = try trainer.evaluate(heldOut)
        #expect(trainer.step == 300)
        #expect(after.loss < 0.2 * before.loss, "loss \(before.loss) -> \(after.loss)")
        for k in 0..<c.heads {
            let accuracy = Double(after.top1Correct[k]) / Double(after.targetCount[k])
            #expect(accuracy > 0.9, "head \(k): top-1 \(before.top1Correct[k]) -> \(after.top1Correct[k]) of 200")
        }
    }

    /// `steps` training steps on seeded random batches, from batch number `from`.
    static func run(_ trainer: HeadTrainer, steps: Range<Int>) throws {
        for s in steps {
            _ = try trainer.train(randomBatch(trainer.configuration, rows: 70, seed: 100 + UInt64(s)))
        }
    }

    static let resumable = HeadTrainer.Configuration(
        heads: 2, layers: 2, hiddenSize: 8, vocabularySize: 11, ownLMHead: true, learningRate: 3e-2,
        weightDecay: 0.01, warmupSteps: 3, totalSteps: 20, gradientClip: 0.5, seed: 42)

    @Test("two runs with the same configuration and batches give bit-identical parameters")
    func deterministic() throws {
        let first = try Self.randomTrainer(Self.resumable)
        let second = try Self.randomTrainer(Self.resumable)
        try Self.run(first, steps: 0..<12)
        try Self.run(second, steps: 0..<12)
        #expect(Self.parameters(first).map(\.bitPattern) == Self.parameters(second).map(\.bitPattern))
        #expect(Array(first.secondMoments).map(\.bitPattern) == Array(second.secondMoments).map(\.bitPattern))
        #expect(Self.parameters(first) != Self.parameters(try Self.randomTrainer(Self.resumable)))
    }

    @Test("saving, loading and continuing gives the uninterrupted run's parameters", arguments: [false, true])
    func resumes(ownLMHead: Bool) throws {
        var c = Self.resumable
        c.ownLMHead = ownLMHead
        let path = try makeTemporaryDirectory() + "/trainer.safetensors"
        let uninterrupted = try Self.randomTrainer(c)
        try Self.run(uninterrupted, steps: 0..<12)

        let interrupted = try Self.randomTrainer(c)
        try Self.run(interrupted, steps: 0..<5)
        try interrupted.save(to: path)
        let resumed = try HeadTrainer.load(from: path, baseLMHead: interrupted.baseLMHead)
        #expect(resumed.configuration == c && resumed.step == 5)
        try Self.run(resumed, steps: 5..<12)
        #expect(resumed.step == 12)
        #expect(Self.parameters(resumed).map(\.bitPattern) == Self.parameters(uninterrupted).map(\.bitPattern))
        #expect(Array(resumed.firstMoments) == Array(uninterrupted.firstMoments))
        #expect(Array(resumed.secondMoments) == Array(uninterrupted.secondMoments))
        #expect(try FileManager.default.contentsOfDirectory(atPath: (path as NSString).deletingLastPathComponent)
            == ["trainer.safetensors"])
    }

    @Test("a truncated, foreign or mismatched checkpoint is an error naming the file")
    func badCheckpoints() throws {
        let directory = try makeTemporaryDirectory()
        let path = directory + "/trainer.safetensors"
        let trainer = try Self.randomTrainer(Self.resumable)
        try trainer.save(to: path)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        let base = trainer.baseLMHead

        func loadError(_ file: String, baseLMHead: [Float]? = nil) -> WeightFileError? {
            do {
                _ = try HeadTrainer.load(from: file, baseLMHead: baseLMHead ?? base)
                return nil
            } catch {
                return error
            }
        }
        for length in [0, 5, 100, bytes.count / 2, bytes.count - 1] {
            let truncated = directory + "/truncated-\(length).safetensors"
            try bytes.prefix(length).write(to: URL(fileURLWithPath: truncated))
            let error = try #require(loadError(truncated), "\(length) bytes")
            #expect(error.path == truncated)
        }
        #expect(loadError(directory + "/missing.safetensors")?.path == directory + "/missing.safetensors")

        // Metadata that disagrees with the tensors: one more block per head, or an unreadable value.
        for (from, to, problem) in [
            ("\"layers\":\"2\"", "\"layers\":\"3\"", WeightFileError.Problem.missingTensor("medusa.0.2.weight")),
            ("\"beta1\":\"0.9\"", "\"beta1\":\"0.x\"", .badValue(key: "beta1", reason: "'0.x' is not a valid Float")),
        ] {
            let range = try #require(bytes.range(of: Data(from.utf8)))
            var edited = bytes
            edited.replaceSubrange(range, with: Data(to.utf8))
            let file = directory + "/edited.safetensors"
            try edited.write(to: URL(fileURLWithPath: file))
            #expect(loadError(file)?.problem == problem)
        }

        // Another base LM head, or one of the wrong size.
        var other = base
        other[3] += 1
        #expect(loadError(path, baseLMHead: other)?.description.contains("another base LM head") == true)
        #expect(loadError(path, baseLMHead: Array(base.dropLast()))?.description.contains("vocabularySize") == true)

        // A heads file is not a checkpoint.
        let exported = trainer.export()
        let heads = directory + "/heads.safetensors"
        try MedusaHeadWeights.write(blocks: exported.blocks, lmHeads: exported.lmHeads, hiddenSize: 8,
                                    vocabularySize: 11, baseModel: "", to: heads)
        #expect(loadError(heads)?.problem == .badValue(
            key: "format", reason: "'medusa-tp-heads', expected 'medusa-tp-head-trainer' (not a head trainer checkpoint)"))
    }

    @Test("a failed save leaves the previous checkpoint whole")
    func failedSaveKeepsPrevious() throws {
        let directory = try makeTemporaryDirectory()
        let path = directory + "/trainer.safetensors"
        let trainer = try Self.randomTrainer(Self.resumable)
        try trainer.save(to: path)
        let saved = try Data(contentsOf: URL(fileURLWithPath: path))
        try Self.run(trainer, steps: 0..<2)
        // The temporary file's name is taken by a folder, so the save cannot even begin.
        try FileManager.default.createDirectory(
            atPath: "\(path).\(ProcessInfo.processInfo.processIdentifier).partial", withIntermediateDirectories: false)
        #expect {
            try trainer.save(to: path)
        } throws: { error in
            guard case .cannotWrite(let at, let reason) = error as? HeadTrainerError else { return false }
            return at == path && reason.contains("cannot create")
        }
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == saved)
        #expect(try HeadTrainer.load(from: path, baseLMHead: trainer.baseLMHead).step == 0)
        #expect(throws: HeadTrainerError.self) { try trainer.save(to: directory + "/no/such/folder/trainer.safetensors") }
    }

    // MARK: Schedule and clipping

    @Test("the learning rate warms up linearly, then decays along a cosine to 0")
    func schedule() {
        let c = HeadTrainer.Configuration(heads: 1, layers: 1, hiddenSize: 1, vocabularySize: 1, learningRate: 1e-3,
                                          warmupSteps: 10, totalSteps: 110)
        func close(_ step: Int, _ expected: Double) -> Bool {
            abs(Double(c.learningRate(atStep: step)) - expected) < 1e-9
        }
        #expect(close(0, 1e-4) && close(4, 5e-4) && close(9, 1e-3))
        #expect(close(10, 1e-3) && close(35, 1e-3 * 0.5 * (1 + cos(Double.pi / 4))) && close(60, 5e-4))
        #expect(c.learningRate(atStep: 109) > 0 && close(109, 1e-3 * 0.5 * (1 + cos(Double.pi * 99 / 100))))
        #expect(c.learningRate(atStep: 110) == 0 && c.learningRate(atStep: 1000) == 0)
        var flat = c
        flat.warmupSteps = 0
        #expect(flat.learningRate(atStep: 0) == 1e-3)
        #expect(c.lossWeight(head: 0) == 1 && abs(c.lossWeight(head: 2) - 0.64) < 1e-7)
    }

    @Test("clipping scales the gradient to the maximum norm and so bounds the update")
    func clipping() throws {
        // With epsilon 1, the first AdamW update is lr * g / (|g| + 1) per parameter: at most lr * |g|.
        var c = HeadTrainer.Configuration(heads: 2, layers: 1, hiddenSize: 8, vocabularySize: 11, ownLMHead: true,
                                          learningRate: 0.1, epsilon: 1, totalSteps: 10, gradientClip: 0.05)
        let batch = Self.randomBatch(c, rows: 20)
        func updateNorm(_ trainer: HeadTrainer) throws -> (update: Double, statistics: BatchStatistics) {
            let before = Self.parameters(trainer)
            let statistics = try trainer.train(batch)
            let after = Self.parameters(trainer)
            let update = zip(before, after).reduce(0.0) { $0 + Double($1.1 - $1.0) * Double($1.1 - $1.0) }.squareRoot()
            return (update, statistics)
        }
        let clipped = try Self.randomTrainer(c)
        let (update, statistics) = try updateNorm(clipped)
        let norm = try #require(statistics.gradientNorm)
        #expect(norm > 0.5, "the test needs a gradient well above the clip")
        #expect(abs(clipped.gradientNorm() - 0.05) < 1e-6)
        #expect(update <= 0.1 * 0.05 * 1.0001 && update > 0)
        #expect(statistics.learningRate == 0.1)

        c.gradientClip = 0
        let unclipped = try Self.randomTrainer(c)
        let free = try updateNorm(unclipped)
        #expect(free.statistics.gradientNorm == norm)
        #expect(abs(unclipped.gradientNorm() - norm) < 1e-6 * norm)
        #expect(free.update > 5 * update)
    }

    // MARK: Bad input

    @Test("bad configurations, LM heads and batches are errors; a non-finite gradient updates nothing")
    func badInput() throws {
        let c = HeadTrainer.Configuration(heads: 2, layers: 1, hiddenSize: 8, vocabularySize: 11, totalSteps: 10)
        func configurationError(_ change: (inout HeadTrainer.Configuration) -> Void) -> String? {
            var bad = c
            change(&bad)
            do {
                _ = try HeadTrainer(configuration: bad, baseLMHead: [Float](repeating: 0, count: 88))
                return nil
            } catch {
                guard case .badConfiguration(let field, _) = error else { return "\(error)" }
                return field
            }
        }
        #expect(configurationError { $0.heads = 0 } == "heads")
        #expect(configurationError { $0.layers = -1 } == "layers")
        #expect(configurationError { $0.beta1 = 1 } == "beta1")
        #expect(configurationError { $0.epsilon = 0 } == "epsilon")
        #expect(configurationError { $0.learningRate = .nan } == "learningRate")
        #expect(configurationError { $0.warmupSteps = 11 } == "warmupSteps")
        #expect(configurationError { $0.totalSteps = 0 } == "totalSteps")
        #expect(configurationError { $0.heads = Int.max / 2 } == "heads")
        #expect(throws: HeadTrainerError.badLMHead(expected: 88, found: 87)) {
            try HeadTrainer(configuration: c, baseLMHead: [Float](repeating: 0, count: 87))
        }

        let trainer = try Self.randomTrainer(c)
        let good = Self.randomBatch(c, rows: 4)
        var batch = good
        batch.targets[1][2] = 11
        #expect(throws: HeadTrainerError.targetOutOfVocabulary(head: 1, row: 2, token: 11, vocabulary: 11)) {
            try trainer.train(batch)
        }
        batch.targets[1][2] = -2
        #expect(throws: HeadTrainerError.targetOutOfVocabulary(head: 1, row: 2, token: -2, vocabulary: 11)) {
            try trainer.evaluate(batch)
        }
        for (bad, reason) in [
            (TrainingBatch(hidden: Array(good.hidden.dropLast()), targets: good.targets), "31 hidden values"),
            (TrainingBatch(hidden: [], targets: [[], []]), "0 hidden values"),
            (TrainingBatch(hidden: good.hidden, targets: [good.targets[0]]), "targets for 1 heads"),
            (TrainingBatch(hidden: good.hidden, targets: [good.targets[0], [1, 2]]), "head 1 has 2 targets"),
        ] {
            #expect {
                try trainer.train(bad)
            } throws: { error in
                guard case .badBatch(let text) = error as? HeadTrainerError else { return false }
                return text.hasPrefix(reason)
            }
        }

        var infinite = good
        infinite.hidden[5] = .infinity
        let before = Self.parameters(trainer)
        #expect(throws: HeadTrainerError.nonFiniteGradient(step: 0)) { try trainer.train(infinite) }
        #expect(Self.parameters(trainer) == before && trainer.step == 0)
        #expect(Array(trainer.firstMoments).allSatisfy { $0 == 0 })
    }
}
