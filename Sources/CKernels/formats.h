// Internal to CKernels: the per-format traits every kernel reads (the one table a new weight
// format is added to), and the packed tile layout the AVX-512 VNNI and AVX2 kernels share.
#ifndef MEDUSA_CKERNELS_FORMATS_H
#define MEDUSA_CKERNELS_FORMATS_H

#include "CKernels.h"

#include <string.h>

/// What a kernel needs to know about a weight format. Every format is read as 32-column groups:
/// per group, 32 unsigned integers u (the stored bits) with a constant offset (w = u + offset),
/// and per sub-block of `sub` columns (32, or 16: two per group) a scale D = d * sc and, for the
/// formats with minimums, M (Q4_1, Q5_1: the block's m; the K-quants: -(dmin * mn)).
typedef struct {
    /// Values per block (32 or 256) and bytes per block in the file (GGML layout).
    int block_values, block_bytes;
    /// Columns per sub-block: 32 or 16.
    int sub;
    /// Minimums: 0 none, 1 the block's fp16 m (Q4_1, Q5_1), 2 -(dmin * integer minimum) (K-quants).
    int min_kind;
    /// w = u + offset.
    int offset;
    /// The packed tile layout (`ck_pack`): per 16-row tile and block, a header of `header_bytes`
    /// (16 fp16 d, then 16 fp16 m or dmin if `min_kind`, then the sub-scales), then per group
    /// `group_bytes` of integers: `low_vectors` 64-byte vectors of the low bits (`low_bits` 2, 4
    /// or 8 per value), then `high_vectors` of the high bits (`high_bits` 1 or 2 per value).
    int header_bytes, group_bytes;
    int low_bits, low_vectors, high_bits, high_vectors;
} ck_format_traits;

/// The traits of `format` (a `CK_FORMAT_*`): a constant when `format` is one, so that the kernels
/// inlined for one format are specialised to it.
static inline __attribute__((always_inline)) ck_format_traits ck_traits(int format)
{
    switch (format) {
    //                                block     sub min off   header    group  low bits/vectors  high bits/vectors
    case CK_FORMAT_Q4_0: return (ck_format_traits){32, 18, 32, 0, -8, 32, 256, 4, 4, 0, 0};
    case CK_FORMAT_Q4_1: return (ck_format_traits){32, 20, 32, 1, 0, 64, 256, 4, 4, 0, 0};
    case CK_FORMAT_Q8_0: return (ck_format_traits){32, 34, 32, 0, -128, 32, 512, 8, 8, 0, 0};
    case CK_FORMAT_Q5_0: return (ck_format_traits){32, 22, 32, 0, -16, 32, 320, 4, 4, 1, 1};
    case CK_FORMAT_Q5_1: return (ck_format_traits){32, 24, 32, 1, 0, 64, 320, 4, 4, 1, 1};
    case CK_FORMAT_Q2_K: return (ck_format_traits){256, 84, 16, 2, 0, 64 + 256, 128, 2, 2, 0, 0};
    case CK_FORMAT_Q3_K: return (ck_format_traits){256, 110, 16, 0, -4, 32 + 192, 192, 2, 2, 1, 1};
    case CK_FORMAT_Q4_K: return (ck_format_traits){256, 144, 32, 2, 0, 64 + 192, 256, 4, 4, 0, 0};
    case CK_FORMAT_Q5_K: return (ck_format_traits){256, 176, 32, 2, 0, 64 + 192, 320, 4, 4, 1, 1};
    default: /* Q6_K */  return (ck_format_traits){256, 210, 16, 0, -32, 32 + 256, 384, 4, 4, 2, 2};
    }
}

/// Group `g` of the file's block at `block`: its 32 unsigned integers u, and per sub-block the
/// integer scale and minimum (1 and 0 for the 32-value formats; Q3_K's scale is signed, sc - 32;
/// Q6_K's is the int8), with the block's fp16 d and m (or dmin) bits.
void ck_group(int format, const uint8_t *block, int g, uint8_t u[32], int sc[2], int mn[2], uint16_t *d, uint16_t *m);

/// IEEE half -> float (exact).
float ck_half(uint16_t h);

static inline uint16_t ck_load_u16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static inline uint32_t ck_load_u32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/// Packed tile sub-scales (header after d and m): for Q4_K/Q5_K three 64-byte vectors of one
/// 32-bit word per row: W0 the low nibbles of the 8 scales (scale j at bits 4j), W1 those of the
/// 8 minimums, W2 their high 2 bits (scale j at bits 2j, minimum j at 16 + 2j). Q3_K the same
/// for its 16 scales stored as sc + 32 (0...63): W0 scales 0-7, W1 scales 8-15, W2 the high 2
/// bits of scale k at bits 2k. Q2_K and Q6_K: four vectors of the 16 scale bytes (vector v, row
/// r, byte j = scale 4v + j; Q2_K's byte: scale in the low nibble, minimum in the high).
///
/// Packed tile integers of a group, for chunk c (columns 4c ... 4c + 3; byte 4r + j of a vector
/// belongs to row r and column 4c + j): 4-bit low parts in vectors 0-3, the low nibble of vector
/// c % 4 for c < 4 and the high nibble for c >= 4; 2-bit low parts in vectors 0-1, bits 2 (c / 2)
/// of vector c % 2; 8-bit (Q8_0, stored u = q + 128) vector c; a high bit (Q5: bit 4, Q3_K: bit
/// 2) bit c of the one high vector; Q6_K's 2 high bits (bits 4-5) as the 2-bit low parts, in
/// two high vectors.

#endif
