import Collectives

/// Why a forward step was refused.
public enum ModelError: Error, CustomStringConvertible, Sendable, Equatable {
    case emptyStep
    case stepTooLarge(tokens: Int, maximum: Int)
    case mismatchedStep(tokens: Int, positions: Int, maskSize: Int)
    case tokenOutOfRange(token: Int32, vocabularySize: Int)
    case contextFull(committed: Int, adding: Int, capacity: Int)
    case badSegments(String)
    case collective(String)

    public var description: String {
        switch self {
        case .emptyStep: "a step needs at least one token"
        case .stepTooLarge(let n, let max): "a step of \(n) tokens exceeds the batch limit of \(max)"
        case .mismatchedStep(let t, let p, let m): "step has \(t) tokens, \(p) positions and a \(m)x\(m) mask"
        case .tokenOutOfRange(let t, let v): "token id \(t) is outside the vocabulary (0..<\(v))"
        case .contextFull(let c, let a, let cap):
            "context full: \(c) tokens in the cache plus \(a) new exceed the context of \(cap) (raise --ctx)"
        case .badSegments(let what): "bad step segments: \(what)"
        case .collective(let message): "collective failed: \(message)"
        }
    }
}

/// The tokens of one sequence inside a step: `count` consecutive tokens of the step, whose keys and
/// values go to sequence `sequence`'s cache.
public struct StepSegment: Sendable, Equatable {
    public var sequence: Int
    public var count: Int

    public init(sequence: Int, count: Int) {
        self.sequence = sequence
        self.count = count
    }
}

/// A Llama-family decoder on one rank: weights, KV caches, step buffers and the forward pass.
///
/// One forward handles n new tokens with their positions and an n x n mask, so prefill (causal
/// mask), plain decoding (n = 1) and Medusa tree verification (ancestor mask) share one path.
/// A step may carry several sequences (a server's batch): each owns a KV cache and a run of the
/// step's tokens (`StepSegment`); a token attends only to its own sequence's cache and to the
/// tokens of its own segment that the mask allows, so sequences never see each other.
/// Every buffer is allocated here, once; a step allocates nothing.
public final class LlamaModel: @unchecked Sendable {
    // Used from one thread at a time (the engine loop); the pool's workers only see the buffers
    // inside `pool.run`, which returns before the next stage starts.
    public let config: LlamaConfig
    public let weights: LlamaWeights
    /// One KV cache per sequence slot (`sequences` of them); a single-sequence caller uses `cache`.
    public let caches: [KVCache]
    public let maxStepTokens: Int
    public let pool: ThreadPool
    /// The heads and FFN features this rank owns (everything on a group of one).
    public let layout: ShardLayout
    public let communicator: any Communicator
    private var rotary: RotaryTable
    private let buffers: StepBuffers
    /// When set, every forward and LM-head call adds its time split here.
    public var profile: StepProfile?
    /// How the quantized weight matrices take their inputs (`--matmul-inputs`).
    public let matmulInputs: MatMulInputs

    /// - Parameters:
    ///   - weights: the whole model's weights; the model keeps this rank's slices of them.
    ///   - contextLength: KV cache capacity in tokens, clamped to the model's context length.
    ///   - maxStepTokens: the most tokens one step may carry (prefill is split into such steps).
    ///   - sequences: how many sequences can share a step, each with its own cache of `contextLength`.
    ///   - communicator: the tensor-parallel group; this process is its rank.
    ///   - matmulInputs: int16 (the default: faster, activations rounded per block to 2^-16 of the
    ///     block's largest) or exact fp32 activations for the Q8_0/Q4_0/Q4_1 weight products.
    public init(
        config: LlamaConfig, weights: LlamaWeights, contextLength: Int, maxStepTokens: Int = 512,
        threads: Int, sequences: Int = 1, communicator: any Communicator = SingleProcessCommunicator(),
        matmulInputs: MatMulInputs = .int16
    ) throws(ShardError) {
        precondition(sequences >= 1, "a model needs at least one sequence slot")
        let layout = try ShardLayout(config: config, rank: communicator.rank, size: communicator.size)
        self.layout = layout
        self.config = config
        self.matmulInputs = matmulInputs
        self.weights = try weights.shard(layout, config: config)
        let capacity = max(1, min(contextLength, config.contextLength))
        caches = (0..<sequences).map { _ in
            KVCache(layerCount: config.layerCount, kvHeadCount: layout.localKVHeadCount,
                    headDimension: config.headDimension, capacity: capacity)
        }
        self.maxStepTokens = max(1, min(maxStepTokens, capacity))
        pool = ThreadPool(threadCount: max(1, threads))
        self.communicator = communicator
        rotary = RotaryTable(config: config)
        if communicator.size > 1 && communicator.rank == 0 { for cache in caches { cache.journal = [] } }
        buffers = StepBuffers(config: config, layout: layout, maxTokens: self.maxStepTokens, capacity: capacity,
                              attentionTasks: 4 * max(1, threads))
    }

