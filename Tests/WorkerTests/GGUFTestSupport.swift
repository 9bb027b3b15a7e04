import Foundation
@testable import Worker

/// A fresh directory under the system temporary directory, removed when the value goes away.
/// Each test makes its own, so tests running in parallel never share a file.
final class GGUFTestDirectory {
    let url: URL

    init() {
        url = FileManager.default.temporaryDirectory
            .appendingPathComponent("medusa-gguf-tests-\(UUID().uuidString)", isDirectory: true)
        try! FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    func path(_ name: String) -> String { url.appendingPathComponent(name).path }

    /// Writes `bytes` to `name` in this directory and returns the path.
    @discardableResult
    func write(_ bytes: [UInt8], to name: String = "model.gguf") -> String {
        let p = path(name)
        try! Data(bytes).write(to: URL(fileURLWithPath: p))
        return p
    }

    /// Writes `bytes` and opens them as a GGUF file, returning the file or the reader's error.
    func open(_ bytes: [UInt8], as name: String = "model.gguf") -> Result<GGUFFile, WeightFileError> {
        let p = write(bytes, to: name)
        do throws(WeightFileError) { return .success(try GGUFFile(path: p)) } catch { return .failure(error) }
    }

    /// The reader's error for `bytes`, or nil when the file opened.
    func openError(_ bytes: [UInt8], as name: String = "bad.gguf") -> WeightFileError? {
        if case .failure(let e) = open(bytes, as: name) { return e }
        return nil
    }
}

/// Hand-assembled GGUF bytes, for files GGUFWriter would never produce: wrong type ids, bad counts,
/// offsets that point nowhere. Everything little-endian, as in the format.
struct GGUFBytes {
    var bytes: [UInt8] = []

    var count: Int { bytes.count }

    mutating func append<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }

    mutating func raw(_ b: [UInt8]) { bytes.append(contentsOf: b) }

    /// A GGUF string: u64 byte length, then the UTF-8 bytes.
    mutating func string(_ s: String) {
        append(UInt64(s.utf8.count))
        bytes.append(contentsOf: Array(s.utf8))
    }

    mutating func header(magic: String = "GGUF", version: UInt32 = 3, tensorCount: UInt64, keyCount: UInt64) {
        bytes.append(contentsOf: Array(magic.utf8))
        append(version)
        append(tensorCount)
        append(keyCount)
    }

    /// A metadata key and its value type id; the caller appends the value.
    mutating func key(_ name: String, type: GGUFValue.Kind) { key(name, typeID: type.rawValue) }

    mutating func key(_ name: String, typeID: UInt32) {
        string(name)
        append(typeID)
    }

    mutating func tensorInfo(_ name: String, dims: [UInt64], type: UInt32, offset: UInt64) {
        string(name)
        append(UInt32(dims.count))
        for d in dims { append(d) }
        append(type)
        append(offset)
    }

    mutating func pad(to alignment: Int) {
        while bytes.count % alignment != 0 { bytes.append(0) }
    }

    /// A v3 file with one tensor of `dims` and `type` at `offset`, followed by `dataBytes` bytes of
    /// data (default: exactly what the tensor needs).
    static func singleTensor(
        name: String = "t", dims: [UInt64], type: UInt32, offset: UInt64 = 0, dataBytes: Int? = nil
    ) -> [UInt8] {
        var b = GGUFBytes()
        b.header(tensorCount: 1, keyCount: 0)
        b.tensorInfo(name, dims: dims, type: type, offset: offset)
        b.pad(to: 32)
        let size: Int
        if let dataBytes {
            size = dataBytes
        } else if let t = TensorType(rawValue: type) {
            size = dims.map(Int.init).reduce(1, *) / t.blockSize * t.bytesPerBlock
        } else {
            size = 64
        }
        b.raw([UInt8](repeating: 0x5A, count: size))
        return b.bytes
    }
}

/// Deterministic pseudo-random bytes (SplitMix64), so failures reproduce.
func ggufTestBytes(_ count: Int, seed: UInt64) -> [UInt8] {
    var state = seed
    var out: [UInt8] = []
    out.reserveCapacity(count)
    while out.count < count {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        withUnsafeBytes(of: z) { out.append(contentsOf: $0.prefix(count - out.count)) }
    }
    return out
}
