import Foundation

/// A safetensors file read through a memory mapping: an 8-byte little-endian header length, a JSON
/// header mapping each tensor name to its dtype, shape and `data_offsets` (relative to the end of
/// the header), then the data. The optional `__metadata__` entry (string keys to string values, as
/// the reference implementation requires) is kept in `metadata`.
///
/// Every tensor entry is checked when the file opens: a known dtype, a byte span that fits the data
/// and matches shape x dtype size, no two spans overlapping. Tensors of dtypes this project cannot
/// compute with (I64, F64, ...) may be present; asking for one as a weight is an error naming it.
public final class SafetensorsFile: @unchecked Sendable {
    // Immutable after init.
    public let path: String
    /// Tensors ordered by their position in the file.
    public let tensors: [SafetensorsTensorInfo]
    /// The header's `__metadata__` (e.g. `format: pt`); empty when there is none.
    public let metadata: [String: String]
    /// Byte offset of the data section (8 + the header length).
    public let dataOffset: Int
    private let file: MappedFile
    private let tensorIndex: [String: Int]

    /// Bits per element of every dtype the safetensors format defines.
    static let dtypeBits: [String: Int] = [
        "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "I16": 16, "U16": 16,
        "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32, "F64": 64, "I64": 64, "U64": 64,
        "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    ]

    /// The project's storage type for a safetensors dtype, when it computes with it.
    public static func tensorType(dtype: String) -> TensorType? {
        switch dtype {
        case "F32": .f32
        case "F16": .f16
        case "BF16": .bf16
        default: nil
        }
    }

    public convenience init(path: String) throws(WeightFileError) {
        try self.init(mapping: MappedFile(path: path))
    }

    public init(mapping: MappedFile) throws(WeightFileError) {
        file = mapping
        path = mapping.path
        var reader = ByteReader(bytes: mapping.bytes, path: path)
        let headerLength = try reader.read(UInt64.self, what: "safetensors header length")
        guard headerLength <= UInt64(reader.remaining) else {
            throw WeightFileError(path: path, problem: .truncated(
                what: "safetensors header", offset: 8, needed: Int(clamping: headerLength), available: reader.remaining))
        }
        let header = Data(try reader.bytes(Int(headerLength), what: "safetensors header"))
        dataOffset = reader.offset
        let dataLength = mapping.count - dataOffset

        let root = try JSONValue.parse(header, path: path, what: "the safetensors header")
        guard case .object(let entries) = root else {
            throw WeightFileError(path: path, problem: .invalidJSON(
                what: "the safetensors header", reason: "expected an object, found \(root.typeName)"))
        }
        metadata = try Self.metadata(entries["__metadata__"], path: path)
        var infos: [SafetensorsTensorInfo] = []
        infos.reserveCapacity(entries.count)
        for name in entries.keys.sorted() where name != "__metadata__" {
            infos.append(try Self.tensorInfo(name, entries[name]!, dataOffset: dataOffset, dataLength: dataLength,
                                             fileSize: mapping.count, path: path))
        }
        infos.sort { ($0.fileOffset, $0.byteCount, $0.name) < ($1.fileOffset, $1.byteCount, $1.name) }
        // Sorted by start, each non-empty span must begin at or after the furthest end so far.
        var furthest: (end: Int, name: String)?
        for info in infos where info.byteCount > 0 {
            if let f = furthest, info.fileOffset < f.end {
                throw WeightFileError(path: path, problem: .overlappingTensors(f.name, info.name))
            }
            furthest = (info.fileOffset + info.byteCount, info.name)
        }
        tensors = infos
        tensorIndex = Dictionary(uniqueKeysWithValues: infos.enumerated().map { ($1.name, $0) })
    }

    /// The `__metadata__` entry: absent or null means none; anything but an object of strings is an
    /// error naming the key.
    private static func metadata(_ entry: JSONValue?, path: String) throws(WeightFileError) -> [String: String] {
        guard let entry, !entry.isNull else { return [:] }
        guard case .object(let fields) = entry else {
            throw WeightFileError(path: path, problem: .wrongKeyType(
                key: "__metadata__", expected: "an object", found: entry.typeName))
        }
        var metadata: [String: String] = [:]
        for key in fields.keys.sorted() {
            let value = fields[key]!
            guard let text = value.stringValue else {
                throw WeightFileError(path: path, problem: .wrongKeyType(
                    key: "__metadata__.\(key)", expected: "a string", found: value.typeName))
            }
            metadata[key] = text
        }
        return metadata
    }

    private static func tensorInfo(
        _ name: String, _ entry: JSONValue, dataOffset: Int, dataLength: Int, fileSize: Int, path: String
    ) throws(WeightFileError) -> SafetensorsTensorInfo {
        func bad(_ reason: String) -> WeightFileError {
            WeightFileError(path: path, problem: .badTensorHeader(tensor: name, reason: reason))
        }
        guard case .object(let fields) = entry else { throw bad("expected an object, found \(entry.typeName)") }
        guard let dtypeValue = fields["dtype"] else { throw bad("no dtype") }
        guard let dtype = dtypeValue.stringValue else { throw bad("dtype is \(dtypeValue.typeName), expected a string") }
        guard let bits = dtypeBits[dtype] else {
            throw WeightFileError(path: path, problem: .unsupportedDType(tensor: name, dtype: dtype))
        }
        guard let shapeValue = fields["shape"] else { throw bad("no shape") }
        guard let dims = shapeValue.arrayValue else { throw bad("shape is \(shapeValue.typeName), expected an array") }
        var shape: [Int] = []
        var elements = 1
        for d in dims {
            guard let n = d.integerValue, n >= 0 else { throw bad("shape \(show(shapeValue)) holds \(Self.show(d)), expected non-negative integers") }
            let (p, overflow) = elements.multipliedReportingOverflow(by: n)
            guard !overflow, p < 1 << 50 else { throw bad("shape \(show(shapeValue)) has too many elements") }
            shape.append(n)
            elements = p
        }
        guard let offsetsValue = fields["data_offsets"] else { throw bad("no data_offsets") }
        guard let offsets = offsetsValue.arrayValue, offsets.count == 2,
              let begin = offsets[0].integerValue, let end = offsets[1].integerValue, begin >= 0, begin <= end
        else {
            throw bad("data_offsets is \(show(offsetsValue)), expected [begin, end] with 0 <= begin <= end")
        }
        let expected = (elements * bits + 7) / 8
        guard end - begin == expected, elements * bits % 8 == 0 else {
            throw WeightFileError(path: path, problem: .tensorSizeMismatch(
                tensor: name, shape: shape, dtype: dtype, expected: expected, found: end - begin))
        }
        guard end <= dataLength else {
            throw WeightFileError(path: path, problem: .tensorOutOfBounds(
                tensor: name, offset: dataOffset + begin, size: end - begin, fileSize: fileSize))
        }
        return SafetensorsTensorInfo(
            name: name, dtype: dtype, shape: shape, fileOffset: dataOffset + begin, byteCount: end - begin)
    }

    /// A header value as it would be written in JSON, for error messages.
    private static func show(_ v: JSONValue) -> String {
        switch v {
        case .null: "null"
        case .bool(let b): "\(b)"
        case .integer(let i): "\(i)"
        case .number(let d): "\(d)"
        case .string(let s): "\"\(s)\""
        case .array(let a): "[" + a.map(show).joined(separator: ", ") + "]"
        case .object: "{...}"
        }
    }

    /// The tensor named `name`, or nil.
    public func tensorInfo(_ name: String) -> SafetensorsTensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// The tensor named `name`; a missing tensor is an error naming it.
    public func requireTensor(_ name: String) throws(WeightFileError) -> SafetensorsTensorInfo {
        guard let info = tensorInfo(name) else { throw WeightFileError(path: path, problem: .missingTensor(name)) }
        return info
    }

    /// The raw bytes of a tensor (bounds were checked when the file was opened). The view stays
    /// valid while this file is alive.
    public func data(of tensor: SafetensorsTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: file.bytes[tensor.fileOffset..<(tensor.fileOffset + tensor.byteCount)])
    }

