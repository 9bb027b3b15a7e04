#include "CKernels.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

static inline uint16_t ck_load_u16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static inline int ck_block_bytes(int format)
{
    return format == CK_FORMAT_Q8_0 ? 34 : (format == CK_FORMAT_Q4_1 ? 20 : 18);
}

static inline int ck_offset(int format)
{
    return format == CK_FORMAT_Q4_0 ? -8 : (format == CK_FORMAT_Q8_0 ? -128 : 0);
}

/// IEEE half -> float (exact).
static float ck_half(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    const uint32_t exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    uint32_t bits;
    if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent != 0) {
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
        bits = sign;
    } else {
        float f = (float)mantissa * 0x1p-24f;
        memcpy(&bits, &f, 4);
        bits |= sign;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// MARK: - Quantization

/// One block: returns d and writes q and the sum of q.
static float ck_quantize_block(const float *x, int8_t *q, int32_t *sum)
{
    float largest = 0.0f;
    int finite = 1;
    for (int j = 0; j < 32; j++) {
        finite &= isfinite(x[j]) != 0;
        const float a = fabsf(x[j]);
        largest = a > largest ? a : largest;
    }
    float d = finite ? largest / 127.0f : NAN;
    const float inverse = finite && d != 0.0f ? 1.0f / d : 0.0f;
    const int usable = finite && isfinite(inverse);
    if (finite && !usable) d = 0.0f;
    int32_t total = 0;
    for (int j = 0; j < 32; j++) {
        const int32_t v = usable ? (int32_t)nearbyintf(x[j] * inverse) : 0;
        q[j] = (int8_t)v;
        total += v;
    }
    *sum = total;
    return d;
}

static size_t ck_round64(size_t bytes) { return (bytes + 63) / 64 * 64; }

/// Where `ck_int8_prepare` puts its tables in its memory: block-major scales, starts and scaled
/// sums (`table` bytes each), then the row-major values, then (n >= 2) the groups of 8.
typedef struct {
    size_t stride, table, values, grouped, total;
} ck_int8_layout;

static ck_int8_layout ck_layout(int n, int columns)
{
    const size_t stride = ((size_t)n + 7) / 8 * 8;
    const size_t table = ck_round64(4 * ((size_t)columns / 32) * stride), values = 3 * table;
    const size_t grouped = values + ck_round64((size_t)n * columns);
    return (ck_int8_layout){
        .stride = stride, .table = table, .values = values, .grouped = grouped,
        .total = grouped + (n >= 2 ? stride * (size_t)columns : 0),
    };
}

size_t ck_int8_prepare_bytes(int n, int columns) { return ck_layout(n, columns).total; }

#if defined(__x86_64__)
static float ck_vnni_quantize_block(const float *x, int8_t *q, int32_t *sum);
#endif

void ck_int8_prepare(int isa, int format, const float *x, size_t x_stride, int n, int columns, void *memory,
                     ck_int8_inputs *out)
{
    const int blocks = columns / 32;
    const ck_int8_layout layout = ck_layout(n, columns);
    const size_t stride = layout.stride;
    uint8_t *base = memory;
    float *scales = (float *)base;
    int32_t *starts = (int32_t *)(base + layout.table);
    float *scaled = (float *)(base + 2 * layout.table);
    int8_t *values = (int8_t *)(base + layout.values);
    int8_t *grouped = n >= 2 ? (int8_t *)(base + layout.grouped) : NULL;
    memset(base, 0, 3 * layout.table);
    const int offset = ck_offset(format);
    for (int i = 0; i < n; i++)
        for (int b = 0; b < blocks; b++) {
            int32_t sum;
            const float *block = x + (size_t)i * x_stride + 32 * b;
            int8_t *q = values + (size_t)i * columns + 32 * b;
#if defined(__x86_64__)
            const float d = isa == CK_ISA_AVX512_VNNI ? ck_vnni_quantize_block(block, q, &sum) : ck_quantize_block(block, q, &sum);
#else
            const float d = ck_quantize_block(block, q, &sum);
#endif
            scales[b * stride + i] = d;
            starts[b * stride + i] = offset * sum;
            scaled[b * stride + i] = d * (float)sum;
        }
    if (grouped) {
        memset(grouped, 0, stride * (size_t)columns);
        for (int i = 0; i < n; i++)
            for (int b = 0; b < blocks; b++)
                for (int k = 0; k < 8; k++)
                    memcpy(grouped + ((((size_t)(i / 8) * blocks + b) * 8 + k) * 8 + i % 8) * 4,
                           values + (size_t)i * columns + 32 * b + 4 * k, 4);
    }
    *out = (ck_int8_inputs){
        .n = n, .columns = columns, .stride = stride, .values = values, .grouped = grouped,
        .scales = scales, .starts = starts, .scaled_sums = scaled,
    };
}

// MARK: - Portable variant (the definition)

static void ck_multiply_scalar(int format, const uint8_t *weights, size_t row_bytes, int row_begin, int row_end,
                               const ck_int8_inputs *in, float *y, size_t y_stride)
{
    const int blocks = in->columns / 32, block_bytes = ck_block_bytes(format);
    for (int r = row_begin; r < row_end; r++)
        for (int i = 0; i < in->n; i++) {
            float acc = 0.0f;
            for (int b = 0; b < blocks; b++) {
                const uint8_t *block = weights + (size_t)r * row_bytes + (size_t)b * block_bytes;
                const int8_t *x = in->values + (size_t)i * in->columns + 32 * b;
                const size_t k = (size_t)b * in->stride + i;
                int32_t t = in->starts[k];
                for (int c = 0; c < 32; c++) {
                    int32_t u;
                    if (format == CK_FORMAT_Q8_0) {
                        u = (int32_t)(int8_t)block[2 + c] + 128;
                    } else {
                        const uint8_t byte = block[(format == CK_FORMAT_Q4_1 ? 4 : 2) + c % 16];
                        u = c < 16 ? (byte & 0x0f) : (byte >> 4);
                    }
                    t += u * (int32_t)x[c];
                }
                const float f = (float)t * in->scales[k];
                acc = fmaf(f, ck_half(ck_load_u16(block)), acc);
                if (format == CK_FORMAT_Q4_1) acc = fmaf(ck_half(ck_load_u16(block + 2)), in->scaled_sums[k], acc);
            }
            y[(size_t)i * y_stride + r] = acc;
        }
}

// MARK: - AVX-512 VNNI variant

#if defined(__x86_64__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"))), \
                             apply_to = function)

