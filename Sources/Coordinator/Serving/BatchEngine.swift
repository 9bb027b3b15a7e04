import Foundation
import Medusa
import Metrics
import Worker

/// One completion a client asked for, in tokens.
public struct CompletionRequest: Sendable {
    /// The prompt's token ids (chat template already applied for chat requests).
    public var prompt: [Int32]
    /// At most this many tokens; nil: until end of generation or until the context is full.
    public var maxTokens: Int?
    public var sampling: SamplingParameters
    public var seed: UInt64
    /// Stop strings: generation ends before the first occurrence of any (finish reason `stop`).
    public var stop: [String]
    /// The caller's number for this request (batch jobs: the prompt's index); the engine only passes it on.
    public var tag: Int
    /// Batch jobs (self-distillation): keep every chosen token, the end-of-generation one included,
    /// with the final-normed hidden state whose logits chose it, for `BatchEngine.onSequenceEnd`.
    /// Plain decoding only (an engine with Medusa refuses it).
    public var recordsHiddenStates: Bool

    public init(prompt: [Int32], maxTokens: Int?, sampling: SamplingParameters, seed: UInt64 = 0, stop: [String] = [],
                tag: Int = 0, recordsHiddenStates: Bool = false) {
        self.prompt = prompt
        self.maxTokens = maxTokens
        self.sampling = sampling
        self.seed = seed
        self.stop = stop
        self.tag = tag
        self.recordsHiddenStates = recordsHiddenStates
    }
}

/// What a submitted request's stream delivers.
public enum CompletionEvent: Sendable, Equatable {
    /// Newly generated text, never empty (text a stop string ends is never sent).
    case text(String)
    /// The last event; the stream ends after it.
    case finished(CompletionOutcome)
}

public struct CompletionOutcome: Sendable, Equatable {
    public var finishReason: FinishReason
    public var promptTokens: Int
    public var completionTokens: Int
    /// Collective steps that produced this request's tokens after its prompt.
    public var steps: Int
}

/// Why a request was refused before it was queued.
public enum EngineRejection: Error, CustomStringConvertible, Sendable, Equatable {
    case emptyPrompt
    case promptTooLong(tokens: Int, context: Int)
    case tooManyTokens(prompt: Int, maxTokens: Int, context: Int)
    case badMaxTokens(Int)
    case queueFull(limit: Int)
    case shuttingDown

    public var description: String {
        switch self {
        case .emptyPrompt: "the prompt is empty"
        case .promptTooLong(let t, let c):
            "the prompt is \(t) tokens but the context holds \(c) (the server's --ctx); shorten the prompt"
        case .tooManyTokens(let p, let m, let c):
            "this server's context holds \(c) tokens, but \(p) in the prompt and \(m) in max_tokens were requested; lower max_tokens or shorten the prompt"
        case .badMaxTokens(let m): "max_tokens must be at least 1, got \(m)"
        case .queueFull(let limit):
            "the server is busy: every sequence slot is in use and \(limit) requests are already waiting; retry later"
        case .shuttingDown: "the server is shutting down"
        }
    }
}

/// Medusa decoding for every request of an engine.
public struct MedusaSetup {
    public var source: any CandidateSource
    public var tree: CandidateTree
    /// An acceptance rule for every request; nil: greedy at temperature 0, lossless sampling above.
    public var typical: AcceptanceRule?

    public init(source: any CandidateSource, tree: CandidateTree, typical: AcceptanceRule? = nil) {
        self.source = source
        self.tree = tree
        self.typical = typical
    }
}

/// Continuous batching on rank 0: every active sequence shares each collective forward.
///
/// Requests arrive from any thread (`submit`) and wait in a bounded queue; the engine thread
/// (`run`, rank 0's MPI thread) admits them into free sequence slots at the next step. A step
/// carries one segment per active sequence: a chunk of its prompt (prefill), its next token (plain
/// decoding) or its candidate tree (Medusa), each with its own positions, mask block and KV cache
/// (`LlamaModel.forward(...segments:)`), so sequences never see each other and each row's result is
/// what a step of that sequence alone gives: greedy outputs do not depend on the company a request
/// keeps. Finished and abandoned sequences leave after the step; their slots take new requests.
public final class BatchEngine: @unchecked Sendable {
    // `lock` guards the fields marked "shared"; everything else belongs to the engine thread.
    public struct Configuration: Sendable {
        /// Sequence slots: requests decoded together (the model needs at least this many caches).
        public var maxSequences: Int
        /// Requests that may wait for a slot; beyond it `submit` refuses with `.queueFull`.
        public var maxQueued: Int
        /// Prompt tokens one step takes while other sequences are decoding: a long prompt then
        /// joins over several steps instead of stalling everyone's next token for a whole prefill.
        /// Alone, a prompt goes in steps as large as the model allows.
        public var prefillChunk: Int

