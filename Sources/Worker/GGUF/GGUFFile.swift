/// A GGUF file (versions 2 and 3) read through a memory mapping: metadata, tensor infos, and
/// bounds-checked views of tensor data. Every malformation is a `WeightFileError` naming the file.
public final class GGUFFile: @unchecked Sendable {
    // Immutable after init.
    public let path: String
    public let version: Int
    public let metadata: [String: GGUFValue]
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    /// Tensor infos in file order.
    public let tensors: [GGUFTensorInfo]
    /// Byte offset of the tensor data section in the file.
    public let dataOffset: Int
    public let alignment: Int
    private let file: MappedFile
    private let tensorIndex: [String: Int]

    /// The file's size in bytes.
    public var fileSize: Int { file.count }

    public convenience init(path: String) throws(WeightFileError) {
        try self.init(mapping: MappedFile(path: path))
    }

    public init(mapping: MappedFile) throws(WeightFileError) {
        file = mapping
        path = mapping.path
        var reader = ByteReader(bytes: mapping.bytes, path: mapping.path)

        let magic = try reader.bytes(4, what: "magic")
        guard Array(magic) == Array("GGUF".utf8) else {
            let shown = magic.map { (32...126).contains($0) ? String(UnicodeScalar($0)) : "\\x" + String($0, radix: 16) }
            throw WeightFileError(path: path, problem: .badMagic(found: "\"\(shown.joined())\""))
        }
        let rawVersion = try reader.read(UInt32.self, what: "version")
        guard rawVersion == 2 || rawVersion == 3 else {
            if rawVersion.byteSwapped == 2 || rawVersion.byteSwapped == 3 {
                throw WeightFileError(path: path, problem: .badValue(key: "version", reason: "big-endian GGUF files are not supported"))
            }
            throw WeightFileError(path: path, problem: .unsupportedVersion(Int(rawVersion)))
        }
        version = Int(rawVersion)
        let tensorCount = try reader.count(what: "tensor count", minimumElementSize: 8 + 4 + 8 + 4 + 8)
        let keyCount = try reader.count(what: "metadata count", minimumElementSize: 8 + 4 + 1)

        var metadata: [String: GGUFValue] = [:]
        var keys: [String] = []
        keys.reserveCapacity(keyCount)
        for _ in 0..<keyCount {
            let key = try reader.string(what: "metadata key")
            let typeID = try reader.read(UInt32.self, what: "type of metadata key \(key.quoted())")
            guard let kind = GGUFValue.Kind(rawValue: typeID) else {
                throw WeightFileError(path: path, problem: .invalidValueType(key: key, type: typeID))
            }
            let value = try reader.value(kind, key: key)
            guard metadata.updateValue(value, forKey: key) == nil else {
                throw WeightFileError(path: path, problem: .duplicateKey(key))
            }
            keys.append(key)
        }
        self.metadata = metadata
        metadataKeys = keys

        var alignment = 32
        if let value = metadata["general.alignment"] {
            guard let a = value.integer else {
                throw WeightFileError(path: path, problem: .wrongKeyType(key: "general.alignment", expected: "an integer", found: value.typeName))
            }
            guard a > 0, a & (a - 1) == 0 else { throw WeightFileError(path: path, problem: .badAlignment(a)) }
            alignment = a
        }
        self.alignment = alignment

        struct RawInfo { var name: String; var dims: [Int]; var type: UInt32; var offset: Int }
        var raw: [RawInfo] = []
        raw.reserveCapacity(tensorCount)
        for _ in 0..<tensorCount {
            let name = try reader.string(what: "tensor name")
            let nDims = Int(try reader.read(UInt32.self, what: "dimension count of tensor \(name.quoted())"))
            guard (1...4).contains(nDims) else {
                throw WeightFileError(path: path, problem: .badTensorShape(tensor: name, reason: "\(nDims) dimensions (expected 1 to 4)"))
            }
            var dims: [Int] = []
            for _ in 0..<nDims {
                let d = try reader.read(UInt64.self, what: "dimensions of tensor \(name.quoted())")
                guard d > 0, d < 1 << 40 else {
                    throw WeightFileError(path: path, problem: .badTensorShape(tensor: name, reason: "dimension \(d)"))
                }
                dims.append(Int(d))
            }
            let type = try reader.read(UInt32.self, what: "type of tensor \(name.quoted())")
            let offset = try reader.read(UInt64.self, what: "data offset of tensor \(name.quoted())")
            guard offset < UInt64(Int.max / 2) else {
                throw WeightFileError(path: path, problem: .tensorOutOfBounds(tensor: name, offset: Int.max, size: 0, fileSize: mapping.count))
            }
            raw.append(RawInfo(name: name, dims: dims, type: type, offset: Int(offset)))
        }
        let dataOffset = (reader.offset + alignment - 1) / alignment * alignment
        self.dataOffset = dataOffset

        var infos: [GGUFTensorInfo] = []
        var index: [String: Int] = [:]
        for r in raw {
            guard let type = TensorType(rawValue: r.type) else {
                throw WeightFileError(path: path, problem: .unsupportedTensorType(tensor: r.name, type: TensorType.ggmlName(r.type)))
            }
            guard r.dims[0] % type.blockSize == 0 else {
                throw WeightFileError(path: path, problem: .badTensorShape(
                    tensor: r.name, reason: "row length \(r.dims[0]) is not a multiple of the \(type) block size \(type.blockSize)"))
            }
            let (elements, overflow) = r.dims.reduce((1, false)) { acc, d in
                let (p, o) = acc.0.multipliedReportingOverflow(by: d)
                return (p, acc.1 || o)
            }
            guard !overflow, elements < 1 << 44 else {
                throw WeightFileError(path: path, problem: .badTensorShape(tensor: r.name, reason: "\(r.dims) has too many elements"))
            }
            let size = elements / type.blockSize * type.bytesPerBlock
            guard r.offset % alignment == 0 else {
                throw WeightFileError(path: path, problem: .misalignedTensor(tensor: r.name, offset: r.offset, alignment: alignment))
            }
            let start = dataOffset + r.offset
            guard start <= mapping.count, size <= mapping.count - start else {
                throw WeightFileError(path: path, problem: .tensorOutOfBounds(tensor: r.name, offset: start, size: size, fileSize: mapping.count))
            }
            guard index.updateValue(infos.count, forKey: r.name) == nil else {
                throw WeightFileError(path: path, problem: .duplicateTensor(r.name))
            }
            infos.append(GGUFTensorInfo(name: r.name, dimensions: r.dims, type: type, fileOffset: start, byteCount: size))
        }
        tensors = infos
        tensorIndex = index
    }

