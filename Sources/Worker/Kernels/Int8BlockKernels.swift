import CKernels
import Foundation

/// Matrix products of the quantized formats with the activations rounded to 8-bit integers per
/// 32-column block, as llama.cpp's CPU back end does for the 32-value formats (`MatMulInputs.int8`;
/// for the K-quants llama.cpp rounds per 256 values, we keep 32 so that every format shares one
/// input preparation and the finer rounding).
///
/// Input row i's block b becomes 32 int8 values q = round-half-even(x / d) with d = max|x| / 127.
/// A weight group's integers (the stored unsigned bits u, w = u + offset) meet them in exact
/// integer products; per output, group and sub-block k (32 columns, or 16 for Q2_K/Q3_K/Q6_K), in order:
///
///     t_k = sum(u * q) + offset * sum(q)         (Q4_0 -8, Q5_0 -16, Q8_0 -128, Q3_K -4, Q6_K -32)
///     acc = fma(float(t_k) * d, D_k, acc)        then, with minimums: acc = fma(M_k, d * sum_k(q), acc)
///
/// (`ck_multiply` defines D_k and M_k: the block's scale times the sub-block's integer scale, and
/// the minimum.)
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

    /// Quantizes `n` rows of `columns` inputs into `memory` (at least `preparedBytes` long, 64-byte aligned).
    static func prepare(
        x: UnsafePointer<Float>, xStride: Int, n: Int, columns: Int, memory: UnsafeMutableRawPointer,
        variant: Variant = IntegerKernels.variant
    ) -> ck_inputs {
        IntegerKernels.prepare(bits: 8, x: x, xStride: xStride, n: n, columns: columns, memory: memory, variant: variant)
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
