// The AVX-512 VNNI variant: input quantization in vectors and the products on packed tiles
// (`ck_pack`), bit for bit `ck_multiply`'s results. One generic tile kernel serves every format:
// the format is a constant after inlining, so each (format, input width, inputs per tile)
// combination compiles to its own straight-line loop.
#include "formats.h"

#if defined(__x86_64__)
#include <immintrin.h>

#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"))), \
                             apply_to = function)

#define CK_INLINE static inline __attribute__((always_inline))

int ck_block_scale(int bits, int finite, float largest, float *d, float *inverse);

/// The portable quantization of one block in vectors, with the same results: the largest
/// magnitude is exact in any order, each product x * inverse is the same fp32 operation, and
/// `vcvtps2dq` rounds half to even as `nearbyintf` does in the default rounding mode.
float ck_vnni_quantize_block(int bits, const float *x, int8_t *out, int32_t *sum, int32_t *half)
{
    const __m512 a = _mm512_loadu_ps(x), b = _mm512_loadu_ps(x + 16);
    // x - x is 0 exactly when x is finite.
    const __mmask16 fa = _mm512_cmp_ps_mask(_mm512_sub_ps(a, a), _mm512_setzero_ps(), _CMP_EQ_OQ);
    const __mmask16 fb = _mm512_cmp_ps_mask(_mm512_sub_ps(b, b), _mm512_setzero_ps(), _CMP_EQ_OQ);
    const int finite = fa == 0xffff && fb == 0xffff;
    const float largest = finite ? _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b))) : 0.0f;
    float d, inverse;
    const int usable = ck_block_scale(bits, finite, largest, &d, &inverse);
    __m512i qa = _mm512_setzero_si512(), qb = _mm512_setzero_si512();
    if (usable) {
        qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, _mm512_set1_ps(inverse)));
        qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, _mm512_set1_ps(inverse)));
    }
    if (bits == 8) {
        _mm_storeu_si128((__m128i *)out, _mm512_cvtepi32_epi8(qa));
        _mm_storeu_si128((__m128i *)(out + 16), _mm512_cvtepi32_epi8(qb));
    } else {
        const __m512i round = _mm512_set1_epi32(128);
        _mm_storeu_si128((__m128i *)out, _mm512_cvtepi32_epi8(_mm512_srai_epi32(_mm512_add_epi32(qa, round), 8)));
        _mm_storeu_si128((__m128i *)(out + 16), _mm512_cvtepi32_epi8(_mm512_srai_epi32(_mm512_add_epi32(qb, round), 8)));
        _mm_storeu_si128((__m128i *)(out + 32), _mm512_cvtepi32_epi8(qa));
        _mm_storeu_si128((__m128i *)(out + 48), _mm512_cvtepi32_epi8(qb));
    }
    *half = _mm512_reduce_add_epi32(qa);
    *sum = *half + _mm512_reduce_add_epi32(qb);
    return d;
}

/// How many groups ahead (in packed bytes of one group) the kernel prefetches.
#define CK_PREFETCH_GROUPS 4

CK_INLINE __m512i ck_broadcast4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/// Bits `shift` ... `shift` + width - 1 of every 32-bit lane, as an integer vector.
CK_INLINE __m512i ck_field(__m512i v, int shift, int mask) { return _mm512_and_si512(_mm512_srli_epi32(v, shift), _mm512_set1_epi32(mask)); }