    /// The tensor named `name`, or nil.
    public func tensorInfo(_ name: String) -> GGUFTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// The tensor named `name`; a missing tensor is an error naming it.
    public func requireTensor(_ name: String) throws(WeightFileError) -> GGUFTensorInfo {
        guard let info = tensorInfo(name) else { throw WeightFileError(path: path, problem: .missingTensor(name)) }
        return info
    }

    /// The raw bytes of a tensor (bounds were checked when the file was opened). The view stays
    /// valid while this `GGUFFile` is alive.
    public func data(of tensor: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: file.bytes[tensor.fileOffset..<(tensor.fileOffset + tensor.byteCount)])
    }

    // MARK: Typed metadata access

    public func value(_ key: String) throws(WeightFileError) -> GGUFValue {
        guard let v = metadata[key] else { throw WeightFileError(path: path, problem: .missingKey(key)) }
        return v
    }

    public func integer(_ key: String) throws(WeightFileError) -> Int {
        let v = try value(key)
        guard let i = v.integer else {
            throw WeightFileError(path: path, problem: .wrongKeyType(key: key, expected: "an integer", found: v.typeName))
        }
        return i
    }

    public func number(_ key: String) throws(WeightFileError) -> Double {
        let v = try value(key)
        guard let d = v.number else {
            throw WeightFileError(path: path, problem: .wrongKeyType(key: key, expected: "a number", found: v.typeName))
        }
        return d
    }

    public func string(_ key: String) throws(WeightFileError) -> String {
        let v = try value(key)
        guard case .string(let s) = v else {
            throw WeightFileError(path: path, problem: .wrongKeyType(key: key, expected: "a string", found: v.typeName))
        }
        return s
    }

    public func bool(_ key: String) throws(WeightFileError) -> Bool {
        let v = try value(key)
        switch v {
        case .bool(let b): return b
        default:
            if let i = v.integer { return i != 0 }
            throw WeightFileError(path: path, problem: .wrongKeyType(key: key, expected: "a bool", found: v.typeName))
        }
    }

    public func array(_ key: String) throws(WeightFileError) -> GGUFArray {
        let v = try value(key)
        guard case .array(let a) = v else {
            throw WeightFileError(path: path, problem: .wrongKeyType(key: key, expected: "an array", found: v.typeName))
        }
        return a
    }

    public func stringArray(_ key: String) throws(WeightFileError) -> [String] {
        let a = try array(key)
        guard case .string(let s) = a else {
            throw WeightFileError(path: path, problem: .wrongKeyType(key: key, expected: "an array of strings", found: "array of \(a.elementTypeName)"))
        }
        return s
    }

    public func floatArray(_ key: String) throws(WeightFileError) -> [Float] {
        let a = try array(key)
        guard let f = a.floats else {
            throw WeightFileError(path: path, problem: .wrongKeyType(key: key, expected: "an array of numbers", found: "array of \(a.elementTypeName)"))
        }
        return f
    }

    public func integerArray(_ key: String) throws(WeightFileError) -> [Int] {
        let a = try array(key)
        guard let i = a.integers else {
            throw WeightFileError(path: path, problem: .wrongKeyType(key: key, expected: "an array of integers", found: "array of \(a.elementTypeName)"))
        }
        return i
    }
}

