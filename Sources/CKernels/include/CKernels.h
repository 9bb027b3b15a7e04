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

/// Weight formats (GGUF's layouts: 32 values per block for Q4_0 ... Q8_0, 256 per super-block for
/// the K-quants). Each is read as 32-column groups (`ck_multiply` defines the products).
enum {
    CK_FORMAT_Q4_0 = 0,
    CK_FORMAT_Q4_1 = 1,
    CK_FORMAT_Q8_0 = 2,
    CK_FORMAT_Q5_0 = 3,
    CK_FORMAT_Q5_1 = 4,
    CK_FORMAT_Q2_K = 5,
    CK_FORMAT_Q3_K = 6,
    CK_FORMAT_Q4_K = 7,
    CK_FORMAT_Q5_K = 8,
    CK_FORMAT_Q6_K = 9,
    CK_FORMAT_COUNT = 10,
};

/// Values and bytes per block of `format` in the file.
int ck_format_block_values(int format);
int ck_format_block_bytes(int format);

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
/// round-half-even(x * (CK_INT16_LEVELS / max|x|))), the same for every weight format. Per-block
/// tables are block-major, entry [b * stride + i].
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
    /// sum(q) over the block, and over its first 16 values.
    const int32_t *sums;
    const int32_t *half_sums;
    /// d * sum(q) over the block, and over its first and its second 16 values.
    const float *scaled_sums;
    const float *scaled_halves[2];
} ck_inputs;

/// Bytes of memory `ck_prepare` needs for n rows of `columns` at `bits`.
size_t ck_prepare_bytes(int bits, int n, int columns);

/// Quantizes `n` rows of `columns` fp32 values (a multiple of 32; row i at `x + i * x_stride`) to
/// `bits` (8 or 16) into `memory` (`ck_prepare_bytes` long, 64-byte aligned). A block holding an
/// infinity or NaN gets d = NaN and zero values, so its products are NaN as an fp32 product's
/// would be; a block whose inverse scale overflows (tiny values) gets d = 0 and zero values.
/// `isa` picks the variant that quantizes (all give the same result).
void ck_prepare(int isa, int bits, const float *x, size_t x_stride, int n, int columns, void *memory, ck_inputs *out);

/// `ck_prepare` in parts, so that threads can quantize rows side by side: `ck_prepare_layout` lays
/// out `memory` for n rows (zeroed tables) and fills `out`; then `ck_prepare_rows` quantizes the
/// rows [row_begin, row_end) into it (disjoint ranges may run at the same time).
void ck_prepare_layout(int bits, int n, int columns, void *memory, ck_inputs *out);
void ck_prepare_rows(int isa, const float *x, size_t x_stride, int row_begin, int row_end, const ck_inputs *inputs);

/// y[i * y_stride + r] for rows r in [row_begin, row_end) of the weight matrix at `weights`
/// (`row_bytes` per row, GGML blocks of `format`) whose column 0 is group `first_group` of each
/// row's first block, and the prepared input rows i, in portable C (the definition). Per weight
/// group (32 columns: u the stored unsigned integers, w = u + offset; `ck_group`) and input block
/// b in order, and per sub-block k of the group (one of 32 columns, or two of 16 for Q2_K, Q3_K
/// and Q6_K), with t_k the exact integer sum over the sub-block of w * q:
///
///     acc = fma(float(t_k) * d_x, D_k, acc);  with minimums: acc = fma(M_k, d_x * sum_k(q), acc)
///
/// where D_k = d (the 32-value formats) or d * sc_k (the K-quants' integer sub-scale; exact in
/// fp32) and M_k = m (Q4_1, Q5_1) or -(dmin * mn_k) (Q2_K, Q4_K, Q5_K). So a result does not
/// depend on n, the row range or the variant.
void ck_multiply(int format, const uint8_t *weights, size_t row_bytes, int first_group, int row_begin, int row_end,
                 const ck_inputs *inputs, float *y, size_t y_stride);

/// Bytes of the packed form (`ck_pack`) of `rows` rows of `groups` 32-column groups from group
/// `first_group` of their first block: as many as the rows' blocks take (a block's scales once
/// per block touched), rounded up to 16 rows.
size_t ck_packed_bytes(int format, int rows, int first_group, int groups);

/// Packs `rows` weight rows (`row_bytes` apart; columns as for `ck_multiply`) for
/// `ck_multiply_packed`: tiles of 16 rows (the last padded with zero rows), and in a tile, block
/// after block, a header with the 16 rows' scales (fp16 d, then m or dmin, then the integer
/// sub-scales, `formats.h`), then each group's integers interleaved by 4-byte chunks (vector c of
/// a bit plane holds columns 4c ... 4c + 3 of every row). The same bits as the rows, rearranged.
/// `packed` is `ck_packed_bytes` long. Portable C.
void ck_pack(int format, const uint8_t *weights, size_t row_bytes, int rows, int first_group, int groups, uint8_t *packed);

/// `ck_multiply` on packed weights (`ck_pack` of all the matrix's rows), with the same results bit
/// for bit, in AVX-512 VNNI: each 4-column chunk of an input block is broadcast against the same
/// chunk of a tile's 16 rows in one `vpdpbusd` (two for 16-bit inputs: high and low bytes), so
/// every weight group is read once for up to 8 inputs and no lane sums are needed. Only when
/// `ck_best_isa()` is `CK_ISA_AVX512_VNNI`; `row_begin` must be a multiple of 16.
void ck_multiply_packed(int format, const uint8_t *packed, int first_group, int row_begin, int row_end,
                        const ck_inputs *inputs, float *y, size_t y_stride);

#ifdef __cplusplus
}
#endif

#endif