        public init(maxSequences: Int = 8, maxQueued: Int = 64, prefillChunk: Int = 64) {
            self.maxSequences = maxSequences
            self.maxQueued = maxQueued
            self.prefillChunk = prefillChunk
        }
    }

    public let model: LlamaModel
    public let tokenizer: Tokenizer
    public let medusa: MedusaSetup?
    public let configuration: Configuration
    /// Called on the engine thread when a request that `recordsHiddenStates` ends (not when its
    /// client abandoned it): the request, its tokens (with the end-of-generation token when one
    /// ended it) and their hidden states [tokens, hidden].
    public var onSequenceEnd: ((CompletionRequest, [Int32], [Float]) -> Void)?

    private let lock = NSCondition()
    private var queue: [Waiting] = []            // shared
    private var cancelled = Set<Int>()           // shared
    private var nextID = 0                       // shared
    private var shutdownDeadline: Double?        // shared: uptime seconds
    private var ready = false                    // shared
    private var runningCount = 0                 // shared: active sequences, for `activeSequences`

    private var slots: [ActiveSequence?]
    private let metrics = EngineMetrics()
    private let profile = StepProfile()
    // Step scratch, allocated once: tokens, positions, hidden rows gathered for the LM head, logits.
    private var gathered: [Float]
    private var logits: [Float]
    private var nodeLogits: [Float]

    public init(model: LlamaModel, tokenizer: Tokenizer, medusa: MedusaSetup? = nil,
                configuration: Configuration = .init()) throws {
        guard configuration.maxSequences >= 1, configuration.maxQueued >= 0, configuration.prefillChunk >= 1 else {
            throw EngineSetupError("--max-sequences and the prefill chunk must be at least 1, the queue length at least 0")
        }
        guard model.caches.count >= configuration.maxSequences else {
            throw EngineSetupError("the model has \(model.caches.count) sequence caches but the engine needs \(configuration.maxSequences)")
        }
        if let medusa { try medusa.tree.check(headCount: medusa.source.depth) }
        self.model = model
        self.tokenizer = tokenizer
        self.medusa = medusa
        self.configuration = configuration
        slots = [ActiveSequence?](repeating: nil, count: configuration.maxSequences)
        let h = model.config.hiddenSize, v = model.config.vocabularySize
        gathered = [Float](repeating: 0, count: configuration.maxSequences * h)
        logits = [Float](repeating: 0, count: configuration.maxSequences * v)
        nodeLogits = [Float](repeating: 0, count: (medusa?.tree.count ?? 0) * v)
    }

    /// Tokens one sequence's cache holds.
    public var contextLength: Int { model.contextLength }

    /// True once `run` has synchronised with every rank.
    public var isReady: Bool { lock.withLock { ready } }

    /// Sequences being decoded and requests waiting for a slot.
    public var load: (active: Int, queued: Int) { lock.withLock { (runningCount, queue.count) } }

    /// Checks and queues a request; thread-safe. The stream yields its text and then its outcome.
    /// When the consumer drops the stream (a client gone), the sequence is freed at the next step.
    public func submit(_ request: CompletionRequest) throws(EngineRejection) -> AsyncStream<CompletionEvent> {
        precondition(!(request.recordsHiddenStates && medusa != nil), "hidden states are recorded with plain decoding only")
        let context = model.contextLength
        guard !request.prompt.isEmpty else { throw .emptyPrompt }
        guard request.prompt.count < context else { throw .promptTooLong(tokens: request.prompt.count, context: context) }
        if let m = request.maxTokens {
            guard m >= 1 else { throw .badMaxTokens(m) }
            // Compared without adding: max_tokens is any integer a client sends.
            guard m <= context - request.prompt.count else {
                throw .tooManyTokens(prompt: request.prompt.count, maxTokens: m, context: context)
            }
        }
        let (stream, continuation) = AsyncStream.makeStream(of: CompletionEvent.self)
        lock.lock()
        defer { lock.unlock() }
        guard shutdownDeadline == nil else { throw .shuttingDown }
        guard queue.count < configuration.maxQueued + max(0, configuration.maxSequences - runningCount) else {
            throw .queueFull(limit: configuration.maxQueued)
        }
        let id = nextID
        nextID += 1
        queue.append(Waiting(id: id, request: request, continuation: continuation))
        metrics.queued.record(queue.count)
        continuation.onTermination = { [weak self] reason in
            guard case .cancelled = reason, let self else { return }
            self.lock.withLock {
                self.cancelled.insert(id)
                self.lock.signal()
            }
        }
        lock.signal()
        return stream
    }

