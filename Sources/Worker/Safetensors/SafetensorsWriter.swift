import Foundation

/// Writes safetensors files: the 8-byte header length, the JSON header (padded with spaces to a
/// multiple of 8 bytes, as the reference writer does), then the tensors back to back in the order
/// they were added. Writes Medusa heads files (`MedusaHeadWeights.write`); tests build checkpoints
/// and malformed files with it.
public struct SafetensorsWriter {
    public struct Tensor {
        public var name: String
        public var dtype: String
        public var shape: [Int]
        public var data: [UInt8]

        public init(name: String, dtype: String, shape: [Int], data: [UInt8]) {
            self.name = name
            self.dtype = dtype
            self.shape = shape
            self.data = data
        }
    }

    public var tensors: [Tensor] = []
    /// Written as `__metadata__` when not empty.
    public var metadata: [String: String] = [:]

    public init() {}

    public mutating func add(_ name: String, dtype: String, shape: [Int], data: [UInt8]) {
        tensors.append(Tensor(name: name, dtype: dtype, shape: shape, data: data))
    }

    /// Adds `values` (row-major, `shape`) stored as F32, F16 or BF16.
    public mutating func add(_ name: String, shape: [Int], values: [Float], type: TensorType = .f32) {
        precondition(shape.reduce(1, *) == values.count, "\(name): \(values.count) values for shape \(shape)")
        precondition(type == .f32 || type == .f16 || type == .bf16, "safetensors holds F32, F16 or BF16 here, not \(type)")
        add(name, dtype: type.description, shape: shape, data: Quantizer.quantize(values, to: type))
    }

    /// The JSON header, unpadded.
    public func header() -> String {
        Self.header(metadata: metadata, tensors: tensors.map { ($0.name, $0.dtype, $0.shape, $0.data.count) })
    }

    /// The JSON header, unpadded, of tensors of `byteCount` bytes each stored back to back in this
    /// order: for writers that stream the data rather than hold it (`assemble(header:data: [])`
    /// then gives the bytes before the data).
    public static func header(
        metadata: [String: String], tensors: [(name: String, dtype: String, shape: [Int], byteCount: Int)]
    ) -> String {
        var entries: [String] = []
        if !metadata.isEmpty {
            let fields = metadata.keys.sorted().map { "\(quote($0)):\(quote(metadata[$0]!))" }
            entries.append("\"__metadata__\":{\(fields.joined(separator: ","))}")
        }
        var offset = 0
        for t in tensors {
            let shape = t.shape.map(String.init).joined(separator: ",")
            entries.append("\(quote(t.name)):{\"dtype\":\(quote(t.dtype)),\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(offset + t.byteCount)]}")
            offset += t.byteCount
        }
        return "{" + entries.joined(separator: ",") + "}"
    }

    /// The file's bytes.
    public func serialized() -> [UInt8] {
        Self.assemble(header: header(), data: tensors.flatMap(\.data))
    }

    public func write(to path: String) throws {
        try Data(serialized()).write(to: URL(fileURLWithPath: path))
    }

    /// A file from a header given as text (padded with spaces to a multiple of 8 bytes) and the
    /// data section, for files the writer would never produce.
    public static func assemble(header: String, data: [UInt8]) -> [UInt8] {
        var json = Array(header.utf8)
        while json.count % 8 != 0 { json.append(0x20) }
        var out: [UInt8] = []
        out.reserveCapacity(8 + json.count + data.count)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out += json
        out += data
        return out
    }

    /// A JSON string literal.
    static func quote(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    out += String(format: "\\u%04x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }
}