    /// Opens a GGUF file and builds this rank's part of the model on it.
    public convenience init(
        gguf: GGUFFile, contextLength: Int = 2048, maxStepTokens: Int = 512, threads: Int, sequences: Int = 1,
        communicator: any Communicator = SingleProcessCommunicator(), matmulInputs: MatMulInputs = .int16
    ) throws {
        let config = try LlamaConfig(gguf: gguf)
        let weights = try LlamaWeights(gguf: gguf, config: config)
        try self.init(config: config, weights: weights, contextLength: contextLength,
                      maxStepTokens: maxStepTokens, threads: threads, sequences: sequences, communicator: communicator,
                      matmulInputs: matmulInputs)
    }

    /// The cache of sequence 0: the only one of a single-sequence model.
    public var cache: KVCache { caches[0] }

    /// KV cache capacity in tokens (per sequence).
    public var contextLength: Int { cache.capacity }

    /// Runs the decoder over `tokens` placed at `positions`, writing their keys and values at cache
    /// slots committed ..< committed + n. Token i attends to the whole committed cache and to step
    /// token j where `mask[i, j]`. Returns the final-normed hidden states [n, hidden], valid until
    /// the next call. The cache's committed length does not change: call `cache.commit` after.
    ///
    /// On rank 0 of a group of several, this first broadcasts the step plan (with the cache
    /// changes made since the last one) so that every rank runs the same step (`serve`).
    public func forward(
        tokens: UnsafeBufferPointer<Int32>, positions: UnsafeBufferPointer<Int32>, mask: TreeMask
    ) throws(ModelError) -> UnsafeBufferPointer<Float> {
        try forward(tokens: tokens, positions: positions, mask: mask, segments: [StepSegment(sequence: 0, count: tokens.count)])
    }

    /// A step over several sequences: `segments` split the n tokens into consecutive runs, one per
    /// sequence (each sequence at most once). A run's keys and values go to its sequence's cache at
    /// that cache's committed ..< committed + count; token i attends to its own sequence's committed
    /// cache and to the tokens j of its own run where `mask[i, j]` (bits across runs are ignored).
    /// Each row's result is the same as in a step of its sequence alone.
    public func forward(
        tokens: UnsafeBufferPointer<Int32>, positions: UnsafeBufferPointer<Int32>, mask: TreeMask,
        segments: [StepSegment]
    ) throws(ModelError) -> UnsafeBufferPointer<Float> {
        try checkStep(tokens: tokens, positions: positions, mask: mask, segments: segments)
        if communicator.size > 1 && communicator.rank == 0 {
            var ops: [StepPlan.CacheOperation] = []
            for (s, cache) in caches.enumerated() where !(cache.journal?.isEmpty ?? true) {
                ops += cache.journal!.map { StepPlan.CacheOperation(sequence: s, operation: $0) }
                cache.journal = []
            }
            let plan = StepPlan(kind: .forward, cacheOps: ops, tokens: Array(tokens), positions: Array(positions),
                                mask: mask, segments: segments)
            do { try plan.broadcast(communicator) } catch { throw .collective(error.description) }
        }
        return try localForward(tokens: tokens, positions: positions, mask: mask, segments: segments)
    }

    /// Ranks other than 0: runs the steps rank 0 broadcasts until it ends the group (`endGroup`).
    public func serve() throws(ModelError) {
        precondition(communicator.rank != 0, "rank 0 drives the group; it does not serve")
        while true {
            let plan = try StepPlan.receive(communicator)
            for op in plan.cacheOps {
                guard op.sequence >= 0 && op.sequence < caches.count else {
                    throw .badSegments("cache operation for sequence \(op.sequence) of \(caches.count)")
                }
                caches[op.sequence].apply(op.operation)
            }
            switch plan.kind {
            case .shutdown: return
            case .synchronize:
                do { try communicator.barrier() } catch { throw .collective(error.description) }
            case .forward:
                try plan.tokens.withUnsafeBufferPointer { t throws(ModelError) in
                    try plan.positions.withUnsafeBufferPointer { p throws(ModelError) in
                        try checkStep(tokens: t, positions: p, mask: plan.mask, segments: plan.segments)
                        _ = try localForward(tokens: t, positions: p, mask: plan.mask, segments: plan.segments)
                    }
                }
            }
        }
    }