/// A group's unsigned integers: w[c] holds chunk c (columns 4c ... 4c + 3) of the 16 rows.
CK_INLINE void ck_decode_group(const int format, const ck_format_traits *t, const uint8_t *p, __m512i w[8])
{
    if (t->low_bits == 8) {
        for (int c = 0; c < 8; c++) w[c] = _mm512_loadu_si512(p + 64 * c);
        return;
    }
    if (t->low_bits == 4) {
        const __m512i low = _mm512_set1_epi8(0x0f);
        for (int c = 0; c < 4; c++) {
            const __m512i v = _mm512_loadu_si512(p + 64 * c);
            w[c] = _mm512_and_si512(v, low);
            w[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
        }
    } else {
        const __m512i three = _mm512_set1_epi8(3);
        const __m512i v0 = _mm512_loadu_si512(p), v1 = _mm512_loadu_si512(p + 64);
        for (int c = 0; c < 8; c++)
            w[c] = _mm512_and_si512(_mm512_srli_epi16(c % 2 ? v1 : v0, 2 * (c / 2)), three);
    }
    const uint8_t *high = p + 64 * t->low_vectors;
    if (t->high_bits == 1) {
        const __m512i h = _mm512_loadu_si512(high);
        const __m512i bit = _mm512_set1_epi8((char)(1 << t->low_bits));
        for (int c = 0; c < 8; c++) {
            // The bit is clear in w: adding it sets it.
            const __mmask64 set = _mm512_test_epi8_mask(h, _mm512_set1_epi8((char)(1 << c)));
            w[c] = _mm512_mask_add_epi8(w[c], set, w[c], bit);
        }
    } else if (t->high_bits == 2) {
        // Bits 2 (c / 2) ... of the high vector c % 2 moved to bits 4-5 (16-bit shifts: nothing
        // crosses into bits 4-5 of the other byte), then w | (moved & 0x30) in one ternary op.
        const __m512i bits45 = _mm512_set1_epi8(0x30);
        const __m512i h0 = _mm512_loadu_si512(high), h1 = _mm512_loadu_si512(high + 64);
        for (int c = 0; c < 8; c++) {
            const __m512i v = c % 2 ? h1 : h0;
            const int shift = c / 2;
            const __m512i moved = shift == 0 ? _mm512_slli_epi16(v, 4)
                                  : shift == 1 ? _mm512_slli_epi16(v, 2)
                                  : shift == 2 ? v
                                               : _mm512_srli_epi16(v, 2);
            w[c] = _mm512_ternarylogic_epi32(w[c], moved, bits45, 0xf8);
        }
    }
    (void)format;
}

/// The sub-block scales D (and minimums M) of group `g` of a tile block whose header is at `h`,
/// for the 16 rows: D[k] for sub-block k of the group (one or two), as `ck_multiply` defines them.
CK_INLINE void ck_group_scales(const int format, const ck_format_traits *t, const uint8_t *h, int g, __m512 dw,
                               __m512 mw, __m512 D[2], __m512 M[2])
{
    const uint8_t *s = h + (t->min_kind != 0 ? 64 : 32);
    switch (format) {
    case CK_FORMAT_Q4_K:
    case CK_FORMAT_Q5_K: {
        const __m512i w0 = _mm512_loadu_si512(s), w1 = _mm512_loadu_si512(s + 64), w2 = _mm512_loadu_si512(s + 128);
        const __m512i sc = _mm512_or_si512(ck_field(w0, 4 * g, 15), _mm512_slli_epi32(ck_field(w2, 2 * g, 3), 4));
        const __m512i mn = _mm512_or_si512(ck_field(w1, 4 * g, 15), _mm512_slli_epi32(ck_field(w2, 16 + 2 * g, 3), 4));
        D[0] = _mm512_mul_ps(dw, _mm512_cvtepi32_ps(sc));
        M[0] = _mm512_mul_ps(mw, _mm512_cvtepi32_ps(mn));
        break;
    }
    case CK_FORMAT_Q3_K: {
        const __m512i w2 = _mm512_loadu_si512(s + 128), bias = _mm512_set1_epi32(32);
        for (int k = 0; k < 2; k++) {
            const int j = 2 * g + k;
            const __m512i low = ck_field(_mm512_loadu_si512(s + 64 * (j / 8)), 4 * (j % 8), 15);
            const __m512i sc = _mm512_or_si512(low, _mm512_slli_epi32(ck_field(w2, 2 * j, 3), 4));
            D[k] = _mm512_mul_ps(dw, _mm512_cvtepi32_ps(_mm512_sub_epi32(sc, bias)));
        }
        break;
    }
    case CK_FORMAT_Q6_K:
        for (int k = 0; k < 2; k++) {
            const int j = 2 * g + k;
            const __m512i v = _mm512_loadu_si512(s + 64 * (j / 4));
            const __m512i sc = _mm512_srai_epi32(_mm512_slli_epi32(v, 24 - 8 * (j % 4)), 24);
            D[k] = _mm512_mul_ps(dw, _mm512_cvtepi32_ps(sc));
        }
        break;
    case CK_FORMAT_Q2_K:
        for (int k = 0; k < 2; k++) {
            const int j = 2 * g + k;
            const __m512i v = _mm512_loadu_si512(s + 64 * (j / 4));
            D[k] = _mm512_mul_ps(dw, _mm512_cvtepi32_ps(ck_field(v, 8 * (j % 4), 15)));
            M[k] = _mm512_mul_ps(mw, _mm512_cvtepi32_ps(ck_field(v, 8 * (j % 4) + 4, 15)));
        }
        break;
    default:  // the 32-value formats: D = d, M = m
        D[0] = dw;
        M[0] = mw;
        break;
    }
}

/// sum(u * q) over chunks c0 ... c1 - 1 of input row `x` (a block of `bits`), plus `start`, in
/// every lane (16 rows).
CK_INLINE __m512i ck_dot(const int wide, const __m512i w[8], int c0, int c1, const int8_t *x, __m512i start)
{
    __m512i t = start;
    if (wide) {
        // Two independent chains: the high bytes' and the low bytes'.
        __m512i h = _mm512_setzero_si512();
        for (int c = c0; c < c1; c++) {
            h = _mm512_dpbusd_epi32(h, w[c], ck_broadcast4(x + 4 * c));
            t = _mm512_dpbusd_epi32(t, w[c], ck_broadcast4(x + 32 + 4 * c));
        }
        return _mm512_add_epi32(t, _mm512_slli_epi32(h, 8));
    }
    for (int c = c0; c < c1; c++) t = _mm512_dpbusd_epi32(t, w[c], ck_broadcast4(x + 4 * c));
    return t;
}

/// One packed tile (16 weight rows: the lanes) times the G inputs i0 ..< i0 + G (G <= 8, a
/// constant after inlining, so the accumulators stay in registers). Each tile group is decoded
/// once into 8 vectors of 4-column chunks, and its sub-block scales once; each input's chunk is
/// broadcast against them (`vpdpbusd`; 16-bit inputs: the high bytes' sum shifted by 8 plus the
/// low bytes'), so every lane gets its row's exact sub-block sum without a reduction.
CK_INLINE void ck_vnni_tile(const int G, const int format, const int wide, const uint8_t *tile, int first_group,
                            const ck_inputs *in, int i0, float *y, size_t y_stride, __mmask16 store)
{
    const ck_format_traits traits = ck_traits(format), *t = &traits;
    const int groups = in->columns / 32, per_block = t->block_values / 32, halves = 32 / t->sub;
    const size_t block_bytes = wide ? 64 : 32, row_bytes = (size_t)groups * block_bytes;
    __m512 acc[8];
    for (int i = 0; i < G; i++) acc[i] = _mm512_setzero_ps();
    const uint8_t *p = tile;
    for (int g = 0; g < groups;) {
        const int a = first_group + g, in_block = per_block - a % per_block;
        const int count = in_block < groups - g ? in_block : groups - g;
        const uint8_t *header = p;
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)header));
        __m512 mw = _mm512_setzero_ps();
        if (t->min_kind == 1) mw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(header + 32)));
        // -(dmin * mn) = (-dmin) * mn exactly.
        if (t->min_kind == 2) mw = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(header + 32))));
        p += t->header_bytes;
        for (int j = 0; j < count; j++, p += t->group_bytes) {
            // Past the matrix's end is harmless: prefetches do not fault.
            for (int line = 0; line < t->group_bytes; line += 64) ck_prefetch(p + CK_PREFETCH_GROUPS * t->group_bytes + line);
            __m512i w[8];
            ck_decode_group(format, t, p, w);
            __m512 D[2], M[2];
            ck_group_scales(format, t, header, a % per_block + j, dw, mw, D, M);
            const int b = g + j;
            for (int i = 0; i < G; i++) {
                const size_t k = (size_t)b * in->stride + i0 + i;
                const int8_t *x = in->values + (size_t)(i0 + i) * row_bytes + (size_t)b * block_bytes;
                const __m512 s = _mm512_set1_ps(in->scales[k]);
                if (halves == 1) {
                    const __m512i dot = ck_dot(wide, w, 0, 8, x, _mm512_set1_epi32(t->offset * in->sums[k]));
                    acc[i] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dot), s), D[0], acc[i]);
                    if (t->min_kind != 0) acc[i] = _mm512_fmadd_ps(M[0], _mm512_set1_ps(in->scaled_sums[k]), acc[i]);
                } else {
                    const int32_t first = in->half_sums[k], second = in->sums[k] - first;
                    const __m512i d0 = ck_dot(wide, w, 0, 4, x, _mm512_set1_epi32(t->offset * first));
                    const __m512i d1 = ck_dot(wide, w, 4, 8, x, _mm512_set1_epi32(t->offset * second));
                    acc[i] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(d0), s), D[0], acc[i]);
                    if (t->min_kind != 0) acc[i] = _mm512_fmadd_ps(M[0], _mm512_set1_ps(in->scaled_halves[0][k]), acc[i]);
                    acc[i] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(d1), s), D[1], acc[i]);
                    if (t->min_kind != 0) acc[i] = _mm512_fmadd_ps(M[1], _mm512_set1_ps(in->scaled_halves[1][k]), acc[i]);
                }
            }
        }
        g += count;
    }
    for (int i = 0; i < G; i++) _mm512_mask_storeu_ps(y + (size_t)(i0 + i) * y_stride, store, acc[i]);
}