    /// Stops admitting requests (`submit` throws `.shuttingDown`); what is queued or running may
    /// finish within `grace` seconds, then is cancelled (finish reason `length`); then `run` returns.
    public func shutdown(grace: Double = 5) {
        lock.withLock {
            if shutdownDeadline == nil { shutdownDeadline = Self.now() + max(0, grace) }
            lock.signal()
        }
    }

    /// Rank 0's engine loop, on the thread that makes the MPI calls: synchronises with every rank,
    /// then runs steps until `shutdown` and everything in flight has ended (with `untilIdle`, as
    /// soon as nothing is queued or running: a batch job submits everything first). Does not end
    /// the group.
    public func run(untilIdle: Bool = false) throws {
        try model.synchronizeGroup()
        lock.withLock { ready = true }
        model.profile = profile
        defer { model.profile = nil }
        while true {
            guard let deadline = admit(untilIdle: untilIdle) else { break }
            if let deadline, Self.now() >= deadline {
                cancelEverything()
                break
            }
            try step()
        }
    }

    // MARK: - Admission

    private struct Waiting {
        let id: Int
        let request: CompletionRequest
        let continuation: AsyncStream<CompletionEvent>.Continuation
    }

    /// Drops abandoned sequences, moves queued requests into free slots, and waits while there is
    /// nothing to do. Returns nil when the loop should end, else the shutdown deadline if any.
    private func admit(untilIdle: Bool) -> Double?? {
        lock.lock()
        defer { lock.unlock() }
        while true {
            for (i, s) in slots.enumerated() {
                if let s, cancelled.contains(s.id) {
                    cancelled.remove(s.id)
                    release(slot: i, reason: nil)
                }
            }
            queue.removeAll { waiting in
                guard cancelled.contains(waiting.id) else { return false }
                cancelled.remove(waiting.id)
                return true
            }
            for i in slots.indices where slots[i] == nil && !queue.isEmpty {
                let waiting = queue.removeFirst()
                slots[i] = ActiveSequence(id: waiting.id, slot: i, request: waiting.request, continuation: waiting.continuation,
                                          tokenizer: tokenizer, rule: rule(for: waiting.request.sampling),
                                          hiddenSize: model.config.hiddenSize)
                model.caches[i].reset()
                metrics.promptTokens.increment(by: waiting.request.prompt.count)
            }
            runningCount = slots.count { $0 != nil }
            metrics.active.record(runningCount)
            metrics.queued.record(queue.count)
            if runningCount > 0 { return .some(shutdownDeadline) }
            if shutdownDeadline != nil || untilIdle { return nil }
            lock.wait()
        }
    }

    private func rule(for sampling: SamplingParameters) -> AcceptanceRule {
        if let typical = medusa?.typical { return typical }
        return sampling.isGreedy ? .greedy : .sample
    }

    /// Ends the sequence in `slot` with `reason` (nil: its client is gone; nothing more is sent).
    private func release(slot: Int, reason: FinishReason?) {
        guard let s = slots[slot] else { return }
        if let reason {
            if s.request.recordsHiddenStates { onSequenceEnd?(s.request, s.recordedTokens, s.recordedHidden) }
            s.flushText()
            s.continuation.yield(.finished(CompletionOutcome(
                finishReason: reason, promptTokens: s.request.prompt.count, completionTokens: s.generated.count,
                steps: s.steps)))
        }
        s.continuation.finish()
        slots[slot] = nil
    }

