import Collectives

/// What every rank does in one step, decided by rank 0 and broadcast once (DESIGN.md section 1):
/// first the cache operations rank 0 made since the previous plan (resets, commits of the kept
/// tokens), then the step itself: a forward over tokens at positions with a tree mask, an LM-head
/// product over hidden rows (vocabulary-parallel), or the end.
public struct StepPlan: Sendable, Equatable {
    public enum Kind: Int32, Sendable {
        case forward = 1
        /// Ends `LlamaModel.serve` on every rank.
        case shutdown = 2
        /// Every rank answers with a barrier (`LlamaModel.synchronizeGroup`).
        case synchronize = 3
        /// Every rank multiplies `hidden` by its rows of the LM head and rank 0 gathers them
        /// (`LlamaModel.logits`).
        case logits = 4
    }

    /// A change to one sequence's cache.
    public struct CacheOperation: Sendable, Equatable {
        public var sequence: Int
        public var operation: KVCache.Operation

        public init(sequence: Int, operation: KVCache.Operation) {
            self.sequence = sequence
            self.operation = operation
        }
    }

    public var kind: Kind
    public var cacheOps: [CacheOperation]
    public var tokens: [Int32]
    public var positions: [Int32]
    public var mask: TreeMask
    /// Which sequence each run of tokens belongs to (`LlamaModel.forward(...segments:)`).
    public var segments: [StepSegment]
    /// `.logits`: the hidden rows [rows, hidden size] to multiply by the LM head.
    public var hidden: [Float]

    public init(kind: Kind, cacheOps: [CacheOperation] = [], tokens: [Int32] = [], positions: [Int32] = [],
                mask: TreeMask = TreeMask(count: 0), segments: [StepSegment]? = nil, hidden: [Float] = []) {
        self.kind = kind
        self.cacheOps = cacheOps
        self.tokens = tokens
        self.positions = positions
        self.mask = mask
        self.segments = segments ?? (tokens.isEmpty ? [] : [StepSegment(sequence: 0, count: tokens.count)])
        self.hidden = hidden
    }

    // Wire format: Int32 words. Header: magic, kind, token count, op word count, segment count,
    // mask words per row, total payload words, hidden values; then the ops (code, sequence,
    // arguments), the segments (sequence, count), tokens, positions, the mask's UInt64 words as
    // pairs of Int32, and the hidden values' bit patterns. The first `inlineWords` words travel in one fixed-size broadcast; a longer plan (a
    // prefill) sends the rest in a second one.
    static let magic: Int32 = 0x4D54_5053  // "MTPS"
    static let headerWords = 8
    /// Words of the fixed first broadcast: room for a decode step or a tree of a few dozen nodes.
    public static let inlineWords = 1024

    func encode() -> [Int32] {
        var ops: [Int32] = []
        for op in cacheOps {
            let s = Int32(op.sequence)
            switch op.operation {
            case .reset: ops += [1, s]
            case .commit(let count): ops += [2, s, Int32(count)]
            case .commitKept(let kept): ops += [3, s, Int32(kept.count)] + kept.map { Int32($0) }
            case .truncate(let length): ops += [4, s, Int32(length)]
            }
        }
        let segmentWords = segments.flatMap { [Int32($0.sequence), Int32($0.count)] }
        var maskWords: [Int32] = []
        maskWords.reserveCapacity(2 * mask.words.count)
        for w in mask.words {
            maskWords.append(Int32(truncatingIfNeeded: w))
            maskWords.append(Int32(truncatingIfNeeded: w >> 32))
        }
        let payload = ops.count + segmentWords.count + tokens.count + positions.count + maskWords.count + hidden.count
        var words: [Int32] = [Self.magic, kind.rawValue, Int32(tokens.count), Int32(ops.count),
                              Int32(segments.count), Int32(mask.wordsPerRow), Int32(payload), Int32(hidden.count)]
        words += ops
        words += segmentWords
        words += tokens
        words += positions
        words += maskWords
        words += hidden.map { Int32(bitPattern: $0.bitPattern) }
        return words
    }