/// Where a tensor lives in a GGUF file. `dimensions` are in GGML order: `dimensions[0]` is the
/// contiguous (innermost) one, so a matrix [rows, cols] is stored as dimensions [cols, rows].
public struct GGUFTensorInfo: Sendable, Equatable {
    public var name: String
    public var dimensions: [Int]
    public var type: TensorType
    /// Absolute byte offset in the file.
    public var fileOffset: Int
    public var byteCount: Int

    public var elementCount: Int { dimensions.reduce(1, *) }
}

/// Little-endian cursor over the mapped bytes with bounds checks that name what was being read.
struct ByteReader {
    let bytes: UnsafeRawBufferPointer
    let path: String
    var offset = 0

    init(bytes: UnsafeRawBufferPointer, path: String) {
        self.bytes = bytes
        self.path = path
    }

    var remaining: Int { bytes.count - offset }

    private func need(_ n: Int, what: String) throws(WeightFileError) {
        guard n >= 0, n <= remaining else {
            throw WeightFileError(path: path, problem: .truncated(what: what, offset: offset, needed: n, available: remaining))
        }
    }

    mutating func read<T: FixedWidthInteger>(_: T.Type, what: String) throws(WeightFileError) -> T {
        try need(MemoryLayout<T>.size, what: what)
        let v = bytes.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += MemoryLayout<T>.size
        return T(littleEndian: v)
    }

    mutating func bytes(_ n: Int, what: String) throws(WeightFileError) -> UnsafeRawBufferPointer.SubSequence {
        try need(n, what: what)
        defer { offset += n }
        return bytes[offset..<(offset + n)]
    }

    /// A u64 element count, checked against what the rest of the file could possibly hold.
    mutating func count(what: String, minimumElementSize: Int) throws(WeightFileError) -> Int {
        let start = offset
        let n = try read(UInt64.self, what: what)
        guard n <= UInt64(remaining / max(minimumElementSize, 1)) else {
            // Saturate: the wrapped product of an absurd count (2^60 x 32) would report "needs 0 bytes".
            let (needed, overflow) = n.multipliedReportingOverflow(by: UInt64(minimumElementSize))
            throw WeightFileError(path: path, problem: .truncated(
                what: "\(what) of \(n)", offset: start, needed: overflow ? Int.max : Int(clamping: needed),
                available: remaining))
        }
        return Int(n)
    }

    mutating func string(what: String) throws(WeightFileError) -> String {
        let length = try count(what: "length of \(what)", minimumElementSize: 1)
        let raw = try bytes(length, what: what)
        guard let s = String(validating: raw, as: UTF8.self) else {
            // GGUF strings are UTF-8; vocabularies occasionally hold invalid sequences, which
            // llama.cpp keeps as raw bytes. Keep them decodable rather than failing the file.
            return String(decoding: raw, as: UTF8.self)
        }
        return s
    }

