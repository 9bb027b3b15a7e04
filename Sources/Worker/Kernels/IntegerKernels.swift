import CKernels
import Foundation

/// What the integer-input kernels (`Int8BlockKernels`, `Int16BlockKernels`) share: the C kernels'
/// instruction-set variant and their weight formats (every quantized `TensorType`, one C traits
/// table: `Sources/CKernels/formats.h`).
public enum IntegerKernels {
    /// An instruction-set variant of the C kernels.
    public enum Variant: Int32, Sendable, CaseIterable, CustomStringConvertible {
        /// Portable code on the files' rows: scalar C for int8, the AVX2 Swift kernels for int16.
        case portable = 0
        /// AVX-512 VNNI (`vpdpbusd`) on weights packed at load time (`WeightMatrix.packedForVNNI`).
        case avx512VNNI = 2

        public var description: String {
            switch self {
            case .portable: "portable"
            case .avx512VNNI: "AVX-512 VNNI"
            }
        }

        /// Whether this CPU runs the variant.
        public var isSupported: Bool { ck_isa_supported(rawValue) != 0 }
    }

    /// The variant the forward pass uses: the fastest this CPU runs, or the one named by the
    /// environment variable `MEDUSA_INT_KERNELS` (portable, avx512vnni) when this CPU runs it.
    public static let variant: Variant = {
        let best = Variant(rawValue: ck_best_isa()) ?? .portable
        let names: [String: Variant] = ["portable": .portable, "avx512vnni": .avx512VNNI]
        if let name = ProcessInfo.processInfo.environment["MEDUSA_INT_KERNELS"], let asked = names[name.lowercased()],
           asked.isSupported {
            return asked
        }
        return best
    }()

    /// Whether `type` has integer-input kernels: every quantized type.
    static func handles(_ type: TensorType) -> Bool { type.isQuantized }

    /// The C kernels' name of a quantized format.
    static func format(_ type: TensorType) -> Int32 {
        let format: Int32 = switch type {
        case .q4_0: Int32(CK_FORMAT_Q4_0)
        case .q4_1: Int32(CK_FORMAT_Q4_1)
        case .q8_0: Int32(CK_FORMAT_Q8_0)
        case .q5_0: Int32(CK_FORMAT_Q5_0)
        case .q5_1: Int32(CK_FORMAT_Q5_1)
        case .q2_K: Int32(CK_FORMAT_Q2_K)
        case .q3_K: Int32(CK_FORMAT_Q3_K)
        case .q4_K: Int32(CK_FORMAT_Q4_K)
        case .q5_K: Int32(CK_FORMAT_Q5_K)
        case .q6_K: Int32(CK_FORMAT_Q6_K)
        case .f32, .f16, .bf16: preconditionFailure("no integer kernel for \(type)")
        }
        precondition(Int(ck_format_block_values(format)) == type.blockSize
                     && Int(ck_format_block_bytes(format)) == type.bytesPerBlock, "C traits of \(type) disagree")
        return format
    }

    /// Group index of a matrix's column 0 within its rows' first block.
    static func firstGroup(_ w: WeightMatrix) -> Int32 { Int32(w.firstColumn / 32) }

    /// Whether every product's matrix carries packed rows (`WeightMatrix.packed`) and this variant reads them.
    static func readsPacked(_ products: MatMul.Products, variant: Variant) -> Bool {
        variant == .avx512VNNI && (0..<products.count).allSatisfy { products[$0].weights.packed != nil }
    }

    /// Quantizes `n` rows of `columns` inputs to `bits` (8 or 16) into `memory` (at least
    /// `ck_prepare_bytes` long, 64-byte aligned); the same for every weight format.
    static func prepare(
        bits: Int, x: UnsafePointer<Float>, xStride: Int, n: Int, columns: Int, memory: UnsafeMutableRawPointer,
        variant: Variant
    ) -> ck_inputs {
        var inputs = ck_inputs()
        ck_prepare(variant.rawValue, Int32(bits), x, xStride, Int32(n), Int32(columns), memory, &inputs)
        return inputs
    }

    /// The products of `bits`-bit inputs through the C kernels: packed rows with the AVX-512 VNNI
    /// variant (`readsPacked`), the portable C kernel on the rows otherwise. The matrices may be of
    /// different quantized types (the inputs are prepared the same way for all).
    static func multiply(
        bits: Int, _ products: MatMul.Products, x: UnsafePointer<Float>, xStride: Int, n: Int, pool: ThreadPool,
        variant: Variant
    ) {
        let first = products.first.weights
        let shared = pool.scratch(thread: pool.threadCount,
                                  bytes: ck_prepare_bytes(Int32(bits), Int32(n), Int32(first.columns)))
        var inputs = ck_inputs()
        ck_prepare_layout(Int32(bits), Int32(n), Int32(first.columns), shared, &inputs)
        let packed = variant == .avx512VNNI
        withUnsafePointer(to: &inputs) { p in
            // Several rows are quantized side by side (each row's values do not depend on who
            // quantizes it): the other threads would otherwise wait for this one.
            let parts = n >= 2 && n * first.columns >= 2048 ? min(n, pool.threadCount) : 1
            pool.run(taskCount: parts) { part in
                let rows = ShardLayout.split(n, parts: parts, part: part)
                ck_prepare_rows(variant.rawValue, x, xStride, Int32(rows.lowerBound), Int32(rows.upperBound), p)
            }
            MatMul.forEachChunk(products, pool: pool) { product, rows in
                let w = product.weights, format = Self.format(w.type)
                if packed, let rowsPacked = w.packed {
                    precondition(rows.lowerBound % 16 == 0, "packed rows start on a 16-row tile")
                    ck_multiply_packed(
                        format, rowsPacked.base.assumingMemoryBound(to: UInt8.self), firstGroup(w), Int32(rows.lowerBound),
                        Int32(rows.upperBound), p, product.y, product.yStride)
                } else {
                    ck_multiply(
                        format, w.base.assumingMemoryBound(to: UInt8.self), w.rowStride, firstGroup(w),
                        Int32(rows.lowerBound), Int32(rows.upperBound), p, product.y, product.yStride)
                }
            }
        }
    }
}
