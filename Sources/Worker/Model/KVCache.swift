/// Keys and values of every layer for the tokens a sequence has committed, plus room for the
/// tokens of the step in flight.
///
/// Layout per layer: [kvHeads, capacity, headDim] fp32, so one head's keys are contiguous. A step
/// with n new tokens writes them at slots committed ..< committed + n; `commit` then keeps some of
/// them (the accepted path of a tree, or all of them for prefill and plain decoding) by moving them
/// down to committed, committed + 1, ... Slots beyond `committed` are scratch and are overwritten.
public final class KVCache: @unchecked Sendable {
    // Owned by one forward pass at a time (the rank's engine thread); not shared concurrently.
    public let layerCount: Int
    public let kvHeadCount: Int
    public let headDimension: Int
    public let capacity: Int
    public private(set) var committed = 0
    /// When non-nil, every change to the committed prefix is also appended here (rank 0 of a
    /// group records them for the next step plan; the other ranks replay them with `apply`).
    var journal: [Operation]?
    private let keys: UnsafeMutablePointer<Float>
    private let values: UnsafeMutablePointer<Float>
    private let layerStride: Int
    private let headStride: Int

    public init(layerCount: Int, kvHeadCount: Int, headDimension: Int, capacity: Int) {
        precondition(layerCount > 0 && kvHeadCount > 0 && headDimension > 0 && capacity > 0)
        self.layerCount = layerCount
        self.kvHeadCount = kvHeadCount
        self.headDimension = headDimension
        self.capacity = capacity
        headStride = capacity * headDimension
        layerStride = kvHeadCount * headStride
        let total = layerCount * layerStride
        keys = .allocate(capacity: total)
        keys.initialize(repeating: 0, count: total)
        values = .allocate(capacity: total)
        values.initialize(repeating: 0, count: total)
    }

    deinit {
        keys.deallocate()
        values.deallocate()
    }

    /// Bytes held by keys and values.
    public var byteCount: Int { 2 * layerCount * layerStride * MemoryLayout<Float>.size }

    /// Free slots after the committed ones.
    public var available: Int { capacity - committed }

    /// A change to the committed prefix, as step plans carry it.
    public enum Operation: Sendable, Equatable {
        case reset
        case commit(count: Int)
        case commitKept([Int])
        case truncate(to: Int)
    }

    /// Replays an operation recorded on another rank.
    public func apply(_ operation: Operation) {
        switch operation {
        case .reset: reset()
        case .commit(let count): commit(count: count)
        case .commitKept(let kept): commit(kept: kept)
        case .truncate(let length): truncate(to: length)
        }
    }

    /// Forgets everything (a new sequence).
    public func reset() {
        committed = 0
        journal?.append(.reset)
    }

    /// Start of head `head`'s keys in `layer`: [capacity, headDim].
    @inline(__always)
    public func keys(layer: Int, head: Int) -> UnsafeMutablePointer<Float> {
        keys + layer * layerStride + head * headStride
    }

    /// Start of head `head`'s values in `layer`: [capacity, headDim].
    @inline(__always)
    public func values(layer: Int, head: Int) -> UnsafeMutablePointer<Float> {
        values + layer * layerStride + head * headStride
    }

    /// Keeps step slots `kept` (offsets from `committed`, strictly increasing), moving them to
    /// committed, committed + 1, ..., and makes them part of the committed prefix.
    public func commit(kept: [Int]) {
        var previous = -1
        for (i, offset) in kept.enumerated() {
            precondition(offset > previous && committed + offset < capacity, "kept slots must increase and fit")
            previous = offset
            guard offset != i else { continue }
            let from = committed + offset
            let to = committed + i
            for layer in 0..<layerCount {
                for head in 0..<kvHeadCount {
                    let k = keys(layer: layer, head: head)
                    let v = values(layer: layer, head: head)
                    (k + to * headDimension).update(from: k + from * headDimension, count: headDimension)
                    (v + to * headDimension).update(from: v + from * headDimension, count: headDimension)
                }
            }
        }
        committed += kept.count
        journal?.append(.commitKept(kept))
    }

    /// Keeps the first `count` slots of the step (prefill, plain decoding).
    public func commit(count: Int) {
        precondition(count >= 0 && committed + count <= capacity)
        committed += count
        journal?.append(.commit(count: count))
    }

    /// Drops committed tokens after the first `length` (for example to reuse a shared prompt prefix).
    public func truncate(to length: Int) {
        precondition(length >= 0 && length <= committed)
        committed = length
        journal?.append(.truncate(to: length))
    }
}