    mutating func value(_ kind: GGUFValue.Kind, key: String) throws(WeightFileError) -> GGUFValue {
        let what = "value of metadata key \(key.quoted())"
        switch kind {
        case .uint8: return .uint8(try read(UInt8.self, what: what))
        case .int8: return .int8(try read(Int8.self, what: what))
        case .uint16: return .uint16(try read(UInt16.self, what: what))
        case .int16: return .int16(try read(Int16.self, what: what))
        case .uint32: return .uint32(try read(UInt32.self, what: what))
        case .int32: return .int32(try read(Int32.self, what: what))
        case .uint64: return .uint64(try read(UInt64.self, what: what))
        case .int64: return .int64(try read(Int64.self, what: what))
        case .float32: return .float32(Float(bitPattern: try read(UInt32.self, what: what)))
        case .float64: return .float64(Double(bitPattern: try read(UInt64.self, what: what)))
        case .bool:
            let b = try read(UInt8.self, what: what)
            guard b <= 1 else {
                throw WeightFileError(path: path, problem: .badValue(key: key, reason: "bool byte \(b) is neither 0 nor 1"))
            }
            return .bool(b == 1)
        case .string: return .string(try string(what: what))
        case .array: return .array(try array(key: key, depth: 0))
        }
    }

    mutating func array(key: String, depth: Int) throws(WeightFileError) -> GGUFArray {
        let what = "array of metadata key \(key.quoted())"
        guard depth < 8 else {
            throw WeightFileError(path: path, problem: .badValue(key: key, reason: "arrays nested deeper than 8 levels"))
        }
        let typeID = try read(UInt32.self, what: "element type of \(what)")
        guard let kind = GGUFValue.Kind(rawValue: typeID) else {
            throw WeightFileError(path: path, problem: .invalidValueType(key: key, type: typeID))
        }
        let elementSize: Int = switch kind {
        case .uint8, .int8, .bool: 1
        case .uint16, .int16: 2
        case .uint32, .int32, .float32: 4
        case .uint64, .int64, .float64: 8
        case .string: 8
        case .array: 12
        }
        let n = try count(what: "element count of \(what)", minimumElementSize: elementSize)
        func fixed<T: FixedWidthInteger>(_: T.Type) throws(WeightFileError) -> [T] {
            let raw = try bytes(n * MemoryLayout<T>.size, what: what)
            return (0..<n).map { T(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self)) }
        }
        switch kind {
        case .uint8: return .uint8(try fixed(UInt8.self))
        case .int8: return .int8(try fixed(Int8.self))
        case .uint16: return .uint16(try fixed(UInt16.self))
        case .int16: return .int16(try fixed(Int16.self))
        case .uint32: return .uint32(try fixed(UInt32.self))
        case .int32: return .int32(try fixed(Int32.self))
        case .uint64: return .uint64(try fixed(UInt64.self))
        case .int64: return .int64(try fixed(Int64.self))
        case .float32: return .float32(try fixed(UInt32.self).map(Float.init(bitPattern:)))
        case .float64: return .float64(try fixed(UInt64.self).map(Double.init(bitPattern:)))
        case .bool:
            let raw = try fixed(UInt8.self)
            guard raw.allSatisfy({ $0 <= 1 }) else {
                throw WeightFileError(path: path, problem: .badValue(key: key, reason: "bool array holds a byte that is neither 0 nor 1"))
            }
            return .bool(raw.map { $0 == 1 })
        case .string:
            var out: [String] = []
            out.reserveCapacity(n)
            for _ in 0..<n { out.append(try string(what: "element of \(what)")) }
            return .string(out)
        case .array:
            var out: [GGUFArray] = []
            for _ in 0..<n { out.append(try array(key: key, depth: depth + 1)) }
            return .array(out)
        }
    }
}

extension GGUFFile: ResidentPagesReleasing {
    public func dropResidentPages(_ start: UnsafeRawPointer, count: Int) { file.dropResidentPages(start, count: count) }
}
