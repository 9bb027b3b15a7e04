import Foundation

/// Writes GGUF v3 files: metadata, then tensor infos, then aligned tensor data. Used by tests to
/// build synthetic models and malformed files, and by tools that save weights.
public struct GGUFWriter {
    public struct Tensor {
        public var name: String
        /// GGML order: dimensions[0] is the contiguous one.
        public var dimensions: [Int]
        public var type: TensorType
        public var data: [UInt8]

        public init(name: String, dimensions: [Int], type: TensorType, data: [UInt8]) {
            self.name = name
            self.dimensions = dimensions
            self.type = type
            self.data = data
        }
    }

    public var metadata: [(String, GGUFValue)] = []
    public var tensors: [Tensor] = []
    public var alignment = 32
    public var version: UInt32 = 3

    public init() {}

    public mutating func set(_ key: String, _ value: GGUFValue) {
        if let i = metadata.firstIndex(where: { $0.0 == key }) { metadata[i].1 = value } else { metadata.append((key, value)) }
    }

    public mutating func addTensor(_ name: String, dimensions: [Int], type: TensorType, data: [UInt8]) {
        tensors.append(Tensor(name: name, dimensions: dimensions, type: type, data: data))
    }

    /// Adds an F32 tensor from values.
    public mutating func addTensor(_ name: String, dimensions: [Int], floats: [Float]) {
        precondition(dimensions.reduce(1, *) == floats.count, "\(name): \(floats.count) values for shape \(dimensions)")
        var bytes: [UInt8] = []
        bytes.reserveCapacity(floats.count * 4)
        for f in floats { withUnsafeBytes(of: f.bitPattern.littleEndian) { bytes.append(contentsOf: $0) } }
        addTensor(name, dimensions: dimensions, type: .f32, data: bytes)
    }

    /// The file's bytes.
    public func serialized() -> [UInt8] {
        var out: [UInt8] = []
        out.append(contentsOf: Array("GGUF".utf8))
        out.appendLE(version)
        out.appendLE(UInt64(tensors.count))
        var meta = metadata
        if alignment != 32, !meta.contains(where: { $0.0 == "general.alignment" }) {
            meta.append(("general.alignment", .uint32(UInt32(alignment))))
        }
        out.appendLE(UInt64(meta.count))
        for (key, value) in meta {
            out.appendString(key)
            out.appendValue(value)
        }
        var offset = 0
        var offsets: [Int] = []
        for t in tensors {
            offsets.append(offset)
            offset += (t.data.count + alignment - 1) / alignment * alignment
        }
        for (t, off) in zip(tensors, offsets) {
            out.appendString(t.name)
            out.appendLE(UInt32(t.dimensions.count))
            for d in t.dimensions { out.appendLE(UInt64(d)) }
            out.appendLE(t.type.rawValue)
            out.appendLE(UInt64(off))
        }
        out.padTo(alignment)
        for t in tensors {
            out.append(contentsOf: t.data)
            out.padTo(alignment)
        }
        return out
    }

    public func write(to path: String) throws {
        try Data(serialized()).write(to: URL(fileURLWithPath: path))
    }
}

extension Array where Element == UInt8 {
    fileprivate mutating func appendLE<T: FixedWidthInteger>(_ v: T) {
        Swift.withUnsafeBytes(of: v.littleEndian) { append(contentsOf: $0) }
    }

    fileprivate mutating func appendString(_ s: String) {
        appendLE(UInt64(s.utf8.count))
        append(contentsOf: Array(s.utf8))
    }

    fileprivate mutating func padTo(_ alignment: Int) {
        while count % alignment != 0 { append(0) }
    }

    fileprivate mutating func appendValue(_ value: GGUFValue) {
        switch value {
        case .uint8(let v): appendLE(UInt32(0)); appendLE(v)
        case .int8(let v): appendLE(UInt32(1)); appendLE(v)
        case .uint16(let v): appendLE(UInt32(2)); appendLE(v)
        case .int16(let v): appendLE(UInt32(3)); appendLE(v)
        case .uint32(let v): appendLE(UInt32(4)); appendLE(v)
        case .int32(let v): appendLE(UInt32(5)); appendLE(v)
        case .float32(let v): appendLE(UInt32(6)); appendLE(v.bitPattern)
        case .bool(let v): appendLE(UInt32(7)); append(v ? 1 : 0)
        case .string(let v): appendLE(UInt32(8)); appendString(v)
        case .array(let a): appendLE(UInt32(9)); appendArray(a)
        case .uint64(let v): appendLE(UInt32(10)); appendLE(v)
        case .int64(let v): appendLE(UInt32(11)); appendLE(v)
        case .float64(let v): appendLE(UInt32(12)); appendLE(v.bitPattern)
        }
    }

    fileprivate mutating func appendArray(_ a: GGUFArray) {
        func header(_ type: UInt32) { appendLE(type); appendLE(UInt64(a.count)) }
        switch a {
        case .uint8(let v): header(0); v.forEach { appendLE($0) }
        case .int8(let v): header(1); v.forEach { appendLE($0) }
        case .uint16(let v): header(2); v.forEach { appendLE($0) }
        case .int16(let v): header(3); v.forEach { appendLE($0) }
        case .uint32(let v): header(4); v.forEach { appendLE($0) }
        case .int32(let v): header(5); v.forEach { appendLE($0) }
        case .float32(let v): header(6); v.forEach { appendLE($0.bitPattern) }
        case .bool(let v): header(7); v.forEach { append($0 ? 1 : 0) }
        case .string(let v): header(8); v.forEach { appendString($0) }
        case .array(let v): header(9); v.forEach { appendArray($0) }
        case .uint64(let v): header(10); v.forEach { appendLE($0) }
        case .int64(let v): header(11); v.forEach { appendLE($0) }
        case .float64(let v): header(12); v.forEach { appendLE($0.bitPattern) }
        }
    }
}