#define CK_INLINE static inline __attribute__((always_inline))

/// `ck_quantize_block` in vectors, with the same results: the largest magnitude is exact in any
/// order, each product x * (1 / d) is the same fp32 operation, and `vcvtps2dq` rounds half to even
/// as `nearbyintf` does in the default rounding mode.
static float ck_vnni_quantize_block(const float *x, int8_t *q, int32_t *sum)
{
    const __m512 a = _mm512_loadu_ps(x), b = _mm512_loadu_ps(x + 16);
    // x - x is 0 exactly when x is finite.
    const __mmask16 fa = _mm512_cmp_ps_mask(_mm512_sub_ps(a, a), _mm512_setzero_ps(), _CMP_EQ_OQ);
    const __mmask16 fb = _mm512_cmp_ps_mask(_mm512_sub_ps(b, b), _mm512_setzero_ps(), _CMP_EQ_OQ);
    const int finite = fa == 0xffff && fb == 0xffff;
    const float largest = finite ? _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b))) : 0.0f;
    float d = finite ? largest / 127.0f : NAN;
    const float inverse = finite && d != 0.0f ? 1.0f / d : 0.0f;
    const int usable = finite && isfinite(inverse);
    if (finite && !usable) d = 0.0f;
    __m512i qa = _mm512_setzero_si512(), qb = _mm512_setzero_si512();
    if (usable) {
        qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, _mm512_set1_ps(inverse)));
        qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, _mm512_set1_ps(inverse)));
    }
    _mm_storeu_si128((__m128i *)q, _mm512_cvtepi32_epi8(qa));
    _mm_storeu_si128((__m128i *)(q + 16), _mm512_cvtepi32_epi8(qb));
    *sum = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
    return d;
}

/// A weight block's 32 unsigned integers (Q4: q, columns in order; Q8_0: q + 128).
CK_INLINE __m256i ck_vnni_decode(const int format, const uint8_t *block)
{
    if (format == CK_FORMAT_Q8_0)
        return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(block + 2)), _mm256_set1_epi8((char)0x80));
    const __m128i lo = _mm_loadu_si128((const __m128i *)(block + (format == CK_FORMAT_Q4_1 ? 4 : 2)));
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(lo, 4), lo), _mm256_set1_epi8(0x0f));
}

