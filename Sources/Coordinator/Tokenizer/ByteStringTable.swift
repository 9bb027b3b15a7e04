/// A hash map from byte strings to small integers, stored flat: every key's bytes in one array and
/// an open-addressing index of key numbers. Lookups take a borrowed byte buffer and never allocate,
/// which matters in the merge loops (a 10 KB prompt does tens of thousands of lookups).
///
/// Keys are compared byte for byte. (Swift `String` keys would compare by canonical equivalence
/// and merge distinct tokens such as a precomposed "é" and "e" + U+0301.)
struct ByteStringTable: Sendable {
    /// All keys' bytes, back to back.
    private var storage: [UInt8] = []
    /// Key k occupies storage[starts[k] ..< starts[k + 1]].
    private var starts: [Int] = [0]
    private var values: [Int32] = []
    /// Open-addressing slots holding key numbers, -1 when empty. The count is a power of two.
    private var slots: [Int32]
    private var mask: Int

    init(expectedCount: Int = 16) {
        var capacity = 16
        while capacity < expectedCount * 2 { capacity <<= 1 }
        slots = Array(repeating: -1, count: capacity)
        mask = capacity - 1
    }

    /// The number of distinct keys.
    var count: Int { values.count }

    /// FNV-1a over the bytes, then a final avalanche so the low bits used for the slot are mixed.
    private static func hash(_ bytes: UnsafeBufferPointer<UInt8>) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes {
            h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3
        }
        h ^= h >> 33
        h = h &* 0xff51_afd7_ed55_8ccd
        h ^= h >> 33
        return Int(truncatingIfNeeded: h)
    }

    private func keyEquals(_ key: Int, _ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        let start = starts[key], end = starts[key + 1]
        guard end - start == bytes.count else { return false }
        return storage.withUnsafeBufferPointer { s in
            var i = 0
            while i < bytes.count {
                if s[start + i] != bytes[i] { return false }
                i += 1
            }
            return true
        }
    }

    /// The slot holding `bytes`, or the empty slot where it would go.
    private func slot(for bytes: UnsafeBufferPointer<UInt8>) -> Int {
        var i = Self.hash(bytes) & mask
        while true {
            let k = Int(slots[i])
            if k < 0 || keyEquals(k, bytes) { return i }
            i = (i + 1) & mask
        }
    }

    func value(for bytes: UnsafeBufferPointer<UInt8>) -> Int32? {
        let k = slots[slot(for: bytes)]
        return k < 0 ? nil : values[Int(k)]
    }

    func value(for bytes: [UInt8]) -> Int32? {
        bytes.withUnsafeBufferPointer { value(for: $0) }
    }

    /// Sets the value for `bytes`, replacing an existing one.
    mutating func set(_ value: Int32, for bytes: UnsafeBufferPointer<UInt8>) {
        let s = slot(for: bytes)
        if slots[s] >= 0 {
            values[Int(slots[s])] = value
            return
        }
        let key = values.count
        storage.append(contentsOf: bytes)
        starts.append(storage.count)
        values.append(value)
        slots[s] = Int32(key)
        if values.count * 2 > slots.count { grow() }
    }

    mutating func set(_ value: Int32, for bytes: [UInt8]) {
        bytes.withUnsafeBufferPointer { set(value, for: $0) }
    }

    /// The value for `bytes`, inserting `makeValue()` first when the key is new.
    mutating func valueInserting(_ bytes: UnsafeBufferPointer<UInt8>, _ makeValue: () -> Int32) -> Int32 {
        let s = slot(for: bytes)
        if slots[s] >= 0 { return values[Int(slots[s])] }
        let v = makeValue()
        let key = values.count
        storage.append(contentsOf: bytes)
        starts.append(storage.count)
        values.append(v)
        slots[s] = Int32(key)
        if values.count * 2 > slots.count { grow() }
        return v
    }

    /// Calls `body` with the bytes of the key inserted `index`-th.
    func withKey<R>(at index: Int, _ body: (UnsafeBufferPointer<UInt8>) -> R) -> R {
        let start = starts[index], end = starts[index + 1]
        return storage.withUnsafeBufferPointer { body(UnsafeBufferPointer(rebasing: $0[start..<end])) }
    }

    private mutating func grow() {
        let capacity = slots.count * 2
        slots = Array(repeating: -1, count: capacity)
        mask = capacity - 1
        for key in 0..<values.count {
            let start = starts[key], end = starts[key + 1]
            let s = storage.withUnsafeBufferPointer { buf in
                slot(for: UnsafeBufferPointer(rebasing: buf[start..<end]))
            }
            slots[s] = Int32(key)
        }
    }
}