    static func decode(_ w: [Int32]) throws(PlanError) -> StepPlan {
        guard w.count >= headerWords, w[0] == magic, let kind = Kind(rawValue: w[1]) else { throw .malformed("bad header") }
        let n = Int(w[2]), opWords = Int(w[3]), segmentCount = Int(w[4]), wordsPerRow = Int(w[5]), payload = Int(w[6])
        let hiddenCount = Int(w[7])
        guard n >= 0, opWords >= 0, segmentCount >= 0, wordsPerRow >= 0, hiddenCount >= 0, w.count >= headerWords + payload,
              payload == opWords + 2 * segmentCount + 2 * n + 2 * n * wordsPerRow + hiddenCount
        else { throw .malformed("inconsistent sizes") }
        var i = headerWords
        var ops: [CacheOperation] = []
        let opsEnd = i + opWords
        while i < opsEnd {
            guard i + 1 < opsEnd else { throw .malformed("truncated cache operation") }
            let s = Int(w[i + 1])
            switch w[i] {
            case 1: ops.append(.init(sequence: s, operation: .reset)); i += 2
            case 2 where i + 2 < opsEnd: ops.append(.init(sequence: s, operation: .commit(count: Int(w[i + 2])))); i += 3
            case 3 where i + 2 < opsEnd && w[i + 2] >= 0 && i + 3 + Int(w[i + 2]) <= opsEnd:
                let count = Int(w[i + 2])
                ops.append(.init(sequence: s, operation: .commitKept(w[(i + 3)..<(i + 3 + count)].map(Int.init))))
                i += 3 + count
            case 4 where i + 2 < opsEnd: ops.append(.init(sequence: s, operation: .truncate(to: Int(w[i + 2])))); i += 3
            default: throw .malformed("bad cache operation \(w[i])")
            }
        }
        var segments: [StepSegment] = []
        for _ in 0..<segmentCount {
            segments.append(StepSegment(sequence: Int(w[i]), count: Int(w[i + 1])))
            i += 2
        }
        let tokens = Array(w[i..<(i + n)]); i += n
        let positions = Array(w[i..<(i + n)]); i += n
        var maskWords: [UInt64] = []
        for k in 0..<(n * wordsPerRow) {
            maskWords.append(UInt64(UInt32(bitPattern: w[i + 2 * k])) | UInt64(UInt32(bitPattern: w[i + 2 * k + 1])) << 32)
        }
        i += 2 * n * wordsPerRow
        let hidden = w[i..<(i + hiddenCount)].map { Float(bitPattern: UInt32(bitPattern: $0)) }
        guard wordsPerRow == (n + 63) / 64 else { throw .malformed("mask of \(wordsPerRow) words per row for \(n) tokens") }
        return StepPlan(kind: kind, cacheOps: ops, tokens: tokens, positions: positions,
                        mask: TreeMask(count: n, words: maskWords), segments: segments, hidden: hidden)
    }

    /// Rank 0: sends the plan to every rank (one broadcast, two for long plans).
    func broadcast(_ communicator: any Communicator) throws(CollectiveError) {
        var words = encode()
        let total = words.count
        var first = [Int32](repeating: 0, count: Self.inlineWords)
        for k in 0..<min(total, Self.inlineWords) { first[k] = words[k] }
        try first.withUnsafeMutableBufferPointer { b throws(CollectiveError) in
            try communicator.broadcastWaiting(UnsafeMutableRawBufferPointer(b), root: 0)
        }
        if total > Self.inlineWords {
            try words.withUnsafeMutableBufferPointer { b throws(CollectiveError) in
                try communicator.broadcast(UnsafeMutableBufferPointer(rebasing: b[Self.inlineWords...]), root: 0)
            }
        }
    }

    /// Other ranks: receives the next plan from rank 0.
    static func receive(_ communicator: any Communicator) throws(ModelError) -> StepPlan {
        var first = [Int32](repeating: 0, count: inlineWords)
        do {
            try first.withUnsafeMutableBufferPointer { b throws(CollectiveError) in
                try communicator.broadcastWaiting(UnsafeMutableRawBufferPointer(b), root: 0)
            }
        } catch { throw .collective(error.description) }
        guard first[0] == magic, first[6] >= 0 else { throw .collective("received a malformed step plan (bad header)") }
        let total = headerWords + Int(first[6])
        var words = first
        if total > inlineWords {
            var rest = [Int32](repeating: 0, count: total - inlineWords)
            do {
                try rest.withUnsafeMutableBufferPointer { b throws(CollectiveError) in try communicator.broadcast(b, root: 0) }
            } catch { throw .collective(error.description) }
            words += rest
        }
        do { return try decode(words) } catch { throw .collective("received a malformed step plan: \(error)") }
    }
}

public enum PlanError: Error, CustomStringConvertible, Sendable {
    case malformed(String)
    public var description: String {
        switch self { case .malformed(let what): "malformed step plan: \(what)" }
    }
}