/// Four rows' fp16 at byte `at` of block b as fp32 lanes.
CK_INLINE __m128 ck_vnni_halves4(const uint8_t *w, size_t row_bytes, size_t at)
{
    __m128i h = _mm_cvtsi32_si128(ck_load_u16(w + at));
    h = _mm_insert_epi16(h, ck_load_u16(w + row_bytes + at), 1);
    h = _mm_insert_epi16(h, ck_load_u16(w + 2 * row_bytes + at), 2);
    h = _mm_insert_epi16(h, ck_load_u16(w + 3 * row_bytes + at), 3);
    return _mm_cvtph_ps(h);
}

/// How many 4-row tiles ahead `ck_vnni_single4` prefetches.
#define CK_PREFETCH_TILES 2

/// C input rows (n = C = 1 or 2) times four weight rows, each weight block decoded once for the C
/// inputs: lanes of the fp32 totals are the rows.
CK_INLINE void ck_vnni_single4(const int C, const int format, const uint8_t *w, size_t row_bytes,
                               const ck_int8_inputs *in, float *y, size_t y_stride)
{
    const int blocks = in->columns / 32, block_bytes = ck_block_bytes(format);
    // The hardware prefetchers do not follow four interleaved row streams well: fetch the rows of
    // the tile after next (4 rows, contiguous) a few cache lines per block. Prefetching past the
    // matrix's end is harmless (prefetches do not fault).
    const uint8_t *ahead = w + CK_PREFETCH_TILES * 4 * row_bytes;
    const size_t lines = (4 * row_bytes + 63) / 64;
    __m128 acc[2] = {_mm_setzero_ps(), _mm_setzero_ps()};
    for (int b = 0; b < blocks; b++) {
        const size_t at = (size_t)b * block_bytes;
        for (size_t line = lines * b / blocks; line < lines * (b + 1) / blocks; line++)
            ck_prefetch(ahead + 64 * line);
        const __m256i w0 = ck_vnni_decode(format, w + at), w1 = ck_vnni_decode(format, w + row_bytes + at);
        const __m256i w2 = ck_vnni_decode(format, w + 2 * row_bytes + at), w3 = ck_vnni_decode(format, w + 3 * row_bytes + at);
        const __m128 dw = ck_vnni_halves4(w, row_bytes, at);
        const __m128 mw = format == CK_FORMAT_Q4_1 ? ck_vnni_halves4(w, row_bytes, at + 2) : _mm_setzero_ps();
        for (int c = 0; c < C; c++) {
            const size_t k = (size_t)b * in->stride + c;
            const __m256i x = _mm256_loadu_si256((const __m256i *)(in->values + (size_t)c * in->columns + 32 * b));
            const __m256i start = _mm256_zextsi128_si256(_mm_cvtsi32_si128(in->starts[k]));
            const __m256i t0 = _mm256_dpbusd_epi32(start, w0, x), t1 = _mm256_dpbusd_epi32(start, w1, x);
            const __m256i t2 = _mm256_dpbusd_epi32(start, w2, x), t3 = _mm256_dpbusd_epi32(start, w3, x);
            // Lane sums of t0..t3 (exact integers): [t0, t1, t2, t3].
            const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(t0, t1), _mm256_hadd_epi32(t2, t3));
            const __m128i t = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
            const __m128 f = _mm_mul_ps(_mm_cvtepi32_ps(t), _mm_set1_ps(in->scales[k]));
            acc[c] = _mm_fmadd_ps(f, dw, acc[c]);
            if (format == CK_FORMAT_Q4_1)
                acc[c] = _mm_fmadd_ps(mw, _mm_set1_ps(in->scaled_sums[k]), acc[c]);
        }
    }
    for (int c = 0; c < C; c++) _mm_storeu_ps(y + (size_t)c * y_stride, acc[c]);
}