    /// Rank 0: returns once every rank has loaded its shard and is serving (a server reports ready
    /// only then). Does nothing on a group of one.
    public func synchronizeGroup() throws(ModelError) {
        guard communicator.rank == 0, communicator.size > 1 else { return }
        do {
            try StepPlan(kind: .synchronize).broadcast(communicator)
            try communicator.barrier()
        } catch { throw .collective(error.description) }
    }

    /// Rank 0: tells every other rank to leave `serve`. Does nothing on a group of one.
    public func endGroup() throws(ModelError) {
        guard communicator.rank == 0, communicator.size > 1 else { return }
        do { try StepPlan(kind: .shutdown).broadcast(communicator) } catch { throw .collective(error.description) }
    }

    private func checkStep(
        tokens: UnsafeBufferPointer<Int32>, positions: UnsafeBufferPointer<Int32>, mask: TreeMask,
        segments: [StepSegment]
    ) throws(ModelError) {
        let n = tokens.count
        guard n > 0 else { throw .emptyStep }
        guard n <= maxStepTokens else { throw .stepTooLarge(tokens: n, maximum: maxStepTokens) }
        guard positions.count == n, mask.count == n else {
            throw .mismatchedStep(tokens: n, positions: positions.count, maskSize: mask.count)
        }
        var covered = 0
        var seen = Set<Int>()
        for segment in segments {
            guard segment.sequence >= 0 && segment.sequence < caches.count else {
                throw .badSegments("sequence \(segment.sequence) outside 0..<\(caches.count)")
            }
            guard segment.count > 0 else { throw .badSegments("an empty segment for sequence \(segment.sequence)") }
            guard seen.insert(segment.sequence).inserted else {
                throw .badSegments("sequence \(segment.sequence) appears twice in one step")
            }
            let cache = caches[segment.sequence]
            guard cache.committed + segment.count <= cache.capacity else {
                throw .contextFull(committed: cache.committed, adding: segment.count, capacity: cache.capacity)
            }
            covered += segment.count
        }
        guard covered == n else { throw .badSegments("segments cover \(covered) of the step's \(n) tokens") }
        for t in tokens where t < 0 || Int(t) >= config.vocabularySize {
            throw .tokenOutOfRange(token: t, vocabularySize: config.vocabularySize)
        }
    }

    private func localForward(
        tokens: UnsafeBufferPointer<Int32>, positions: UnsafeBufferPointer<Int32>, mask: TreeMask,
        segments: [StepSegment]
    ) throws(ModelError) -> UnsafeBufferPointer<Float> {
        let n = tokens.count
        // Where each token's keys and values go: its sequence, its run of the step, its cache slot.
        var start = 0
        for segment in segments {
            let committed = caches[segment.sequence].committed
            for k in 0..<segment.count {
                let i = start + k
                buffers.tokenSequence[i] = Int32(segment.sequence)
                buffers.runStart[i] = Int32(start)
                buffers.runEnd[i] = Int32(start + segment.count)
                buffers.slot[i] = Int32(committed + k)
            }
            start += segment.count
        }
        let c = config
        let b = buffers
        let hidden = c.hiddenSize
        let qDim = layout.localHeadCount * c.headDimension
        let kvDim = layout.localKVHeadCount * c.headDimension

        var clock = ProfileClock(profile)
        profile?.countStep()
        // x [n, hidden]: the residual stream, starting from the token embeddings.
        for i in 0..<n {
            weights.tokenEmbedding.dequantizeRow(Int(tokens[i]), into: b.x + i * hidden)
        }
        rotary.prepare(positions: positions)

        for (l, layer) in weights.layers.enumerated() {
            // Attention block.
            normRows(layer.attentionNorm, n: n)
            clock.lap(.other)
            MatMul.multiply(
                .init(.init(layer.query, y: b.q, yStride: qDim), .init(layer.key, y: b.k, yStride: kvDim),
                      .init(layer.value, y: b.v, yStride: kvDim)),
                x: b.normed, xStride: hidden, n: n, pool: pool, inputs: matmulInputs)
            clock.lap(.matmul)
            for i in 0..<n {
                rotary.apply(b.q + i * qDim, heads: layout.localHeadCount, token: i)
                rotary.apply(b.k + i * kvDim, heads: layout.localKVHeadCount, token: i)
            }
            clock.lap(.other)
            storeKeysAndValues(layer: l, n: n)
            attend(layer: l, n: n, mask: mask)
            clock.lap(.attention)
            MatMul.multiply(layer.output, x: b.attention, xStride: qDim, n: n, y: b.projected, yStride: hidden, pool: pool,
                            inputs: matmulInputs)
            clock.lap(.matmul)
            try allreduce(b.projected, count: n * hidden, clock: &clock)
            VectorOps.add(b.projected, to: b.x, count: n * hidden)

            // MLP block: down(silu(gate(x)) * up(x)).
            normRows(layer.mlpNorm, n: n)
            clock.lap(.other)
            let ffn = layout.localFFN
            MatMul.multiply(
                .init(.init(layer.gate, y: b.gate, yStride: ffn), .init(layer.up, y: b.up, yStride: ffn)),
                x: b.normed, xStride: hidden, n: n, pool: pool, inputs: matmulInputs)
            clock.lap(.matmul)
            VectorOps.swiglu(b.gate, b.up, count: n * ffn)
            clock.lap(.other)
            MatMul.multiply(layer.down, x: b.gate, xStride: ffn, n: n, y: b.projected, yStride: hidden, pool: pool,
                            inputs: matmulInputs)
            clock.lap(.matmul)
            try allreduce(b.projected, count: n * hidden, clock: &clock)
            VectorOps.add(b.projected, to: b.x, count: n * hidden)
        }

        normRows(weights.outputNorm, n: n)
        clock.lap(.other)
        return UnsafeBufferPointer(start: b.normed, count: n * hidden)
    }