CK_INLINE void ck_vnni_rows(const int format, const int wide, const uint8_t *packed, int first_group, int row_begin,
                            int row_end, const ck_inputs *in, float *y, size_t y_stride)
{
    const size_t tile_bytes = ck_packed_bytes(format, 16, first_group, in->columns / 32);
    for (int r = row_begin; r < row_end; r += 16) {
        const uint8_t *tile = packed + (size_t)(r / 16) * tile_bytes;
        const __mmask16 store = row_end - r >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (row_end - r)) - 1);
        int i = 0;
        for (; i + 8 <= in->n; i += 8) ck_vnni_tile(8, format, wide, tile, first_group, in, i, y + r, y_stride, store);
        switch (in->n - i) {
        case 1: ck_vnni_tile(1, format, wide, tile, first_group, in, i, y + r, y_stride, store); break;
        case 2: ck_vnni_tile(2, format, wide, tile, first_group, in, i, y + r, y_stride, store); break;
        case 3: ck_vnni_tile(3, format, wide, tile, first_group, in, i, y + r, y_stride, store); break;
        case 4: ck_vnni_tile(4, format, wide, tile, first_group, in, i, y + r, y_stride, store); break;
        case 5: ck_vnni_tile(5, format, wide, tile, first_group, in, i, y + r, y_stride, store); break;
        case 6: ck_vnni_tile(6, format, wide, tile, first_group, in, i, y + r, y_stride, store); break;
        case 7: ck_vnni_tile(7, format, wide, tile, first_group, in, i, y + r, y_stride, store); break;
        default: break;
        }
    }
}

