/// How a KV cache stores keys and values (`--cache-type`): IEEE fp16 (the default: half the memory
/// and the bytes attention reads per token; each value rounded to nearest even when it is written,
/// as llama.cpp's default F16 cache does), or fp32 (exact).
public enum KVCacheType: String, Sendable, CaseIterable {
    case f32, f16

    /// Bytes per stored value.
    public var elementBytes: Int { self == .f32 ? 4 : 2 }
}

/// A value type a KV cache stores (`Float` for an fp32 cache, `Float16` for an fp16 one), read by
/// the attention kernels eight values at a time as fp32.
public protocol KVElement {
    static var cacheType: KVCacheType { get }
    /// Eight stored values at `p` (any alignment) as fp32 (exact).
    static func load8(_ p: UnsafePointer<Self>) -> SIMD8<Float>
    /// One stored value as fp32 (exact).
    static func float(_ value: Self) -> Float
    /// `count` fp32 values stored at `to` (fp16: rounded to nearest even).
    static func store(_ from: UnsafePointer<Float>, count: Int, to: UnsafeMutablePointer<Self>)
}

extension Float: KVElement {
    public static var cacheType: KVCacheType { .f32 }
    @inline(__always) public static func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> { SIMDSupport.load8(p) }
    @inline(__always) public static func float(_ value: Float) -> Float { value }
    @inline(__always) public static func store(_ from: UnsafePointer<Float>, count: Int, to: UnsafeMutablePointer<Float>) {
        to.update(from: from, count: count)
    }
}

extension Float16: KVElement {
    public static var cacheType: KVCacheType { .f16 }
    @inline(__always) public static func load8(_ p: UnsafePointer<Float16>) -> SIMD8<Float> {
        SIMDSupport.loadHalf8(UnsafeRawPointer(p))
    }
    @inline(__always) public static func float(_ value: Float16) -> Float { Float(value) }
    @inline(__always) public static func store(_ from: UnsafePointer<Float>, count: Int, to: UnsafeMutablePointer<Float16>) {
        for i in 0..<count { to[i] = Float16(from[i]) }
    }
}

/// Keys and values of every layer for the tokens a sequence has committed, plus room for the
/// tokens of the step in flight.
///
/// Layout per layer and KV head, of the cache's type (fp32 or fp16), for `slots` (the capacity
/// rounded up to a multiple of `keyTile`): values [slots, headDim] (one slot's values contiguous);
/// keys in tiles of `keyTile` slots, each tile [headDim, keyTile] (a dimension of 64 consecutive
/// slots contiguous, so attention scores 8 keys per vector with no horizontal sums, and a tile
/// stays in L1 while several queries read it). A step with n new tokens writes them at slots committed ..< committed + n;
/// `commit` then keeps some of them (the accepted path of a tree, or all of them for prefill and
/// plain decoding) by moving them down to committed, committed + 1, ... Slots beyond `committed`
/// are scratch and are overwritten.
public final class KVCache: @unchecked Sendable {
    // Owned by one forward pass at a time (the rank's engine thread); not shared concurrently.
    public let layerCount: Int
    public let kvHeadCount: Int
    public let headDimension: Int
    public let capacity: Int
    public let type: KVCacheType
    public private(set) var committed = 0
    /// When non-nil, every change to the committed prefix is also appended here (rank 0 of a
    /// group records them for the next step plan; the other ranks replay them with `apply`).
    var journal: [Operation]?
    private let keys: UnsafeMutableRawPointer
    private let values: UnsafeMutableRawPointer
    /// Elements between layers and between heads.
    private let layerStride: Int
    private let headStride: Int

    /// Slots per key tile.
    public static let keyTile = 64

    /// Where slot `slot`'s dimension `d` sits among a head's keys.
    @inline(__always)
    public static func keyOffset(slot: Int, dimension d: Int, headDimension hd: Int) -> Int {
        (slot / keyTile) * (keyTile * hd) + d * keyTile + slot % keyTile
    }