    /// Ends every running and queued request (shutdown's grace is over). Sequences are released
    /// outside the lock: `onSequenceEnd` may call back into the engine.
    private func cancelEverything() {
        for i in slots.indices { release(slot: i, reason: .length) }
        let waiting = lock.withLock {
            let all = queue
            queue.removeAll()
            runningCount = 0
            return all
        }
        for w in waiting {
            w.continuation.yield(.finished(CompletionOutcome(
                finishReason: .length, promptTokens: w.request.prompt.count, completionTokens: 0, steps: 0)))
            w.continuation.finish()
        }
        metrics.active.record(0)
        metrics.queued.record(0)
    }

    // MARK: - One collective step

    /// What one sequence put into the step.
    private enum Part {
        case prefill(count: Int, last: Bool)
        case decode
        case tree(CandidateTree, tokens: [Int32])
    }

    private func step() throws {
        let budget = model.maxStepTokens
        let anyDecoding = slots.contains { $0?.isDecoding == true }
        var prefillRoom = anyDecoding ? configuration.prefillChunk : budget
        var tokens: [Int32] = []
        var positions: [Int32] = []
        var segments: [StepSegment] = []
        var parts: [(slot: Int, part: Part, start: Int)] = []
        var masks: [(start: Int, mask: TreeMask)] = []
        // Decoding sequences first (a token or a tree each), then prompt chunks in the room left.
        for decoding in [true, false] {
            for (i, s) in slots.enumerated() {
                guard let s, s.isDecoding == decoding else { continue }
                let room = budget - tokens.count
                guard room > 0 else { break }
                let cache = model.caches[i]
                let start = tokens.count
                if !decoding {
                    let n = min(room, prefillRoom, s.promptLeft.count)
                    guard n > 0 else { break }
                    prefillRoom -= n
                    tokens += s.promptLeft.prefix(n)
                    positions += (0..<n).map { Int32(cache.committed + $0) }
                    masks.append((start, .causal(n)))
                    parts.append((i, .prefill(count: n, last: n == s.promptLeft.count), start))
                    segments.append(StepSegment(sequence: i, count: n))
                } else if let medusa {
                    let tree = medusa.tree.prefix(min(cache.available, room))
                    let guesses = propose(medusa.source, s, topK: tree.topK)
                    let nodes = (0..<tree.count).map { node -> Int32 in
                        guard node > 0 else { return s.root }
                        let guess = guesses[tree.depths[node] - 1]
                        let rank = tree.paths[node].last!
                        return rank < guess.count ? guess[rank] : s.root
                    }
                    tokens += nodes
                    positions += tree.depths.map { Int32(cache.committed + $0) }
                    masks.append((start, tree.mask))
                    parts.append((i, .tree(tree, tokens: nodes), start))
                    segments.append(StepSegment(sequence: i, count: tree.count))
                } else {
                    tokens.append(s.root)
                    positions.append(Int32(cache.committed))
                    masks.append((start, .causal(1)))
                    parts.append((i, .decode, start))
                    segments.append(StepSegment(sequence: i, count: 1))
                }
            }
        }
        var mask = TreeMask(count: tokens.count)
        for (start, block) in masks {
            for r in 0..<block.count {
                for c in 0...r where block[r, c] { mask[start + r, start + c] = true }
            }
        }

        let allreduceBefore = profile[.allreduce]
        let began = Self.now()
        let rows = try tokens.withUnsafeBufferPointer { t in
            try positions.withUnsafeBufferPointer { p in
                try model.forward(tokens: t, positions: p, mask: mask, segments: segments)
            }
        }
        metrics.stepSeconds.recordSeconds(Self.now() - began)
        metrics.allreduceSeconds.recordSeconds(profile[.allreduce] - allreduceBefore)

        // Sequences whose next token comes from one row: their rows go through the LM head together.
        let h = model.config.hiddenSize, v = model.config.vocabularySize
        var single: [(slot: Int, row: Int)] = []
        for (slot, part, start) in parts {
            let s = slots[slot]!
            let cache = model.caches[slot]
            switch part {
            case .prefill(let count, let last):
                cache.commit(count: count)
                s.promptLeft.removeFirst(count)
                if last { single.append((slot, start + count - 1)) }
            case .decode:
                cache.commit(count: 1)
                single.append((slot, start))
            case .tree(let tree, let nodes):
                let verdict = verify(tree, tokens: nodes, rows: rows.baseAddress! + start * h, sequence: s)
                cache.commit(kept: verdict.path)
                s.hidden.withUnsafeMutableBufferPointer {
                    $0.baseAddress!.update(from: rows.baseAddress! + (start + verdict.path.last!) * h, count: h)
                }
                s.steps += 1
                metrics.recordVerifyStep(tokens: verdict.path.count)
                var going = true
                for node in verdict.path.dropFirst() where going { going = s.emit(nodes[node], metrics: metrics) }
                if going { going = s.emit(verdict.next, metrics: metrics) }
                s.root = verdict.next
                if !going { release(slot: slot, reason: s.finishReason) }
            }
        }
        if !single.isEmpty {
            gathered.withUnsafeMutableBufferPointer { g in
                for (k, item) in single.enumerated() {
                    (g.baseAddress! + k * h).update(from: rows.baseAddress! + item.row * h, count: h)
                }
                logits.withUnsafeMutableBufferPointer { out in
                    model.logits(hidden: g.baseAddress!, rows: single.count, into: out.baseAddress!)
                }
            }
            for (k, item) in single.enumerated() {
                let s = slots[item.slot]!
                let wasDecoding = s.isDecoding
                s.hidden.withUnsafeMutableBufferPointer {
                    $0.baseAddress!.update(from: rows.baseAddress! + item.row * h, count: h)
                }
                let next = logits.withUnsafeBufferPointer {
                    s.verifier.sampler.sample(UnsafeBufferPointer(rebasing: $0[(k * v)..<((k + 1) * v)]))
                }
                if wasDecoding {
                    s.steps += 1
                    metrics.recordVerifyStep(tokens: 1)
                }
                s.isDecoding = true
                s.root = next
                if !s.emit(next, metrics: metrics) { release(slot: item.slot, reason: s.finishReason) }
            }
        }
        // A sequence whose cache is full ends here, as plain generation does.
        for (i, s) in slots.enumerated() {
            if let s, s.isDecoding, model.caches[i].available == 0 { release(slot: i, reason: .length) }
        }
        lock.withLock {
            runningCount = slots.count { $0 != nil }
            metrics.active.record(runningCount)
        }
    }