#define CK_VNNI_FORMAT(F)                                                                                     \
    case F:                                                                                                   \
        if (wide) ck_vnni_rows(F, 1, packed, first_group, row_begin, row_end, in, y, y_stride);             \
        else ck_vnni_rows(F, 0, packed, first_group, row_begin, row_end, in, y, y_stride);                  \
        break;

void ck_multiply_vnni(int format, const uint8_t *packed, int first_group, int row_begin, int row_end,
                      const ck_inputs *in, float *y, size_t y_stride)
{
    const int wide = in->bits == 16;
    switch (format) {
        CK_VNNI_FORMAT(CK_FORMAT_Q4_0)
        CK_VNNI_FORMAT(CK_FORMAT_Q4_1)
        CK_VNNI_FORMAT(CK_FORMAT_Q8_0)
        CK_VNNI_FORMAT(CK_FORMAT_Q5_0)
        CK_VNNI_FORMAT(CK_FORMAT_Q5_1)
        CK_VNNI_FORMAT(CK_FORMAT_Q2_K)
        CK_VNNI_FORMAT(CK_FORMAT_Q3_K)
        CK_VNNI_FORMAT(CK_FORMAT_Q4_K)
        CK_VNNI_FORMAT(CK_FORMAT_Q5_K)
        CK_VNNI_FORMAT(CK_FORMAT_Q6_K)
    default: break;
    }
}

#pragma clang attribute pop
#endif