/// Decodes blocks [b0, b1) of R weight rows: their unsigned integers into `decoded` ([R][b1 - b0][32]
/// bytes), their scales (and Q4_1 minima) as fp32 into `dw` (and `mw`), [R][b1 - b0].
CK_INLINE void ck_vnni_decode_rows(const int R, const int format, const uint8_t *w, size_t row_bytes, int b0, int b1,
                                   uint8_t *decoded, float *dw, float *mw)
{
    const int block_bytes = ck_block_bytes(format), count = b1 - b0;
    for (int r = 0; r < R; r++)
        for (int b = b0; b < b1; b++) {
            const uint8_t *block = w + r * row_bytes + (size_t)b * block_bytes;
            const size_t k = (size_t)r * count + (b - b0);
            _mm256_store_si256((__m256i *)(decoded + k * 32), ck_vnni_decode(format, block));
            dw[k] = _cvtsh_ss(ck_load_u16(block));
            if (format == CK_FORMAT_Q4_1) mw[k] = _cvtsh_ss(ck_load_u16(block + 2));
        }
}

/// R weight rows (decoded blocks [b0, b1) in `decoded`) times input group g: lanes are the group's
/// 8 inputs. Each 4-column chunk of a weight block is broadcast from memory and meets the group's
/// 8 inputs in one `vpdpbusd`. `acc` carries the R accumulators across block ranges.
CK_INLINE void ck_vnni_group(const int R, const int format, const uint8_t *decoded, const float *dw, const float *mw,
                             int b0, int b1, const ck_int8_inputs *in, int g, __m256 *acc)
{
    const int blocks = in->columns / 32, count = b1 - b0;
    const int8_t *xg = in->grouped + (size_t)g * blocks * 256;
    for (int b = b0; b < b1; b++) {
        const size_t k = (size_t)b * in->stride + 8 * (size_t)g;
        // Each 4-column chunk c of the weight block, broadcast, meets the same columns of the 8
        // inputs in one `vpdpbusd`; two chains per row (even and odd chunks), the start in the first.
        const __m256i start = _mm256_loadu_si256((const __m256i *)(in->starts + k));
        __m256i t[4][2];
        const int8_t *xb = xg + (size_t)b * 256;
        for (int c = 0; c < 8; c++) {
            const __m256i x = _mm256_load_si256((const __m256i *)(xb + 32 * c));
            for (int r = 0; r < R; r++) {
                int32_t chunk;
                memcpy(&chunk, decoded + ((size_t)r * count + (b - b0)) * 32 + 4 * c, 4);
                const __m256i wc = _mm256_set1_epi32(chunk);
                t[r][c & 1] = _mm256_dpbusd_epi32(c < 2 ? (c == 0 ? start : _mm256_setzero_si256()) : t[r][c & 1], wc, x);
            }
        }
        const __m256 dx = _mm256_loadu_ps(in->scales + k);
        for (int r = 0; r < R; r++) {
            const __m256i total = _mm256_add_epi32(t[r][0], t[r][1]);
            const __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(total), dx);
            const size_t j = (size_t)r * count + (b - b0);
            acc[r] = _mm256_fmadd_ps(f, _mm256_set1_ps(dw[j]), acc[r]);
            if (format == CK_FORMAT_Q4_1)
                acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(mw[j]), _mm256_loadu_ps(in->scaled_sums + k), acc[r]);
        }
    }
}

/// Blocks decoded at a time: 4 rows x 64 blocks x 32 bytes = 8 KiB of stack.
#define CK_DECODE_BLOCKS 64

/// R weight rows times all inputs (n >= 2), a range of blocks at a time: the range's weights are
/// decoded once into a buffer, then every input group runs over it.
CK_INLINE void ck_vnni_rows_grouped(const int R, const int format, const uint8_t *w, size_t row_bytes,
                                    const ck_int8_inputs *in, float *y, size_t y_stride)
{
    const int blocks = in->columns / 32, groups = (in->n + 7) / 8;
    _Alignas(32) uint8_t decoded[4 * CK_DECODE_BLOCKS * 32];
    _Alignas(32) float dw[4 * CK_DECODE_BLOCKS], mw[4 * CK_DECODE_BLOCKS];
    _Alignas(32) float totals[groups][4][8];
    for (int b0 = 0; b0 < blocks; b0 += CK_DECODE_BLOCKS) {
        const int b1 = b0 + CK_DECODE_BLOCKS < blocks ? b0 + CK_DECODE_BLOCKS : blocks;
        ck_vnni_decode_rows(R, format, w, row_bytes, b0, b1, decoded, dw, mw);
        // The decoded bytes are read back as 4-byte broadcasts: keep the compiler from turning
        // them into shuffles of the registers they were stored from.
        __asm__ volatile("" : : "r"(decoded), "r"(dw), "r"(mw) : "memory");
        for (int g = 0; g < groups; g++) {
            __m256 acc[4];
            for (int r = 0; r < R; r++) acc[r] = b0 == 0 ? _mm256_setzero_ps() : _mm256_load_ps(totals[g][r]);
            ck_vnni_group(R, format, decoded, dw, mw, b0, b1, in, g, acc);
            for (int r = 0; r < R; r++) _mm256_store_ps(totals[g][r], acc[r]);
        }
    }
    for (int i = 0; i < in->n; i++)
        for (int r = 0; r < R; r++) y[(size_t)i * y_stride + r] = totals[i / 8][r][i % 8];
}

