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
/// at load time (`WeightMatrix.packedForVNNI`) in tiles of 16 rows interleaved by 4-byte chunks:
/// each chunk of an input block, broadcast, meets the same chunk of 16 rows in one `vpdpbusd`, so a
/// tile block is decoded once for up to 8 inputs and no lane sums are needed. A verify step of 8
/// tree tokens then costs about twice a single-token product.
///
/// Each output value goes through the same operations in the same order whatever `n`, the tile
/// and the thread split (batch invariance, as the other kernels). Coarser than `int16` (a rounding
/// step of max|x| / 127 per block instead of / 32639).
public enum Int8BlockKernels {
    /// The C kernels' variant (`IntegerKernels.variant` unless a test asks for another).
    public typealias Variant = IntegerKernels.Variant

    static func preparedBytes(n: Int, columns: Int) -> Int { ck_prepare_bytes(8, Int32(n), Int32(columns)) }

    /// Quantizes `n` rows of `columns` inputs for products with `type` weights into `memory` (at
    /// least `preparedBytes` long, 64-byte aligned).
    static func prepare(
        _ type: TensorType, x: UnsafePointer<Float>, xStride: Int, n: Int, columns: Int, memory: UnsafeMutableRawPointer,
        variant: Variant = IntegerKernels.variant
    ) -> ck_inputs {
        IntegerKernels.prepare(bits: 8, type, x: x, xStride: xStride, n: n, columns: columns, memory: memory,
                               variant: variant)
    }

    /// The products: with the AVX-512 VNNI variant, from each matrix's packed rows (`packed`;
    /// matrices without them go through the portable kernel, with the same results, more slowly).
    static func multiply(
        _ products: MatMul.Products, x: UnsafePointer<Float>, xStride: Int, n: Int, pool: ThreadPool,
        variant: Variant = IntegerKernels.variant
    ) {
        IntegerKernels.multiply(bits: 8, products, x: x, xStride: xStride, n: n, pool: pool, variant: variant)
    }
}
