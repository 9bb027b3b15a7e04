import Coordinator
import Foundation
import Medusa
import TestSupport
import Testing
import Worker

/// The serving engine: requests decoded together give what each gives alone (plain and Medusa,
/// greedy and seeded sampling, prompts longer than a step), stop strings, abandoned streams,
/// the queue bound, and shutdown.
@Suite struct BatchEngineTests {
    /// A synthetic Q4_1 model (with its byte-level tokenizer) written once per test.
    static func syntheticPath() throws -> String {
        try onThread {
            var synthetic = SyntheticLlama(config: SyntheticLlama.smallConfig, weightType: .q4_1, seed: 11)
            let path = try makeTemporaryDirectory() + "/tiny.gguf"
            try synthetic.write(to: path)
            return path
        }
    }

    /// Runs `body` on a thread with an 8 MiB stack and waits: the async tests' cooperative threads
    /// have small stacks, too small for the synthetic model writer and a forward's frames.
    static func onThread<T>(_ body: @escaping () throws -> T) throws -> T {
        let box = ResultBox<T>(body)
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            box.result = Result { try box.body() }
            done.signal()
        }
        thread.stackSize = 8 << 20
        thread.start()
        done.wait()
        return try box.result!.get()
    }

    static func open(_ path: String, sequences: Int, context: Int = 256, maxStepTokens: Int = 48) throws -> (LlamaModel, Tokenizer) {
        let gguf = try GGUFFile(path: path)
        let model = try LlamaModel(gguf: gguf, contextLength: context, maxStepTokens: maxStepTokens, threads: 2,
                                   sequences: sequences)
        return (model, try Tokenizer(gguf: gguf))
    }

    /// Distinct prompts of 5 to 120 tokens (the longer ones need several prefill steps).
    static let prompts: [[Int32]] = (0..<6).map { k in
        let length = 5 + k * 23
        return (0..<length).map { i -> Int32 in Int32((i * 7 + k * 31) % 250) }
    }

    /// What one sequence alone produces with `Generator` (or `MedusaGenerator`), as text.
    static func solo(
        _ path: String, prompt: [Int32], maxTokens: Int, sampling: SamplingParameters = .init(temperature: 0), seed: UInt64 = 0,
        medusa: ((LlamaModel) throws -> MedusaGenerator)? = nil
    ) throws -> (text: String, tokens: [Int32], reason: FinishReason) {
        try onThread { try soloHere(path, prompt: prompt, maxTokens: maxTokens, sampling: sampling, seed: seed, medusa: medusa) }
    }

    private static func soloHere(
        _ path: String, prompt: [Int32], maxTokens: Int, sampling: SamplingParameters, seed: UInt64,
        medusa: ((LlamaModel) throws -> MedusaGenerator)?
    ) throws -> (text: String, tokens: [Int32], reason: FinishReason) {
        let (model, tokenizer) = try open(path, sequences: 1)
        var sampler = Sampler(parameters: sampling, seed: seed)
        let stop = { (t: Int32) in tokenizer.isEndOfGeneration(t) }
        let result = try medusa.map { try $0(model).generate(prompt: prompt, maxTokens: maxTokens, sampler: &sampler, stopAt: stop) }
            ?? Generator(model: model).generate(prompt: prompt, maxTokens: maxTokens, sampler: &sampler, stopAt: stop)
        return (tokenizer.decode(result.tokens), result.tokens, result.finishReason)
    }

    /// Runs `engine.run()` on a thread of its own (as rank 0's engine thread) until `stop`.
    final class Running: @unchecked Sendable {
        let engine: BatchEngine
        private let done = DispatchSemaphore(value: 0)
        private(set) var error: (any Error)?

        init(_ engine: BatchEngine) {
            self.engine = engine
            let thread = Thread { [self] in
                do { try engine.run() } catch { self.error = error }
                done.signal()
            }
            thread.stackSize = 8 << 20
            thread.start()
        }

        func stop(grace: Double = 5) {
            engine.shutdown(grace: grace)
            done.wait()
        }
    }

    static func collect(_ stream: AsyncStream<CompletionEvent>) async -> (text: String, outcome: CompletionOutcome?) {
        var text = ""
        var outcome: CompletionOutcome?
        for await event in stream {
            switch event {
            case .text(let t):
                #expect(!t.isEmpty)
                text += t
            case .finished(let o): outcome = o
            }
        }
        return (text, outcome)
    }

    /// Submits every request at once and waits for all answers.
    static func runAll(_ engine: BatchEngine, _ requests: [CompletionRequest]) async throws -> [(text: String, outcome: CompletionOutcome?)] {
        let streams = try requests.map { try engine.submit($0) }
        return await withTaskGroup(of: (Int, (String, CompletionOutcome?)).self) { group in
            for (i, s) in streams.enumerated() { group.addTask { (i, await collect(s)) } }
            var out = [(text: String, outcome: CompletionOutcome?)](repeating: ("", nil), count: requests.count)
            for await (i, r) in group { out[i] = r }
            return out
        }
    }

    /// Prompts join in chunks of 48 (the step limit) or 7 (the chunk while others decode).
    @Test("six requests over four slots, plain and Medusa: each answer is the one it gets alone")
    func batchedEqualsSolo() async throws {
        let path = try Self.syntheticPath()
        for useMedusa in [false, true] {
            let (model, tokenizer) = try Self.open(path, sequences: 4)
            let heads = RandomHeads.make(heads: 3, layers: 1, hidden: model.config.hiddenSize, vocabulary: nil)
            let tree = try CandidateTree(choices: [[0], [1], [2], [0, 0], [1, 0], [0, 1], [0, 0, 0]])
            let setup = try useMedusa ? MedusaSetup(source: MedusaHeads(weights: heads, model: model), tree: tree) : nil
            let engine = try BatchEngine(model: model, tokenizer: tokenizer, medusa: setup,
                                         configuration: .init(maxSequences: 4, maxQueued: 8, prefillChunk: useMedusa ? 7 : 64))
            let running = Running(engine)
            // Greedy requests, plus two seeded sampled ones on the plain engine.
            var requests = Self.prompts.enumerated().map { k, p in
                CompletionRequest(prompt: p, maxTokens: 20 + 5 * k, sampling: .init(temperature: 0))
            }
            if !useMedusa {
                requests[1].sampling = .init(temperature: 0.9, topK: 0, topP: 0.95)
                requests[1].seed = 5
                requests[4].sampling = .init(temperature: 1.2, topK: 20, topP: 1)
                requests[4].seed = 9
            }
            let answers = try await Self.runAll(engine, requests)
            running.stop()
            #expect(running.error == nil)
            #expect(engine.load.active == 0 && engine.load.queued == 0)
            let generated = answers.map { $0.outcome?.completionTokens ?? 0 }
            #expect(generated.reduce(0, +) >= 60, "the synthetic model says enough to compare: \(generated)")
            for (request, answer) in zip(requests, answers) {
                let medusaMaker: ((LlamaModel) throws -> MedusaGenerator)? = useMedusa ? { m in
                    try MedusaGenerator(model: m, source: MedusaHeads(weights: heads, model: m), tree: tree, rule: .greedy)
                } : nil
                let alone = try Self.solo(path, prompt: request.prompt, maxTokens: request.maxTokens!, sampling: request.sampling,
                                          seed: request.seed, medusa: medusaMaker)
                #expect(answer.text == alone.text, "Medusa \(useMedusa), prompt of \(request.prompt.count)")
                let outcome = try #require(answer.outcome)
                #expect(outcome.completionTokens == alone.tokens.count)
                #expect(outcome.finishReason == alone.reason)
                #expect(outcome.promptTokens == request.prompt.count)
                if useMedusa && !alone.tokens.isEmpty { #expect(outcome.steps <= alone.tokens.count) }
            }
        }
    }

    @Test("a batch job records each token with the hidden state that chose it, as Generator does alone")
    func recordsHiddenStates() throws {
        let path = try Self.syntheticPath()
        let (model, tokenizer) = try Self.open(path, sequences: 3)
        let engine = try BatchEngine(model: model, tokenizer: tokenizer, configuration: .init(maxSequences: 3, maxQueued: 8))
        var recorded: [Int: ([Int32], [Float])] = [:]
        engine.onSequenceEnd = { request, tokens, hidden in recorded[request.tag] = (tokens, hidden) }
        let streams = try Self.prompts.indices.map { k in
            try engine.submit(CompletionRequest(prompt: Self.prompts[k], maxTokens: 30, sampling: .init(temperature: 0.8, topK: 0, topP: 1),
                                                seed: UInt64(k), tag: k, recordsHiddenStates: true))
        }
        // A dropped stream cancels its request: keep them until the run ends.
        try withExtendedLifetime(streams) { try Self.onThread { try engine.run(untilIdle: true) } }
        #expect(recorded.count == Self.prompts.count)
        let (single, _) = try Self.open(path, sequences: 1)
        for (k, prompt) in Self.prompts.enumerated() {
            let alone = try Self.onThread {
                var sampler = Sampler(parameters: .init(temperature: 0.8, topK: 0, topP: 1), seed: UInt64(k))
                return try Generator(model: single).generateWithHiddenStates(
                    prompt: prompt, maxTokens: 30, sampler: &sampler, stopAt: tokenizer.isEndOfGeneration)
            }
            let got = try #require(recorded[k])
            #expect(got.0 == alone.tokens, "prompt \(k)")
            #expect(got.1 == alone.hidden, "prompt \(k): the hidden states are bit-identical")
        }
    }

    @Test("a stop string ends the answer before it, even when it spans tokens")
    func stopStrings() async throws {
        let path = try Self.syntheticPath()
        let prompt = Self.prompts[2]
        let alone = try Self.solo(path, prompt: prompt, maxTokens: 40)
        let characters = Array(alone.text)
        try #require(characters.count >= 20, "the synthetic model's answer is long enough")
        let stop = String(characters[12..<15])
        let cut = try #require(alone.text.range(of: stop))
        let (model, tokenizer) = try Self.open(path, sequences: 2)
        let engine = try BatchEngine(model: model, tokenizer: tokenizer, configuration: .init(maxSequences: 2))
        let running = Running(engine)
        let answers = try await Self.runAll(engine, [
            CompletionRequest(prompt: prompt, maxTokens: 40, sampling: .init(temperature: 0), stop: ["\u{1}never", stop]),
            CompletionRequest(prompt: prompt, maxTokens: 40, sampling: .init(temperature: 0), stop: ["\u{1}never"]),
        ])
        running.stop()
        #expect(answers[0].text == String(alone.text[..<cut.lowerBound]))
        #expect(answers[0].outcome?.finishReason == .stop)
        #expect(answers[1].text == alone.text)
        #expect(answers[1].outcome?.finishReason == alone.reason)
    }

    @Test("a dropped stream frees its slot at the next step; the engine goes on serving")
    func abandonedStream() async throws {
        let path = try Self.syntheticPath()
        let (model, tokenizer) = try Self.open(path, sequences: 1, context: 256)
        let engine = try BatchEngine(model: model, tokenizer: tokenizer, configuration: .init(maxSequences: 1, maxQueued: 4))
        let running = Running(engine)
        do {
            let stream = try engine.submit(CompletionRequest(prompt: [1, 2, 3], maxTokens: nil, sampling: .init(temperature: 1, topK: 0, topP: 1)))
            for await event in stream {
                if case .text = event { break }  // the client reads a little and goes away
            }
        }
        var waited = 0
        while engine.load.active > 0 && waited < 500 {
            try await Task.sleep(nanoseconds: 10_000_000)
            waited += 1
        }
        #expect(engine.load.active == 0, "the abandoned sequence left")
        let next = try await Self.runAll(engine, [CompletionRequest(prompt: Self.prompts[0], maxTokens: 10, sampling: .init(temperature: 0))])
        running.stop()
        #expect(next[0].text == (try Self.solo(path, prompt: Self.prompts[0], maxTokens: 10)).text)
    }

    @Test("bad requests are refused with a reason; the queue is bounded; shutdown refuses and cancels")
    func rejections() async throws {
        let path = try Self.syntheticPath()
        let (model, tokenizer) = try Self.open(path, sequences: 1, context: 64)
        let engine = try BatchEngine(model: model, tokenizer: tokenizer, configuration: .init(maxSequences: 1, maxQueued: 1))
        let greedy = SamplingParameters(temperature: 0)
        #expect(throws: EngineRejection.emptyPrompt) { try engine.submit(.init(prompt: [], maxTokens: 4, sampling: greedy)) }
        #expect(throws: EngineRejection.promptTooLong(tokens: 64, context: 64)) {
            try engine.submit(.init(prompt: [Int32](repeating: 5, count: 64), maxTokens: nil, sampling: greedy))
        }
        #expect(throws: EngineRejection.tooManyTokens(prompt: 10, maxTokens: 60, context: 64)) {
            try engine.submit(.init(prompt: [Int32](repeating: 5, count: 10), maxTokens: 60, sampling: greedy))
        }
        #expect(throws: EngineRejection.badMaxTokens(0)) { try engine.submit(.init(prompt: [5], maxTokens: 0, sampling: greedy)) }
        // Any client number: no overflow in the check or in its message.
        #expect(throws: EngineRejection.tooManyTokens(prompt: 10, maxTokens: Int.max, context: 64)) {
            try engine.submit(.init(prompt: [Int32](repeating: 5, count: 10), maxTokens: Int.max, sampling: greedy))
        }
        #expect(EngineRejection.tooManyTokens(prompt: 10, maxTokens: 60, context: 64).description.contains("max_tokens"))
        #expect(EngineRejection.tooManyTokens(prompt: 10, maxTokens: Int.max, context: 64).description.contains("\(Int.max)"))
        // Engine not running yet: one request takes the free slot's place, one waits, the next is refused.
        let first = try engine.submit(.init(prompt: [5, 6], maxTokens: nil, sampling: greedy))
        let second = try engine.submit(.init(prompt: [7, 8], maxTokens: 5, sampling: greedy))
        #expect(throws: EngineRejection.queueFull(limit: 1)) { try engine.submit(.init(prompt: [9], maxTokens: 5, sampling: greedy)) }
        let running = Running(engine)
        var firstText = ""
        for await event in first {
            if case .text(let t) = event { firstText += t }
            if !firstText.isEmpty { break }
        }
        running.stop(grace: 0)
        #expect(running.error == nil)
        #expect(throws: EngineRejection.shuttingDown) { try engine.submit(.init(prompt: [5], maxTokens: 4, sampling: greedy)) }
        let cancelled = await Self.collect(second)
        #expect(cancelled.outcome?.finishReason == .length, "a request still waiting at shutdown ends")
    }

    @Test("SmolLM2: four chat requests together answer as each does alone")
    func smolLM2Batched() async throws {
        let path = try TestData.requireModel()
        let questions = ["What is the capital of France?", "Name three colours.", "Write a haiku about the sea.",
                         "How many legs does a spider have?"]
        let loaded = try LoadedModel(path: path, contextLength: 512, threads: 2, sequences: 4)
        let engine = try BatchEngine(model: loaded.model, tokenizer: loaded.tokenizer, configuration: .init(maxSequences: 4))
        let requests = questions.map {
            CompletionRequest(prompt: loaded.userMessageTokens($0), maxTokens: 24, sampling: .init(temperature: 0))
        }
        let running = Running(engine)
        let answers = try await Self.runAll(engine, requests)
        running.stop()
        let single = try LoadedModel(path: path, contextLength: 512, threads: 2)
        for (request, answer) in zip(requests, answers) {
            let alone = try Self.onThread {
                var sampler = Sampler(parameters: .init(temperature: 0), seed: 0)
                return try Generator(model: single.model).generate(
                    prompt: request.prompt, maxTokens: 24, sampler: &sampler, stopAt: single.tokenizer.isEndOfGeneration)
            }
            #expect(answer.text == single.tokenizer.decode(alone.tokens))
            #expect(answer.outcome?.completionTokens == alone.tokens.count)
        }
        #expect(answers[0].text.contains("Paris"))
    }
}

/// A body run on another thread and its result (the caller waits for it, so nothing is shared at once).
final class ResultBox<T>: @unchecked Sendable {
    let body: () throws -> T
    var result: Result<T, any Error>?
    init(_ body: @escaping () throws -> T) { self.body = body }
}