CK_INLINE void ck_vnni_rows(const int format, const uint8_t *weights, size_t row_bytes, int row_begin, int row_end,
                            const ck_int8_inputs *in, float *y, size_t y_stride)
{
    int r = row_begin;
    // One or two inputs: decoded weight blocks in registers, block sums reduced across lanes. More:
    // groups of 8 inputs against broadcast weight chunks (costs about as much as two single inputs).
    if (in->n <= 2) {
        for (; r + 4 <= row_end; r += 4) {
            if (in->n == 1)
                ck_vnni_single4(1, format, weights + (size_t)r * row_bytes, row_bytes, in, y + r, y_stride);
            else
                ck_vnni_single4(2, format, weights + (size_t)r * row_bytes, row_bytes, in, y + r, y_stride);
        }
        if (r < row_end) ck_multiply_scalar(format, weights, row_bytes, r, row_end, in, y, y_stride);
        return;
    }
    for (; r + 4 <= row_end; r += 4)
        ck_vnni_rows_grouped(4, format, weights + (size_t)r * row_bytes, row_bytes, in, y + r, y_stride);
    for (; r < row_end; r++)
        ck_vnni_rows_grouped(1, format, weights + (size_t)r * row_bytes, row_bytes, in, y + r, y_stride);
}

static void ck_multiply_vnni(int format, const uint8_t *weights, size_t row_bytes, int row_begin, int row_end,
                             const ck_int8_inputs *in, float *y, size_t y_stride)
{
    switch (format) {
    case CK_FORMAT_Q4_0: ck_vnni_rows(CK_FORMAT_Q4_0, weights, row_bytes, row_begin, row_end, in, y, y_stride); break;
    case CK_FORMAT_Q4_1: ck_vnni_rows(CK_FORMAT_Q4_1, weights, row_bytes, row_begin, row_end, in, y, y_stride); break;
    default: ck_vnni_rows(CK_FORMAT_Q8_0, weights, row_bytes, row_begin, row_end, in, y, y_stride); break;
    }
}

#pragma clang attribute pop

static int ck_detect(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return CK_ISA_SCALAR;
    const int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    if (!(osxsave && avx && fma && f16c)) return CK_ISA_SCALAR;
    unsigned xcr0, xcr0_high;
    __asm__ volatile("xgetbv" : "=a"(xcr0), "=d"(xcr0_high) : "c"(0));
    // The OS must save XMM, YMM, opmask and ZMM state.
    if ((xcr0 & 0xe6) != 0xe6) return CK_ISA_SCALAR;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return CK_ISA_SCALAR;
    const int avx2 = (b >> 5) & 1, f = (b >> 16) & 1, bw = (b >> 30) & 1, vl = (b >> 31) & 1, vnni = (c >> 11) & 1;
    return avx2 && f && bw && vl && vnni ? CK_ISA_AVX512_VNNI : CK_ISA_SCALAR;
}

#else
static int ck_detect(void) { return CK_ISA_SCALAR; }
#endif

int ck_best_isa(void) { return ck_detect(); }

int ck_isa_supported(int isa) { return isa == CK_ISA_SCALAR || (isa == CK_ISA_AVX512_VNNI && ck_detect() == isa); }

void ck_int8_multiply(int isa, int format, const uint8_t *weights, size_t row_bytes, int row_begin,
                      int row_end, const ck_int8_inputs *inputs, float *y, size_t y_stride)
{
#if defined(__x86_64__)
    if (isa == CK_ISA_AVX512_VNNI) {
        ck_multiply_vnni(format, weights, row_bytes, row_begin, row_end, inputs, y, y_stride);
        return;
    }
#endif
    ck_multiply_scalar(format, weights, row_bytes, row_begin, row_end, inputs, y, y_stride);
}