    /// A zero-copy view of a 1-D or 2-D F32/F16/BF16 tensor as a matrix of `rows` x `columns`
    /// (safetensors is row-major, so Hugging Face's [out, in] is our [rows, columns]); a vector
    /// is one row. Checks that the shape is exactly `shape`.
    public func matrix(_ name: String, shape expected: [Int]) throws(WeightFileError) -> WeightMatrix {
        let info = try requireTensor(name)
        guard info.shape == expected else {
            throw WeightFileError(path: path, problem: .shapeMismatch(tensor: name, expected: expected, found: info.shape))
        }
        guard let type = info.type else {
            throw WeightFileError(path: path, problem: .unsupportedDType(tensor: name, dtype: info.dtype))
        }
        precondition(expected.count == 1 || expected.count == 2, "matrix views are 1-D or 2-D")
        let rows = expected.count == 2 ? expected[0] : 1
        let columns = expected.last!
        // An empty tensor has no bytes to point at; any valid address will do.
        let base = data(of: info).baseAddress ?? file.bytes.baseAddress!
        return WeightMatrix(type: type, rows: rows, columns: columns, base: base, owner: self)
    }
}

/// Where a tensor lives in a safetensors file. `shape` is row-major, outermost first.
public struct SafetensorsTensorInfo: Sendable, Equatable {
    public var name: String
    /// The dtype as written in the header ("F32", "BF16", "I64", ...).
    public var dtype: String
    public var shape: [Int]
    /// Absolute byte offset in the file.
    public var fileOffset: Int
    public var byteCount: Int

    /// The storage type, when the project computes with this dtype (F32, F16, BF16).
    public var type: TensorType? { SafetensorsFile.tensorType(dtype: dtype) }
    public var elementCount: Int { shape.reduce(1, *) }
}
