import Coordinator
import Foundation
import Medusa
import TestSupport
import Testing
import Worker

@Suite struct DistillationTests {
    static let provenance = DistillationSet.Provenance(
        model: "tiny.gguf", modelSHA256: "ab", hiddenSize: 4, vocabularySize: 300, promptsSHA256: "cd",
        maxTokens: 8, temperature: 0, seed: 1)

    @Test("answers are appended, survive reopening, and give each head its shifted targets")
    func appendReopenTargets() throws {
        let dir = try makeTemporaryDirectory() + "/distill"
        var set: DistillationSet? = try DistillationSet(directory: dir, provenance: Self.provenance)
        try set?.append(prompt: 3, hidden: (0..<12).map(Float.init), tokens: [10, 11, 12])
        try set?.append(prompt: 5, hidden: (12..<20).map(Float.init), tokens: [20, 21])
        // One writer at a time.
        #expect(throws: DistillationError.self) { try DistillationSet(directory: dir, provenance: Self.provenance) }
        let answers = try #require(set).answers
        set = nil
        let reopened = try DistillationSet(directory: dir, provenance: Self.provenance)
        #expect(reopened.answers == answers)
        #expect(reopened.answered == [.init(prompt: 3, variant: 0), .init(prompt: 5, variant: 0)])
        let (hidden, tokens) = try reopened.load()
        #expect(hidden == (0..<20).map(Float.init))
        #expect(tokens == [10, 11, 12, 20, 21])
        // Head 0 learns the next answer token, head 1 the one after; never across answers.
        #expect(reopened.targets(tokens: tokens, heads: 2) == [[11, 12, -1, 21, -1], [12, -1, -1, -1, -1]])
    }

    @Test("a prompt's several answers are kept apart: each has its variant, targets stop at its end")
    func variants() throws {
        let dir = try makeTemporaryDirectory() + "/distill"
        var set: DistillationSet? = try DistillationSet(directory: dir, provenance: Self.provenance)
        try set?.append(prompt: 2, hidden: [Float](repeating: 0, count: 8), tokens: [7, 8])
        try set?.append(prompt: 2, variant: 1, hidden: [Float](repeating: 1, count: 8), tokens: [9, 10])
        set = nil
        let reopened = try DistillationSet(directory: dir, provenance: Self.provenance)
        #expect(reopened.answered == [.init(prompt: 2, variant: 0), .init(prompt: 2, variant: 1)])
        #expect(reopened.targets(tokens: try reopened.load().tokens, heads: 1) == [[8, -1, 10, -1]])
        // Answers written before variants existed read as first answers.
        let old = try JSONDecoder().decode(DistillationSet.Answer.self, from: Data("{\"prompt\": 4, \"start\": 0, \"count\": 1}".utf8))
        #expect(old == .init(prompt: 4, variant: 0, start: 0, count: 1))
    }

    @Test("an interrupted append is dropped on reopening; other settings and damage are errors")
    func interruptedAndMismatched() throws {
        let dir = try makeTemporaryDirectory() + "/distill"
        var set: DistillationSet? = try DistillationSet(directory: dir, provenance: Self.provenance)
        try set?.append(prompt: 0, hidden: [Float](repeating: 1, count: 8), tokens: [1, 2])
        set = nil
        // Rows written without their answers.jsonl line, and a torn line.
        let hidden = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/hidden.f32"))
        try hidden.seekToEnd()
        try hidden.write(contentsOf: Data(count: 16))
        try hidden.close()
        let answers = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/answers.jsonl"))
        try answers.seekToEnd()
        try answers.write(contentsOf: Data("{\"prompt\": 1, \"sta".utf8))
        try answers.close()
        var reopened: DistillationSet? = try DistillationSet(directory: dir, provenance: Self.provenance)
        #expect(reopened?.rowCount == 2)
        #expect(try reopened?.load().hidden.count == 8)
        try reopened?.append(prompt: 1, hidden: [Float](repeating: 2, count: 4), tokens: [3])
        reopened = nil
        #expect(try DistillationSet(directory: dir, provenance: Self.provenance).load().tokens == [1, 2, 3])

        var other = Self.provenance
        other.maxTokens = 9
        #expect(throws: DistillationError.self) { try DistillationSet(directory: dir, provenance: other) }
        try Data("{\"prompt\": 0, \"start\": 0, \"count\": 2}\nxx\n{\"prompt\": 1, \"start\": 2, \"count\": 1}\n".utf8)
            .write(to: URL(fileURLWithPath: dir + "/answers.jsonl"))
        do {
            _ = try DistillationSet(directory: dir, provenance: Self.provenance)
            Issue.record("a damaged middle line was accepted")
        } catch {
            #expect("\(error)".contains("line 2 is damaged"))
        }
    }

    @Test("generation with hidden states: each token's row is the state whose logits chose it")
    func hiddenStatesMatchTheLogits() throws {
        var synthetic = SyntheticLlama(config: SyntheticLlama.smallConfig, weightType: .q8_0, seed: 7)
        let path = try makeTemporaryDirectory() + "/tiny.gguf"
        try synthetic.write(to: path)
        let model = try LlamaModel(gguf: GGUFFile(path: path), contextLength: 128, threads: 1)
        let generator = Generator(model: model)
        // The synthetic model repeats one token when greedy; sampled hot, its answers vary.
        let parameters = SamplingParameters(temperature: 20, topK: 8, topP: 1)
        let prompt: [Int32] = [72, 101, 108, 108, 111, 32, 116, 114, 101, 101]
        var sampler = Sampler(parameters: parameters, seed: 4)
        let plain = try generator.generate(prompt: prompt, maxTokens: 12, sampler: &sampler, stopAt: { _ in false })
        // A token that first appears a few places in stands for the end of generation.
        let at = try #require(plain.tokens.indices.first { $0 >= 2 && plain.tokens.firstIndex(of: plain.tokens[$0]) == $0 })
        let stop = plain.tokens[at]
        sampler = Sampler(parameters: parameters, seed: 4)
        let r = try generator.generateWithHiddenStates(prompt: prompt, maxTokens: 12, sampler: &sampler, stopAt: { $0 == stop })
        #expect(r.tokens == Array(plain.tokens.prefix(at + 1)), "the end token is kept as data")
        #expect(r.finish == .stop)
        // Row j is the last hidden state of the prompt plus the first j tokens: what chose token j.
        let h = model.config.hiddenSize
        for j in r.tokens.indices {
            model.cache.reset()
            try generator.prefill(prompt + r.tokens.prefix(j))
            #expect(Array(r.hidden[(j * h)..<((j + 1) * h)]) == generator.lastHidden, "row \(j)")
        }
    }
}
