/// What one rank of a tensor-parallel group owns (Megatron layout, DESIGN.md section 3).
///
/// - Attention: a contiguous range of query heads (uneven splits allowed: 9 heads on 2 ranks are
///   5 + 4) and the KV heads those query heads read. When ranks outnumber KV heads, or a split
///   cuts a group, a KV head is replicated on every rank that needs it. Q, K, V are sliced by
///   output rows (column-parallel); O by input columns (row-parallel).
/// - MLP: a contiguous range of the intermediate size, cut on 32-value boundaries: a 32-value
///   block never straddles two ranks, and a K-quant's 256-value super-block may (each rank reads
///   the 32-value groups of it that it owns, with the super-block's scales); gate and up by rows,
///   down by columns.
public struct ShardLayout: Sendable, Equatable, CustomStringConvertible {
    public let rank: Int
    public let size: Int
    /// Global query heads of this rank.
    public let queryHeads: Range<Int>
    /// Global KV heads this rank holds (those its query heads read).
    public let kvHeads: Range<Int>
    /// Global intermediate (FFN) features of this rank.
    public let ffn: Range<Int>
    /// Query heads per KV head.
    public let groupSize: Int

    /// The layout of `rank` in a group of `size`. Throws when the model cannot be split that way
    /// (more ranks than query heads or than FFN blocks).
    public init(config: LlamaConfig, rank: Int, size: Int) throws(ShardError) {
        precondition(size >= 1 && rank >= 0 && rank < size)
        guard config.headCount >= size else {
            throw .tooManyRanks(ranks: size, reason: "the model has \(config.headCount) attention heads")
        }
        let blocks = config.intermediateSize / 32
        guard config.intermediateSize % 32 == 0, blocks >= size else {
            throw .tooManyRanks(ranks: size, reason: "the FFN size \(config.intermediateSize) has \(blocks) blocks of 32 values")
        }
        self.rank = rank
        self.size = size
        groupSize = config.groupSize
        queryHeads = Self.split(config.headCount, parts: size, part: rank)
        kvHeads = (queryHeads.lowerBound / groupSize)..<((queryHeads.upperBound - 1) / groupSize + 1)
        let b = Self.split(blocks, parts: size, part: rank)
        ffn = (32 * b.lowerBound)..<(32 * b.upperBound)
    }

    /// The whole model on one rank.
    public static func single(_ config: LlamaConfig) -> ShardLayout {
        // A group of one can always be laid out.
        try! ShardLayout(config: config, rank: 0, size: 1)
    }

    /// Part `part` of 0..<count cut into `parts` contiguous ranges; the first count % parts get one more.
    static func split(_ count: Int, parts: Int, part: Int) -> Range<Int> {
        let base = count / parts, extra = count % parts
        let start = part * base + min(part, extra)
        return start..<(start + base + (part < extra ? 1 : 0))
    }

    public var localHeadCount: Int { queryHeads.count }
    public var localKVHeadCount: Int { kvHeads.count }
    public var localFFN: Int { ffn.count }

    /// The local KV head that local query head `head` reads.
    @inline(__always)
    public func localKVHead(forLocalHead head: Int) -> Int {
        (queryHeads.lowerBound + head) / groupSize - kvHeads.lowerBound
    }

    public var description: String {
        "rank \(rank)/\(size): query heads \(queryHeads), KV heads \(kvHeads), FFN \(ffn)"
    }
}

public enum ShardError: Error, CustomStringConvertible, Sendable, Equatable {
    case tooManyRanks(ranks: Int, reason: String)
    /// A row-parallel cut that falls inside a quantization block.
    case unalignedCut(tensor: String, column: Int, blockSize: Int, ranks: Int)

    public var description: String {
        switch self {
        case .tooManyRanks(let ranks, let reason): "cannot split the model over \(ranks) ranks: \(reason)"
        case .unalignedCut(let tensor, let column, let blockSize, let ranks):
            "cannot split the model over \(ranks) ranks: \(tensor) would be cut at input column \(column), "
                + "inside a block of \(blockSize) values"
        }
    }
}

extension LlamaWeights {
    /// This rank's slices: views into the same mapping (nothing is copied or read here). The
    /// embedding, the norms and the LM head stay whole (the LM head is used on rank 0 only).
    public func shard(_ layout: ShardLayout, config c: LlamaConfig) throws(ShardError) -> LlamaWeights {
        guard layout.size > 1 else { return self }
        let hd = c.headDimension
        let q = (layout.queryHeads.lowerBound * hd)..<(layout.queryHeads.upperBound * hd)
        let kv = (layout.kvHeads.lowerBound * hd)..<(layout.kvHeads.upperBound * hd)
        for (l, layer) in layers.enumerated() {
            for (name, matrix, cut) in [("attn_output", layer.output, q), ("ffn_down", layer.down, layout.ffn)] {
                // A K-quant super-block may be shared by two ranks (each reads its own 32-value groups).
                let granularity = matrix.type.sliceGranularity
                for column in [cut.lowerBound, cut.upperBound] where column % granularity != 0 {
                    throw .unalignedCut(tensor: "blk.\(l).\(name).weight", column: column, blockSize: granularity, ranks: layout.size)
                }
            }
        }
        var copy = self
        copy.layers = layers.map { l in
            LlamaLayerWeights(
                attentionNorm: l.attentionNorm,
                query: l.query.rowSlice(q), key: l.key.rowSlice(kv), value: l.value.rowSlice(kv),
                output: l.output.columnSlice(q),
                mlpNorm: l.mlpNorm,
                gate: l.gate.rowSlice(layout.ffn), up: l.up.rowSlice(layout.ffn),
                down: l.down.columnSlice(layout.ffn))
        }
        return copy
    }
}