    /// The candidate source's guesses for a sequence, kept out of the forward's profile.
    private func propose(_ source: any CandidateSource, _ s: ActiveSequence, topK: [Int]) -> [[Int32]] {
        model.profile = nil
        defer { model.profile = profile }
        return s.hidden.withUnsafeBufferPointer { source.propose(hidden: $0.baseAddress!, sequence: s.tokens, topK: topK) }
    }

    /// Runs the sequence's verifier over its tree, computing a node's logits only when the walk reaches it.
    private func verify(_ tree: CandidateTree, tokens: [Int32], rows: UnsafePointer<Float>, sequence s: ActiveSequence) -> Verdict {
        let h = model.config.hiddenSize, v = model.config.vocabularySize
        var have = [Bool](repeating: false, count: tree.count)
        return nodeLogits.withUnsafeMutableBufferPointer { all in
            s.verifier.verify(tree: tree, tokens: tokens) { node in
                let out = all.baseAddress! + node * v
                if !have[node] {
                    model.logits(hidden: rows + node * h, rows: 1, into: out)
                    have[node] = true
                }
                return UnsafeBufferPointer(start: out, count: v)
            }
        }
    }

    static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }
}

public struct EngineSetupError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// One request in a sequence slot (engine thread only).
private final class ActiveSequence {
    let id: Int
    let slot: Int
    let request: CompletionRequest
    let continuation: AsyncStream<CompletionEvent>.Continuation
    let tokenizer: Tokenizer
    var verifier: Verifier
    /// Prompt tokens not yet in the cache.
    var promptLeft: ArraySlice<Int32>
    /// Prompt and generated tokens (the candidate source's context).
    var tokens: [Int32]
    var generated: [Int32] = []
    /// The last token chosen, not yet in the cache: the next step's input (or tree root).
    var root: Int32 = 0
    /// The final-normed hidden state that chose `root` (the Medusa heads' input).
    var hidden: [Float]
    var isDecoding = false
    var steps = 0
    var finishReason = FinishReason.length
    var stoppedByString = false
    /// With `recordsHiddenStates`: every chosen token and the hidden state that chose it.
    var recordedTokens: [Int32] = []
    var recordedHidden: [Float] = []
    private var decoder: StreamingDecoder
    private var text: [UInt8] = []
    private var sent = 0
    private let stops: [[UInt8]]