    /// RMS-normalises the residual stream's first `n` rows into `normed`.
    private func normRows(_ weight: [Float], n: Int) {
        let b = buffers, hidden = config.hiddenSize, epsilon = config.rmsNormEpsilon
        weight.withUnsafeBufferPointer { w in
            for i in 0..<n {
                VectorOps.rmsNorm(b.x + i * hidden, weight: w.baseAddress!, epsilon: epsilon,
                                  count: hidden, out: b.normed + i * hidden)
            }
        }
    }

    /// LM-head logits for `rows` hidden states [rows, hidden] into `out` [rows, vocabulary].
    public func logits(hidden: UnsafePointer<Float>, rows: Int, into out: UnsafeMutablePointer<Float>) {
        var clock = ProfileClock(profile)
        MatMul.multiply(weights.output, x: hidden, xStride: config.hiddenSize, n: rows,
                        y: out, yStride: config.vocabularySize, pool: pool, inputs: matmulInputs)
        clock.lap(.lmHead)
    }

    /// Sums a row-parallel product across ranks (nothing on one rank), charging the time to allreduce.
    private func allreduce(
        _ buffer: UnsafeMutablePointer<Float>, count: Int, clock: inout ProfileClock
    ) throws(ModelError) {
        guard communicator.size > 1 else { return }
        defer { clock.lap(.allreduce) }
        do {
            try communicator.allreduceSum(UnsafeMutableBufferPointer(start: buffer, count: count))
        } catch {
            throw .collective(error.description)
        }
    }

    /// Copies the step's rotated keys and its values into their sequences' cache slots.
    private func storeKeysAndValues(layer: Int, n: Int) {
        let hd = config.headDimension
        let kvDim = layout.localKVHeadCount * hd
        let b = buffers
        for i in 0..<n {
            let cache = caches[Int(b.tokenSequence[i])]
            let slot = Int(b.slot[i])
            for h in 0..<layout.localKVHeadCount {
                (cache.keys(layer: layer, head: h) + slot * hd).update(from: b.k + i * kvDim + h * hd, count: hd)
                (cache.values(layer: layer, head: h) + slot * hd).update(from: b.v + i * kvDim + h * hd, count: hd)
            }
        }
    }