    public init(layerCount: Int, kvHeadCount: Int, headDimension: Int, capacity: Int, type: KVCacheType = .f32) {
        precondition(layerCount > 0 && kvHeadCount > 0 && headDimension > 0 && capacity > 0)
        self.layerCount = layerCount
        self.kvHeadCount = kvHeadCount
        self.headDimension = headDimension
        self.capacity = capacity
        self.type = type
        headStride = (capacity + Self.keyTile - 1) / Self.keyTile * Self.keyTile * headDimension
        layerStride = kvHeadCount * headStride
        let bytes = layerCount * layerStride * type.elementBytes
        keys = .allocate(byteCount: bytes, alignment: 64)
        keys.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        values = .allocate(byteCount: bytes, alignment: 64)
        values.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        switch type {
        case .f32:
            keys.bindMemory(to: Float.self, capacity: bytes / 4)
            values.bindMemory(to: Float.self, capacity: bytes / 4)
        case .f16:
            keys.bindMemory(to: Float16.self, capacity: bytes / 2)
            values.bindMemory(to: Float16.self, capacity: bytes / 2)
        }
    }

    deinit {
        keys.deallocate()
        values.deallocate()
    }

    /// Bytes held by keys and values.
    public var byteCount: Int { 2 * layerCount * layerStride * type.elementBytes }

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

    /// Start of head `head`'s keys in `layer`: tiles of `keyTile` slots, each [headDim, keyTile]
    /// (`keyOffset`), of `E`, which must be the cache's element type.
    @inline(__always)
    public func keys<E: KVElement>(layer: Int, head: Int, as: E.Type) -> UnsafeMutablePointer<E> {
        precondition(E.cacheType == type, "a \(type) cache read as \(E.cacheType)")
        return keys.assumingMemoryBound(to: E.self) + layer * layerStride + head * headStride
    }

    /// Start of head `head`'s values in `layer`: [slots, headDim] of `E` (the cache's type).
    @inline(__always)
    public func values<E: KVElement>(layer: Int, head: Int, as: E.Type) -> UnsafeMutablePointer<E> {
        precondition(E.cacheType == type, "a \(type) cache read as \(E.cacheType)")
        return values.assumingMemoryBound(to: E.self) + layer * layerStride + head * headStride
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
            switch type {
            case .f32: move(Float.self, from: from, to: to)
            case .f16: move(Float16.self, from: from, to: to)
            }
        }
        committed += kept.count
        journal?.append(.commitKept(kept))
    }

    /// Copies slot `from`'s keys and values to slot `to` in every layer and head.
    private func move<E: KVElement>(_: E.Type, from: Int, to: Int) {
        let hd = headDimension
        for layer in 0..<layerCount {
            for head in 0..<kvHeadCount {
                let k = keys(layer: layer, head: head, as: E.self), v = values(layer: layer, head: head, as: E.self)
                for d in 0..<hd {
                    k[Self.keyOffset(slot: to, dimension: d, headDimension: hd)] =
                        k[Self.keyOffset(slot: from, dimension: d, headDimension: hd)]
                }
                (v + to * hd).update(from: v + from * hd, count: hd)
            }
        }
    }

    /// Stores one slot's keys and values of one layer and KV head (rounded to the cache's type).
    @inline(__always)
    func store<E: KVElement>(_: E.Type, layer: Int, head: Int, slot: Int, keys k: UnsafePointer<Float>,
                             values v: UnsafePointer<Float>) {
        let hd = headDimension
        let tiles = keys(layer: layer, head: head, as: E.self)
        for d in 0..<hd { E.store(k + d, count: 1, to: tiles + Self.keyOffset(slot: slot, dimension: d, headDimension: hd)) }
        E.store(v, count: hd, to: values(layer: layer, head: head, as: E.self) + slot * hd)
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
