import CKernels
import Foundation

/// Matrix products of the block formats (Q8_0, Q4_0, Q4_1) with the activations rounded to 8-bit
/// integers per 32-column block, as llama.cpp's CPU back end does (`MatMulInputs.int8`).
///
/// Input row i's block b becomes 32 int8 values q = round-half-even(x / d) with d = max|x| / 127.
/// A weight block's integers (Q4: the nibbles 0...15; Q8_0: q + 128, both unsigned bytes) meet them
/// in exact integer products; per output and block, in block order:
///
///     t = sum(u_w * q) - o * sum(q)              (Q4_0: o = 8; Q8_0: o = 128; Q4_1: o = 0)
///     acc = fma(float(t) * d, d_w, acc)          then, Q4_1 only: acc = fma(m_w, d * sum(q), acc)
///
/// The kernels are C (`CKernels`: Swift cannot enable AVX-512 for one function), in two variants
/// picked at run time that compute bit-identical results: AVX-512 VNNI (`vpdpbusd`) and portable
/// scalar C (the definition, and the fallback on other CPUs). The VNNI kernel reads weights packed
/// at load time (`WeightMatrix.packedForInt8`) in tiles of 16 rows interleaved by 4-byte chunks:
/// each chunk of an input block, broadcast, meets the same chunk of 16 rows in one `vpdpbusd`, so a
/// tile block is decoded once for up to 8 inputs and no lane sums are needed. A verify step of 8
/// tree tokens then costs about twice a single-token product.
///
/// Each output value goes through the same operations in the same order whatever `n`, the tile
/// and the thread split (batch invariance, as the other kernels). Coarser than `int16` (a rounding
/// step of max|x| / 127 per block instead of / 32767).
public enum Int8BlockKernels {
    /// An instruction-set variant of the C kernels.
    public enum Variant: Int32, Sendable, CaseIterable, CustomStringConvertible {
        case scalar = 0, avx512VNNI = 2

        public var description: String {
            switch self {
            case .scalar: "scalar"
            case .avx512VNNI: "AVX-512 VNNI"
            }
        }

        /// Whether this CPU runs the variant.
        public var isSupported: Bool { ck_isa_supported(rawValue) != 0 }
    }

    /// The variant the forward pass uses: the fastest this CPU runs, or the one named by the
    /// environment variable `MEDUSA_INT8_KERNELS` (scalar, avx512vnni) when this CPU runs it.
    public static let variant: Variant = {
        let best = Variant(rawValue: ck_best_isa()) ?? .scalar
        let names: [String: Variant] = ["scalar": .scalar, "avx512vnni": .avx512VNNI]
        if let name = ProcessInfo.processInfo.environment["MEDUSA_INT8_KERNELS"], let asked = names[name.lowercased()],
           asked.isSupported {
            return asked
        }
        return best
    }()

    static func format(_ type: TensorType) -> Int32 {
        switch type {
        case .q4_0: Int32(CK_FORMAT_Q4_0)
        case .q4_1: Int32(CK_FORMAT_Q4_1)
        case .q8_0: Int32(CK_FORMAT_Q8_0)
        default: preconditionFailure("no int8 block kernel for \(type)")
        }
    }

    static func preparedBytes(n: Int, columns: Int) -> Int { ck_int8_prepare_bytes(Int32(n), Int32(columns)) }

    /// Quantizes `n` rows of `columns` inputs for products with `type` weights into `memory` (at
    /// least `preparedBytes` long, 64-byte aligned).
    static func prepare(
        _ type: TensorType, x: UnsafePointer<Float>, xStride: Int, n: Int, columns: Int, memory: UnsafeMutableRawPointer,
        variant: Variant = Int8BlockKernels.variant
    ) -> ck_int8_inputs {
        var inputs = ck_int8_inputs()
        ck_int8_prepare(variant.rawValue, format(type), x, xStride, Int32(n), Int32(columns), memory, &inputs)
        return inputs
    }

    /// The products: with the AVX-512 VNNI variant, from each matrix's packed rows (`int8Packed`;
    /// matrices without them go through the portable kernel, with the same results, more slowly).
    static func multiply(
        _ products: MatMul.Products, x: UnsafePointer<Float>, xStride: Int, n: Int, pool: ThreadPool,
        variant: Variant = Int8BlockKernels.variant
    ) {
        let first = products.first.weights
        let shared = pool.scratch(thread: pool.threadCount, bytes: preparedBytes(n: n, columns: first.columns))
        var inputs = prepare(first.type, x: x, xStride: xStride, n: n, columns: first.columns, memory: shared, variant: variant)
        let format = Self.format(first.type)
        let packed = variant == .avx512VNNI
        withUnsafePointer(to: &inputs) { p in
            MatMul.forEachChunk(products, pool: pool) { product, rows in
                let w = product.weights
                if packed, let rowsPacked = w.int8Packed {
                    precondition(rows.lowerBound % 16 == 0, "packed int8 rows start on a 16-row tile")
                    ck_int8_multiply_packed(
                        format, rowsPacked.base.assumingMemoryBound(to: UInt8.self), Int32(rows.lowerBound),
                        Int32(rows.upperBound), p, product.y, product.yStride)
                } else {
                    ck_int8_multiply(
                        format, w.base.assumingMemoryBound(to: UInt8.self), w.rowStride, Int32(rows.lowerBound),
                        Int32(rows.upperBound), p, product.y, product.yStride)
                }
            }
        }
    }
}