    /// attention[i, head] = softmax(q_i · K_visible / sqrt(d)) V_visible, where the visible slots
    /// are the token's sequence's committed cache followed by the tokens of its run the mask allows,
    /// always in slot order (so a token's result does not depend on what else shares its step).
    private func attend(layer: Int, n: Int, mask: TreeMask) {
        let c = config
        let hd = c.headDimension
        let heads = layout.localHeadCount
        let qDim = heads * hd
        let pairs = n * heads
        let tasks = min(pairs, buffers.attentionTasks)
        let scale = 1 / Float(hd).squareRoot()
        let b = buffers
        let caches = self.caches
        pool.run(taskCount: tasks) { task in
            let scores = b.scores + task * b.scoreStride
            let slots = b.slotLists + task * b.scoreStride
            var pair = task
            while pair < pairs {
                let i = pair / heads
                let head = pair % heads
                let kvHead = layout.localKVHead(forLocalHead: head)
                let q = b.q + i * qDim + head * hd
                let cache = caches[Int(b.tokenSequence[i])]
                let keys = cache.keys(layer: layer, head: kvHead)
                let values = cache.values(layer: layer, head: kvHead)
                let committed = cache.committed
                let runStart = Int(b.runStart[i])
                var visible = 0
                for s in 0..<committed {
                    slots[visible] = Int32(s)
                    visible += 1
                }
                for j in runStart..<Int(b.runEnd[i]) where mask[i, j] {
                    slots[visible] = Int32(committed + j - runStart)
                    visible += 1
                }
                var maxScore = -Float.infinity
                for v in 0..<visible {
                    let s = VectorOps.dot(q, keys + Int(slots[v]) * hd, count: hd) * scale
                    scores[v] = s
                    maxScore = max(maxScore, s)
                }
                var sum: Float = 0
                for v in 0..<visible {
                    let e = expf(scores[v] - maxScore)
                    scores[v] = e
                    sum += e
                }
                let out = b.attention + i * qDim + head * hd
                out.update(repeating: 0, count: hd)
                let inv = 1 / sum
                for v in 0..<visible {
                    VectorOps.axpy(scores[v] * inv, values + Int(slots[v]) * hd, out, count: hd)
                }
                pair += tasks
            }
        }
    }
}

/// Activation buffers of one step, sized for the largest step. Shapes are [tokens, features].
final class StepBuffers: @unchecked Sendable {
    let x: UnsafeMutablePointer<Float>          // [maxTokens, hidden] residual stream
    let normed: UnsafeMutablePointer<Float>     // [maxTokens, hidden] normed input of a block; final hidden out
    let q: UnsafeMutablePointer<Float>          // [maxTokens, heads * headDim]
    let k: UnsafeMutablePointer<Float>          // [maxTokens, kvHeads * headDim]
    let v: UnsafeMutablePointer<Float>          // [maxTokens, kvHeads * headDim]
    let attention: UnsafeMutablePointer<Float>  // [maxTokens, heads * headDim]
    let projected: UnsafeMutablePointer<Float>  // [maxTokens, hidden] output of O and down
    let gate: UnsafeMutablePointer<Float>       // [maxTokens, intermediate]
    let up: UnsafeMutablePointer<Float>         // [maxTokens, intermediate]
    let scores: UnsafeMutablePointer<Float>     // [attentionTasks, capacity]
    let tokenSequence: UnsafeMutablePointer<Int32>  // [maxTokens] each token's sequence
    let runStart: UnsafeMutablePointer<Int32>   // [maxTokens] first token of its segment
    let runEnd: UnsafeMutablePointer<Int32>     // [maxTokens] end of its segment
    let slot: UnsafeMutablePointer<Int32>       // [maxTokens] its cache slot
    let slotLists: UnsafeMutablePointer<Int32>  // [attentionTasks, capacity]
    let scoreStride: Int
    let attentionTasks: Int
    private var all: [UnsafeMutableRawPointer] = []

    init(config c: LlamaConfig, layout: ShardLayout, maxTokens: Int, capacity: Int, attentionTasks: Int) {
        var owned: [UnsafeMutableRawPointer] = []
        func floats(_ count: Int) -> UnsafeMutablePointer<Float> {
            let p = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
            p.initialize(repeating: 0, count: max(count, 1))
            owned.append(UnsafeMutableRawPointer(p))
            return p
        }
        let qDim = layout.localHeadCount * c.headDimension
        let kvDim = layout.localKVHeadCount * c.headDimension
        x = floats(maxTokens * c.hiddenSize)
        normed = floats(maxTokens * c.hiddenSize)
        q = floats(maxTokens * qDim)
        k = floats(maxTokens * kvDim)
        v = floats(maxTokens * kvDim)
        attention = floats(maxTokens * qDim)
        projected = floats(maxTokens * c.hiddenSize)
        gate = floats(maxTokens * layout.localFFN)
        up = floats(maxTokens * layout.localFFN)
        scoreStride = capacity
        self.attentionTasks = attentionTasks
        scores = floats(attentionTasks * capacity)
        func ints(_ count: Int) -> UnsafeMutablePointer<Int32> {
            let p = UnsafeMutablePointer<Int32>.allocate(capacity: max(count, 1))
            p.initialize(repeating: 0, count: max(count, 1))
            owned.append(UnsafeMutableRawPointer(p))
            return p
        }
        slotLists = ints(attentionTasks * capacity)
        tokenSequence = ints(maxTokens)
        runStart = ints(maxTokens)
        runEnd = ints(maxTokens)
        slot = ints(maxTokens)
        all = owned
    }

    deinit {
        for p in all { p.deallocate() }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
