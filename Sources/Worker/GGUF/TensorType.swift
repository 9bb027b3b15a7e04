/// Storage formats of weight tensors, with GGML's numeric ids (as in GGUF tensor infos) and block
/// layouts (llama.cpp's `ggml-common.h`).
///
/// The quantized formats store blocks of values with their scales: 32 values per block for the
/// legacy formats (Q4_0 ... Q8_0), 256 per super-block for the K-quants (Q2_K ... Q6_K), whose
/// super-block holds 8 or 16 sub-blocks of 32 or 16 values, each with a small integer scale (and
/// minimum) relative to the super-block's fp16 scale (and minimum scale).
public enum TensorType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case f32 = 0
    case f16 = 1
    case q4_0 = 2
    case q4_1 = 3
    case q5_0 = 6
    case q5_1 = 7
    case q8_0 = 8
    case q2_K = 10
    case q3_K = 11
    case q4_K = 12
    case q5_K = 13
    case q6_K = 14
    case bf16 = 30

    /// The per-type facts: values per block, bytes per block, name.
    private var traits: (blockSize: Int, bytesPerBlock: Int, name: String) {
        switch self {
        case .f32: (1, 4, "F32")
        case .f16: (1, 2, "F16")
        case .bf16: (1, 2, "BF16")
        case .q4_0: (32, 18, "Q4_0")    // d (f16), 16 bytes of nibbles
        case .q4_1: (32, 20, "Q4_1")    // d, m (f16), 16 bytes of nibbles
        case .q5_0: (32, 22, "Q5_0")    // d (f16), 4 bytes of fifth bits, 16 bytes of nibbles
        case .q5_1: (32, 24, "Q5_1")    // d, m (f16), 4 bytes of fifth bits, 16 bytes of nibbles
        case .q8_0: (32, 34, "Q8_0")    // d (f16), 32 x int8
        case .q2_K: (256, 84, "Q2_K")   // 16 x (4-bit scale | 4-bit min), 64 bytes of 2-bit values, d, dmin
        case .q3_K: (256, 110, "Q3_K")  // 32 bytes of high bits, 64 of 2-bit values, 12 of 6-bit scales, d
        case .q4_K: (256, 144, "Q4_K")  // d, dmin, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles
        case .q5_K: (256, 176, "Q5_K")  // as Q4_K, plus 32 bytes of fifth bits before the nibbles
        case .q6_K: (256, 210, "Q6_K")  // 128 bytes of low nibbles, 64 of 2-bit highs, 16 x int8 scales, d
        }
    }

    /// Values per block: 1 for the float formats, 32 or 256 for the quantized ones.
    public var blockSize: Int { traits.blockSize }

    /// Bytes per block.
    public var bytesPerBlock: Int { traits.bytesPerBlock }

    /// Whether the values are stored as blocks of small integers with scales.
    public var isQuantized: Bool { blockSize > 1 }

    /// The finest column boundary a matrix of this type can be cut at (a row-parallel shard): a
    /// whole block for the 32-value formats, a 32-value sub-block group of a K-quant super-block
    /// (the kernels read a super-block's scales for any of its groups), any column otherwise.
    public var sliceGranularity: Int { min(blockSize, 32) }

    /// Bytes of a row of `count` values; `count` must be a multiple of `blockSize`.
    public func rowBytes(_ count: Int) -> Int { count / blockSize * bytesPerBlock }

    public var description: String { traits.name }

    /// The type named `name` (GGML's spelling, any case: "q4_k", "Q6_K", "bf16").
    public init?(name: String) {
        guard let type = Self.allCases.first(where: { $0.description.lowercased() == name.lowercased() }) else { return nil }
        self = type
    }

    /// GGML's name for a type id, including the ones this project does not read.
    public static func ggmlName(_ id: UInt32) -> String {
        if let known = TensorType(rawValue: id) { return known.description }
        let names: [UInt32: String] = [
            9: "Q8_1", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S",
            22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M",
            34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
        ]
        return names[id] ?? "unknown type id \(id)"
    }
}
