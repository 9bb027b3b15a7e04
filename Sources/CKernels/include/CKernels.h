// Matrix-product kernels on integer-rounded activations that need an instruction set chosen at run
// time (AVX-512 VNNI), which Swift cannot enable per function: each variant is compiled with its own
// target attribute and picked by a CPUID check, as llama.cpp does for its CPU back ends. Used by
// Worker's `Int8BlockKernels` (int8 inputs) and `Int16BlockKernels` (int16 inputs on VNNI CPUs).
#ifndef MEDUSA_CKERNELS_H
#define MEDUSA_CKERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Weight block formats (GGUF's Q4_0, Q4_1 and Q8_0 layouts: 32 values per block).
enum {
    CK_FORMAT_Q4_0 = 0,
    CK_FORMAT_Q4_1 = 1,
    CK_FORMAT_Q8_0 = 2,
};

/// Kernel variants. Both compute bit-identical results (exact integer block products, then the
/// same fp32 operations in the same order); they differ only in speed.
enum {
    /// Portable C, one product at a time.
    CK_ISA_SCALAR = 0,
    /// AVX-512 F/BW/VL + VNNI (`vpdpbusd`) on packed weights (`ck_pack`).
    CK_ISA_AVX512_VNNI = 2,
};

/// The largest magnitude of the int16 inputs: 127 * 256 + 127, so that every value q splits into
/// two signed bytes, q = 256 * h + l with l = (int8_t)q and h = (q + 128) >> 8, each a `vpdpbusd`
/// operand.
#define CK_INT16_LEVELS 32639

/// A hint to bring `address`'s cache line into the nearest cache (Swift has no prefetch of its own;
/// this inlines into Swift callers).
static inline void ck_prefetch(const void *address) { __builtin_prefetch(address, 0, 3); }

/// The fastest variant this CPU (and operating system) runs.
int ck_best_isa(void);

/// Whether `isa` runs here (`CK_ISA_SCALAR` always does).
int ck_isa_supported(int isa);

/// Input rows quantized per 32-value block to `bits` = 8 (llama.cpp's Q8_0 rounding: d = max|x| /
/// 127, q = round-half-even(x * (1 / d))) or 16 (d = max|x| / CK_INT16_LEVELS, q =
/// round-half-even(x * (CK_INT16_LEVELS / max|x|))). Per-block tables are block-major, entry
/// [b * stride + i].
typedef struct {
    int n;
    int columns;
    /// 8 or 16.
    int bits;
    /// n rounded up to a multiple of 8; table entries of the padding inputs are zero.
    size_t stride;
    /// Row i's block b at `values + (bits / 8) * (32 * (i * columns / 32 + b))`: 8 bits, the 32 q;
    /// 16 bits, the 32 high bytes h of its q, then the 32 low bytes l (q = 256 * h + l).
    const int8_t *values;
    /// d of each block.
    const float *scales;
    /// The block's integer offset term: -8 * sum(q) for Q4_0 weights, -128 * sum(q) for Q8_0, 0 for Q4_1.
    const int32_t *starts;
    /// d * sum(q) (the Q4_1 minimum's factor).
    const float *scaled_sums;
} ck_inputs;

/// Bytes of memory `ck_prepare` needs for n rows of `columns` at `bits`.
size_t ck_prepare_bytes(int bits, int n, int columns);

/// Quantizes `n` rows of `columns` fp32 values (a multiple of 32; row i at `x + i * x_stride`) to
/// `bits` (8 or 16) for products with `format` weights, into `memory` (`ck_prepare_bytes` long,
/// 64-byte aligned). A block holding an infinity or NaN gets d = NaN and zero values, so its
/// products are NaN as an fp32 product's would be; a block whose inverse scale overflows (tiny
/// values) gets d = 0 and zero values. `isa` picks the variant that quantizes (all give the same
/// result).
void ck_prepare(int isa, int bits, int format, const float *x, size_t x_stride, int n, int columns, void *memory,
                ck_inputs *out);

/// `ck_prepare` in parts, so that threads can quantize rows side by side: `ck_prepare_layout` lays
/// out `memory` for n rows (zeroed tables) and fills `out`; then `ck_prepare_rows` quantizes the
/// rows [row_begin, row_end) into it (disjoint ranges may run at the same time).
void ck_prepare_layout(int bits, int n, int columns, void *memory, ck_inputs *out);
void ck_prepare_rows(int isa, int format, const float *x, size_t x_stride, int row_begin, int row_end,
                     const ck_inputs *inputs);

/// y[i * y_stride + r] for rows r in [row_begin, row_end) of the weight matrix at `weights`
/// (`row_bytes` per row, columns / 32 blocks of `format`) and the prepared input rows i, in
/// portable C (the definition). Every output is, over its blocks b in order, with t_b the exact
/// integer sum of the block's unsigned weight integers (Q4: q; Q8_0: q + 128) times the inputs' q,
/// plus the block's start:
///
///     acc = fma(float(t_b) * d_x, d_w, acc);  Q4_1 only: acc = fma(m_w, d_x * sum(q_x), acc)
///
/// so it does not depend on n, the row range or the variant.
void ck_multiply(int format, const uint8_t *weights, size_t row_bytes, int row_begin, int row_end,
                 const ck_inputs *inputs, float *y, size_t y_stride);

/// Bytes of the packed form (`ck_pack`) of `rows` x `columns` `format` weights: as many as the rows
/// take, rounded up to 16 rows.
size_t ck_packed_bytes(int format, int rows, int columns);

/// Packs `rows` weight rows (`row_bytes` apart) for `ck_multiply_packed`: tiles of 16 rows (the
/// last padded with zero rows), and in a tile, block after block, the 16 rows' integers interleaved
/// by 4-byte chunks (vector c holds bytes 4c ..< 4c + 4 of every row's integers: Q4 the packed
/// nibbles, Q8_0 q + 128), then their 16 d (fp16) and, Q4_1, their 16 m. `packed` is
/// `ck_packed_bytes` long. Portable C.
void ck_pack(int format, const uint8_t *weights, size_t row_bytes, int rows, int columns, uint8_t *packed);

/// `ck_multiply` on packed weights (`ck_pack` of all the matrix's rows), with the same results bit
/// for bit, in AVX-512 VNNI: each 4-column chunk of an input block is broadcast against the same
/// chunk of a tile's 16 rows in one `vpdpbusd` (two for 16-bit inputs: high and low bytes), so
/// every weight block is read once for up to 8 inputs and no lane sums are needed. Only when
/// `ck_best_isa()` is `CK_ISA_AVX512_VNNI`; `row_begin` must be a multiple of 16.
void ck_multiply_packed(int format, const uint8_t *packed, int row_begin, int row_end, const ck_inputs *inputs,
                        float *y, size_t y_stride);

#ifdef __cplusplus
}
#endif

#endif
