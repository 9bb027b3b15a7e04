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
    /// How the KV caches store keys and values (`--cache-type`).
    public let kvCacheType: KVCacheType
    /// Vocabulary-parallel LM head: rank r owns rows r * vocabularyChunk ..< min(vocabulary,
    /// (r + 1) * vocabularyChunk) of `weights.output` (all of them on a group of one).
    private let vocabularyChunk: Int
    private let outputSlice: WeightMatrix
    /// `logits` on a group: this rank's slice [rows, vocabularyChunk] and, on rank 0, every rank's
    /// [ranks, rows, vocabularyChunk]; they grow to the largest call and are then reused.
    private var sliceLogits: [Float] = []
    private var gatheredLogits: [Float] = []

    /// - Parameters:
    ///   - weights: the whole model's weights; the model keeps this rank's slices of them.
    ///   - contextLength: KV cache capacity in tokens, clamped to the model's context length.
    ///   - maxStepTokens: the most tokens one step may carry (prefill is split into such steps).
    ///   - sequences: how many sequences can share a step, each with its own cache of `contextLength`.
    ///   - communicator: the tensor-parallel group; this process is its rank.
    ///   - matmulInputs: int16 (the default: faster, activations rounded per block to 2^-16 of the
    ///     block's largest) or exact fp32 activations for the Q8_0/Q4_0/Q4_1 weight products.
    ///   - kvCacheType: fp16 keys and values in the caches (the default, as llama.cpp's) or fp32 (exact).
    public init(
        config: LlamaConfig, weights: LlamaWeights, contextLength: Int, maxStepTokens: Int = 512,
        threads: Int, sequences: Int = 1, communicator: any Communicator = SingleProcessCommunicator(),
        matmulInputs: MatMulInputs = .int16, kvCacheType: KVCacheType = .f16
    ) throws(ShardError) {
        precondition(sequences >= 1, "a model needs at least one sequence slot")
        let layout = try ShardLayout(config: config, rank: communicator.rank, size: communicator.size)
        self.layout = layout
        self.config = config
        self.matmulInputs = matmulInputs
        self.kvCacheType = kvCacheType
        var shard = try weights.shard(layout, config: config)
        let vocabulary = config.vocabularySize
        vocabularyChunk = (vocabulary + communicator.size - 1) / communicator.size
        let first = min(vocabulary, communicator.rank * vocabularyChunk)
        // The integer kernels on VNNI CPUs read their own layout: pack what this rank multiplies. On
        // a group the LM head is multiplied through this rank's vocabulary slice only; on one rank
        // the slice is the whole head, which `logits` multiplies as `weights.output`.
        let slice = shard.output.rowSlice(first..<min(vocabulary, first + vocabularyChunk)).prepared(for: matmulInputs)
        if matmulInputs != .fp32 {
            shard.packLayersForVNNI()
            if communicator.size == 1 { shard.output = slice }
        }
        self.weights = shard
        outputSlice = slice
        let capacity = max(1, min(contextLength, config.contextLength))
        caches = (0..<sequences).map { _ in
            KVCache(layerCount: config.layerCount, kvHeadCount: layout.localKVHeadCount,
                    headDimension: config.headDimension, capacity: capacity, type: kvCacheType)
        }
        self.maxStepTokens = max(1, min(maxStepTokens, capacity))
        pool = ThreadPool(threadCount: max(1, threads))
        self.communicator = communicator
        rotary = RotaryTable(config: config)
        if communicator.size > 1 && communicator.rank == 0 { for cache in caches { cache.journal = [] } }
        buffers = StepBuffers(config: config, layout: layout, maxTokens: self.maxStepTokens, capacity: capacity,
                              threads: max(1, threads))
    }

    /// Opens a GGUF file and builds this rank's part of the model on it.
    public convenience init(
        gguf: GGUFFile, contextLength: Int = 2048, maxStepTokens: Int = 512, threads: Int, sequences: Int = 1,
        communicator: any Communicator = SingleProcessCommunicator(), matmulInputs: MatMulInputs = .int16,
        kvCacheType: KVCacheType = .f16
    ) throws {
        let config = try LlamaConfig(gguf: gguf)
        let weights = try LlamaWeights(gguf: gguf, config: config)
        try self.init(config: config, weights: weights, contextLength: contextLength,
                      maxStepTokens: maxStepTokens, threads: threads, sequences: sequences, communicator: communicator,
                      matmulInputs: matmulInputs, kvCacheType: kvCacheType)
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
            case .logits:
                let rows = plan.hidden.count / config.hiddenSize
                guard rows > 0, rows * config.hiddenSize == plan.hidden.count else {
                    throw .collective("an LM-head step of \(plan.hidden.count) values for hidden size \(config.hiddenSize)")
                }
                try plan.hidden.withUnsafeBufferPointer { h throws(ModelError) in
                    try logitsSlice(hidden: h.baseAddress!, rows: rows, into: nil)
                }
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
        planAttention(n: n)
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
            // Element by element, so any split gives the same values; with several tokens every
            // thread takes a part (the others would otherwise wait for this one).
            let parts = n >= 2 ? pool.threadCount : 1, chunk = (n * ffn + 8 * parts - 1) / (8 * parts) * 8
            pool.run(taskCount: parts) { part in
                let start = min(n * ffn, part * chunk)
                VectorOps.swiglu(b.gate + start, b.up + start, count: min(n * ffn, start + chunk) - start)
            }
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
    ///
    /// On a group of several (rank 0 only), vocabulary-parallel: rank 0 broadcasts the hidden rows
    /// in a step plan, every rank multiplies them by its rows of the LM head, and rank 0 gathers
    /// the slices. Each logit is the same kernel's product of the same row and weights, so the
    /// result is bit-identical to one rank's. A failed collective ends the group (as a failed
    /// forward does on the other ranks).
    public func logits(hidden: UnsafePointer<Float>, rows: Int, into out: UnsafeMutablePointer<Float>) {
        var clock = ProfileClock(profile)
        defer { clock.lap(.lmHead) }
        guard communicator.size > 1 else {
            MatMul.multiply(weights.output, x: hidden, xStride: config.hiddenSize, n: rows,
                            y: out, yStride: config.vocabularySize, pool: pool, inputs: matmulInputs)
            return
        }
        precondition(communicator.rank == 0, "rank 0 drives the group's LM head")
        guard rows > 0 else { return }
        do {
            let plan = StepPlan(kind: .logits, hidden: Array(UnsafeBufferPointer(start: hidden, count: rows * config.hiddenSize)))
            try plan.broadcast(communicator)
            try logitsSlice(hidden: hidden, rows: rows, into: out)
        } catch {
            communicator.fail("LM head: \(error)")
        }
    }

    /// This rank's LM-head rows times `hidden`, gathered on rank 0 into `out` (nil elsewhere).
    private func logitsSlice(hidden: UnsafePointer<Float>, rows: Int, into out: UnsafeMutablePointer<Float>?) throws(ModelError) {
        let chunk = vocabularyChunk, ranks = communicator.size, vocabulary = config.vocabularySize
        if sliceLogits.count < rows * chunk { sliceLogits = [Float](repeating: 0, count: rows * chunk) }
        if out != nil && gatheredLogits.count < ranks * rows * chunk {
            gatheredLogits = [Float](repeating: 0, count: ranks * rows * chunk)
        }
        let mine = outputSlice
        sliceLogits.withUnsafeMutableBufferPointer { s in
            MatMul.multiply(mine, x: hidden, xStride: config.hiddenSize, n: rows, y: s.baseAddress!, yStride: chunk,
                            pool: pool, inputs: matmulInputs)
        }
        do {
            try sliceLogits.withUnsafeBufferPointer { s throws(CollectiveError) in
                try gatheredLogits.withUnsafeMutableBufferPointer { g throws(CollectiveError) in
                    try communicator.gather(UnsafeBufferPointer(rebasing: s[0..<(rows * chunk)]),
                                            into: UnsafeMutableBufferPointer(rebasing: g[0..<(out == nil ? 0 : ranks * rows * chunk)]),
                                            root: 0)
                }
            }
        } catch { throw .collective(error.description) }
        guard let out else { return }
        gatheredLogits.withUnsafeBufferPointer { g in
            for r in 0..<ranks {
                let first = r * chunk, count = min(vocabulary, first + chunk) - first
                guard count > 0 else { continue }
                for i in 0..<rows {
                    (out + i * vocabulary + first).update(from: g.baseAddress! + (r * rows + i) * chunk, count: count)
                }
            }
        }
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
        switch kvCacheType {
        case .f32: storeKeysAndValues(Float.self, layer: layer, n: n)
        case .f16: storeKeysAndValues(Float16.self, layer: layer, n: n)
        }
    }

    private func storeKeysAndValues<E: KVElement>(_: E.Type, layer: Int, n: Int) {
        let hd = config.headDimension
        let kvDim = layout.localKVHeadCount * hd
        let b = buffers
        for i in 0..<n {
            let cache = caches[Int(b.tokenSequence[i])]
            let slot = Int(b.slot[i])
            for h in 0..<layout.localKVHeadCount {
                cache.store(E.self, layer: layer, head: h, slot: slot, keys: b.k + i * kvDim + h * hd,
                            values: b.v + i * kvDim + h * hd)
            }
        }
    }

    /// attention[i, head] = softmax(q_i · K_visible / sqrt(d)) V_visible, where the visible slots
    /// are the token's sequence's committed cache followed by the tokens of its run the mask allows,
    /// always in slot order (so a token's result does not depend on what else shares its step).
    ///
    /// Work is cut into the units `planAttention` made: a few rows of one run times a few query
    /// heads reading one KV head. A unit scores all its queries against the committed keys and the
    /// run's keys up to its last row (each key tile read once for up to four queries), keeps each
    /// query's visible scores in slot order, and sums the values the same way; `AttentionKernels`
    /// keeps every query's arithmetic independent of the unit it is in.
    private func attend(layer: Int, n: Int, mask: TreeMask) {
        switch kvCacheType {
        case .f32: attend(Float.self, layer: layer, n: n, mask: mask)
        case .f16: attend(Float16.self, layer: layer, n: n, mask: mask)
        }
    }

    private func attend<E: KVElement>(_: E.Type, layer: Int, n: Int, mask: TreeMask) {
        let hd = config.headDimension
        let qDim = layout.localHeadCount * hd
        let scale = 1 / Float(hd).squareRoot()
        let b = buffers
        let caches = self.caches
        let layout = self.layout
        pool.runWithThreadIndex(taskCount: b.unitCount) { unit, thread in
            let rowStart = Int(b.units[4 * unit]), rowEnd = Int(b.units[4 * unit + 1])
            let headStart = Int(b.units[4 * unit + 2]), headEnd = Int(b.units[4 * unit + 3])
            let groupHeads = headEnd - headStart
            let queries = (rowEnd - rowStart) * groupHeads
            let kvHead = layout.localKVHead(forLocalHead: headStart)
            let cache = caches[Int(b.tokenSequence[rowStart])]
            let keys = UnsafePointer(cache.keys(layer: layer, head: kvHead, as: E.self))
            let values = UnsafePointer(cache.values(layer: layer, head: kvHead, as: E.self))
            let committed = cache.committed
            let runStart = Int(b.runStart[rowStart])
            let scores = b.scores + thread * b.unitQueries * b.scoreStride
            let steps = b.visibleSteps + thread * b.unitQueries * b.maxTokens
            let counts = b.visibleCounts + thread * b.unitQueries
            // Each row's visible tokens of its run, as offsets from the run's start.
            for r in 0..<(rowEnd - rowStart) {
                let i = rowStart + r
                var count = 0
                for j in runStart..<Int(b.runEnd[i]) where mask[i, j] {
                    steps[r * b.maxTokens + count] = Int32(j - runStart)
                    count += 1
                }
                counts[r] = Int32(count)
            }
            // Keys of slots 0..<committed + (tokens of the run up to the unit's last visible one).
            var keyCount = committed
            for r in 0..<(rowEnd - rowStart) where counts[r] > 0 {
                keyCount = max(keyCount, committed + Int(steps[r * b.maxTokens + Int(counts[r]) - 1]) + 1)
            }
            @inline(__always) func query(_ u: Int) -> UnsafeMutablePointer<Float> {
                b.q + (rowStart + u / groupHeads) * qDim + (headStart + u % groupHeads) * hd
            }
            // Scores, one key tile at a time (it stays in L1 while every group of four queries reads it).
            let tile = KVCache.keyTile
            let last = queries - 1
            var k0 = 0
            while k0 < keyCount {
                let count = min(tile, keyCount - k0)
                var u = 0
                while u < queries {
                    let u1 = min(u + 1, last), u2 = min(u + 2, last), u3 = min(u + 3, last)
                    AttentionKernels.scores(
                        query(u), query(u1), query(u2), query(u3), keyTile: keys + k0 * hd, count: count,
                        headDimension: hd, scale: scale,
                        into: scores + u * b.scoreStride + k0, scores + u1 * b.scoreStride + k0,
                        scores + u2 * b.scoreStride + k0, scores + u3 * b.scoreStride + k0)
                    u += 4
                }
                k0 += tile
            }
            // Each query's visible scores in slot order, then its softmax weights.
            for u in 0..<queries {
                let r = u / groupHeads
                let s = scores + u * b.scoreStride
                let rowSteps = steps + r * b.maxTokens
                let extra = Int(counts[r])
                for t in 0..<extra { s[committed + t] = s[committed + Int(rowSteps[t])] }
                AttentionKernels.softmax(s, count: committed + extra)
            }
            // Weighted values, query pairs sharing the committed rows' loads.
            var u = 0
            while u < queries {
                let w = min(u + 1, queries - 1)
                let ru = u / groupHeads, rw = w / groupHeads
                AttentionKernels.weightedValues(
                    values: values, shared: committed, headDimension: hd,
                    scores + u * b.scoreStride, steps: steps + ru * b.maxTokens, extra: Int(counts[ru]),
                    out: b.attention + (rowStart + ru) * qDim + (headStart + u % groupHeads) * hd,
                    scores + w * b.scoreStride, steps: steps + rw * b.maxTokens, extra: Int(counts[rw]),
                    out: b.attention + (rowStart + rw) * qDim + (headStart + w % groupHeads) * hd)
                u += 2
            }
        }
    }

    /// Cuts the step's attention into units for `attend`: within each run and each KV head, blocks
    /// of rows times the local query heads reading that KV head (or, when a unit may hold fewer
    /// queries than such a group, single rows times blocks of those heads). Units hold at most
    /// `unitQueries` queries, fewer when that leaves the pool fewer than about three per thread.
    private func planAttention(n: Int) {
        let b = buffers
        let heads = layout.localHeadCount
        let target = 3 * pool.threadCount
        let perUnit = max(1, min(b.unitQueries, (n * heads + target - 1) / target))
        var units = 0
        var runStart = 0
        while runStart < n {
            let runEnd = Int(b.runEnd[runStart])
            var h0 = 0
            while h0 < heads {
                var h1 = h0 + 1
                while h1 < heads && layout.localKVHead(forLocalHead: h1) == layout.localKVHead(forLocalHead: h0) { h1 += 1 }
                let group = h1 - h0
                if perUnit >= group {
                    let rows = perUnit / group
                    var r0 = runStart
                    while r0 < runEnd {
                        let r1 = min(r0 + rows, runEnd)
                        b.setUnit(units, rows: r0, r1, heads: h0, h1)
                        units += 1
                        r0 = r1
                    }
                } else {
                    for r in runStart..<runEnd {
                        var g0 = h0
                        while g0 < h1 {
                            let g1 = min(g0 + perUnit, h1)
                            b.setUnit(units, rows: r, r + 1, heads: g0, g1)
                            units += 1
                            g0 = g1
                        }
                    }
                }
                h0 = h1
            }
            runStart = runEnd
        }
        b.unitCount = units
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
    let tokenSequence: UnsafeMutablePointer<Int32>  // [maxTokens] each token's sequence
    let runStart: UnsafeMutablePointer<Int32>   // [maxTokens] first token of its segment
    let runEnd: UnsafeMutablePointer<Int32>     // [maxTokens] end of its segment
    let slot: UnsafeMutablePointer<Int32>       // [maxTokens] its cache slot
    /// Attention units of the step (`LlamaModel.planAttention`): rowStart, rowEnd, headStart, headEnd.
    let units: UnsafeMutablePointer<Int32>      // [maxTokens * heads, 4]
    var unitCount = 0
    /// The most queries (row, head) one attention unit holds.
    let unitQueries = 8
    let scores: UnsafeMutablePointer<Float>     // [threads, unitQueries, scoreStride] per-thread scores
    let visibleSteps: UnsafeMutablePointer<Int32>   // [threads, unitQueries, maxTokens] rows' visible run tokens
    let visibleCounts: UnsafeMutablePointer<Int32>  // [threads, unitQueries]
    let scoreStride: Int
    let maxTokens: Int
    private var all: [UnsafeMutableRawPointer] = []

    init(config c: LlamaConfig, layout: ShardLayout, maxTokens: Int, capacity: Int, threads: Int) {
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
        // Room for a score row padded to 8 plus the 15 entries a 16-key block may write past its end.
        scoreStride = (capacity + 15) / 16 * 16 + 16
        self.maxTokens = maxTokens
        scores = floats(threads * unitQueries * scoreStride)
        func ints(_ count: Int) -> UnsafeMutablePointer<Int32> {
            let p = UnsafeMutablePointer<Int32>.allocate(capacity: max(count, 1))
            p.initialize(repeating: 0, count: max(count, 1))
            owned.append(UnsafeMutableRawPointer(p))
            return p
        }
        units = ints(4 * maxTokens * layout.localHeadCount)
        visibleSteps = ints(threads * unitQueries * maxTokens)
        visibleCounts = ints(threads * unitQueries)
        tokenSequence = ints(maxTokens)
        runStart = ints(maxTokens)
        runEnd = ints(maxTokens)
        slot = ints(maxTokens)
        all = owned
    }

    deinit {
        for p in all { p.deallocate() }
    }

    @inline(__always)
    func setUnit(_ unit: Int, rows r0: Int, _ r1: Int, heads h0: Int, _ h1: Int) {
        units[4 * unit] = Int32(r0)
        units[4 * unit + 1] = Int32(r1)
        units[4 * unit + 2] = Int32(h0)
        units[4 * unit + 3] = Int32(h1)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