    init(id: Int, slot: Int, request: CompletionRequest, continuation: AsyncStream<CompletionEvent>.Continuation,
         tokenizer: Tokenizer, rule: AcceptanceRule, hiddenSize: Int) {
        self.id = id
        self.slot = slot
        self.request = request
        self.continuation = continuation
        self.tokenizer = tokenizer
        verifier = Verifier(rule: rule, sampler: Sampler(parameters: request.sampling, seed: request.seed))
        promptLeft = request.prompt[...]
        tokens = request.prompt
        hidden = [Float](repeating: 0, count: hiddenSize)
        decoder = StreamingDecoder(tokenizer: tokenizer)
        stops = request.stop.filter { !$0.isEmpty }.map { Array($0.utf8) }
    }

    /// Appends a chosen token unless it ends generation; false when the sequence is finished
    /// (`finishReason` says why).
    func emit(_ token: Int32, metrics: EngineMetrics) -> Bool {
        if request.recordsHiddenStates {
            recordedTokens.append(token)
            recordedHidden += hidden
        }
        if tokenizer.isEndOfGeneration(token) {
            finishReason = .stop
            return false
        }
        generated.append(token)
        tokens.append(token)
        metrics.generatedTokens.increment()
        text += Array(decoder.append(token).utf8)
        if let cut = firstStop() {
            text.removeSubrange(cut...)
            stoppedByString = true
            finishReason = .stop
            return false
        }
        sendSafeText()
        if let m = request.maxTokens, generated.count >= m {
            finishReason = .length
            return false
        }
        return true
    }

    /// Where the earliest stop string starts in the text not yet sent (a match may begin in the
    /// held-back tail), or nil.
    private func firstStop() -> Int? {
        guard !stops.isEmpty else { return nil }
        var best: Int?
        for stop in stops where text.count >= stop.count {
            var i = sent
            while i + stop.count <= text.count {
                if text[i] == stop[0] && text[i..<(i + stop.count)].elementsEqual(stop) {
                    if best == nil || i < best! { best = i }
                    break
                }
                i += 1
            }
        }
        return best
    }

    /// Sends the text that no stop string can still claim: all but the longest tail that is a
    /// prefix of some stop string.
    private func sendSafeText() {
        var hold = 0
        for stop in stops {
            for k in stride(from: min(stop.count - 1, text.count - sent), to: hold, by: -1)
            where text[(text.count - k)...].elementsEqual(stop[..<k]) {
                hold = k
                break
            }
        }
        send(upTo: text.count - hold)
    }

    private func send(upTo end: Int) {
        guard end > sent else { return }
        continuation.yield(.text(String(decoding: text[sent..<end], as: UTF8.self)))
        sent = end
    }

    /// Sends what is left: the held-back tail and, unless a stop string ended it, the decoder's
    /// unfinished bytes.
    func flushText() {
        if !stoppedByString { text += Array(decoder.flush().utf8) }
        send(upTo: text.count)
    }
}

/// The engine's measurements, through swift-metrics (the server exports them for Prometheus).
final class EngineMetrics: @unchecked Sendable {
    let promptTokens = Counter(label: "medusa_prompt_tokens_total")
    let generatedTokens = Counter(label: "medusa_generated_tokens_total")
    let verifySteps = Counter(label: "medusa_verify_steps_total")
    let acceptedTokens = Counter(label: "medusa_accepted_tokens_total")
    let active = Gauge(label: "medusa_active_sequences")
    let queued = Gauge(label: "medusa_queued_sequences")
    let meanAccepted = Gauge(label: "medusa_mean_accepted_tokens_per_step")
    let stepSeconds = Metrics.Timer(label: "medusa_step_seconds")
    let allreduceSeconds = Metrics.Timer(label: "medusa_allreduce_seconds")
    private var steps = 0
    private var accepted = 0

    /// One sequence's verify step produced `tokens` tokens (1 for plain decoding).
    func recordVerifyStep(tokens: Int) {
        steps += 1
        accepted += tokens
        verifySteps.increment()
        acceptedTokens.increment(by: tokens)
        meanAccepted.record(Double(accepted) / Double(steps))
    }
}
