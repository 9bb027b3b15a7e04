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

/// A block's scale d and the factor q = x * inverse, from whether its values are all finite and
/// their largest magnitude; returns whether the values are usable (else they quantize to 0: d is
/// NaN for a non-finite block, 0 when the inverse overflows).
static inline int ck_block_scale(int bits, int finite, float largest, float *d, float *inverse)
{
    if (bits == 8) {
        *d = finite ? largest / 127.0f : NAN;
        *inverse = finite && *d != 0.0f ? 1.0f / *d : 0.0f;
    } else {
        *d = finite ? largest / (float)CK_INT16_LEVELS : NAN;
        *inverse = finite && largest > 0.0f ? (float)CK_INT16_LEVELS / largest : 0.0f;
    }
    const int usable = finite && isfinite(*inverse);
    if (finite && !usable) *d = 0.0f;
    return usable;
}

/// One block at `bits`: returns d and writes q and the sum of q.
static float ck_quantize_block(int bits, const float *x, int32_t *q, int32_t *sum)
{
    float largest = 0.0f;
    int finite = 1;
    for (int j = 0; j < 32; j++) {
        finite &= isfinite(x[j]) != 0;
        const float a = fabsf(x[j]);
        largest = a > largest ? a : largest;
    }
    float d, inverse;
    const int usable = ck_block_scale(bits, finite, largest, &d, &inverse);
    int32_t total = 0;
    for (int j = 0; j < 32; j++) {
        q[j] = usable ? (int32_t)nearbyintf(x[j] * inverse) : 0;
        total += q[j];
    }
    *sum = total;
    return d;
}

/// Stores a block's q at `bits` (16: the high bytes, then the low bytes).
static void ck_store_block(int bits, const int32_t *q, int8_t *out)
{
    for (int j = 0; j < 32; j++) {
        if (bits == 8) {
            out[j] = (int8_t)q[j];
        } else {
            out[j] = (int8_t)((q[j] + 128) >> 8);
            out[32 + j] = (int8_t)q[j];
        }
    }
}

static size_t ck_round64(size_t bytes) { return (bytes + 63) / 64 * 64; }

/// Where `ck_prepare` puts its tables in its memory: block-major scales, starts and scaled sums
/// (`table` bytes each), then the row-major values.
typedef struct {
    size_t stride, table, values, total;
} ck_layout;

static ck_layout ck_layout_of(int bits, int n, int columns)
{
    const size_t stride = ((size_t)n + 7) / 8 * 8;
    const size_t table = ck_round64(4 * ((size_t)columns / 32) * stride), values = 3 * table;
    return (ck_layout){
        .stride = stride, .table = table, .values = values,
        .total = values + ck_round64((size_t)n * columns * (bits / 8)),
    };
}

size_t ck_prepare_bytes(int bits, int n, int columns) { return ck_layout_of(bits, n, columns).total; }

#if defined(__x86_64__)
static float ck_vnni_quantize_block(int bits, const float *x, int8_t *out, int32_t *sum);
#endif

void ck_prepare_layout(int bits, int n, int columns, void *memory, ck_inputs *out)
{
    const ck_layout layout = ck_layout_of(bits, n, columns);
    uint8_t *base = memory;
    memset(base, 0, 3 * layout.table);
    *out = (ck_inputs){
        .n = n, .columns = columns, .bits = bits, .stride = layout.stride, .values = (int8_t *)(base + layout.values),
        .scales = (float *)base, .starts = (int32_t *)(base + layout.table),
        .scaled_sums = (float *)(base + 2 * layout.table),
    };
}

void ck_prepare_rows(int isa, int format, const float *x, size_t x_stride, int row_begin, int row_end,
                     const ck_inputs *inputs)
{
    const int bits = inputs->bits, blocks = inputs->columns / 32, block_bytes = 4 * bits;
    const size_t stride = inputs->stride;
    // The tables live in the caller's memory (`ck_prepare_layout`); the struct only reads them.
    float *scales = (float *)inputs->scales, *scaled = (float *)inputs->scaled_sums;
    int32_t *starts = (int32_t *)inputs->starts;
    int8_t *values = (int8_t *)inputs->values;
    const int offset = ck_offset(format);
    for (int i = row_begin; i < row_end; i++)
        for (int b = 0; b < blocks; b++) {
            int32_t sum;
            const float *block = x + (size_t)i * x_stride + 32 * b;
            int8_t *q = values + ((size_t)i * blocks + b) * block_bytes;
            float d;
#if defined(__x86_64__)
            if (isa == CK_ISA_AVX512_VNNI) {
                d = ck_vnni_quantize_block(bits, block, q, &sum);
            } else
#endif
            {
                int32_t integers[32];
                d = ck_quantize_block(bits, block, integers, &sum);
                ck_store_block(bits, integers, q);
            }
            scales[b * stride + i] = d;
            starts[b * stride + i] = offset * sum;
            scaled[b * stride + i] = d * (float)sum;
        }
}

void ck_prepare(int isa, int bits, int format, const float *x, size_t x_stride, int n, int columns, void *memory,
                ck_inputs *out)
{
    ck_prepare_layout(bits, n, columns, memory, out);
    ck_prepare_rows(isa, format, x, x_stride, 0, n, out);
}

// MARK: - Portable variant (the definition)

static void ck_multiply_scalar(int format, const uint8_t *weights, size_t row_bytes, int row_begin, int row_end,
                               const ck_inputs *in, float *y, size_t y_stride)
{
    const int blocks = in->columns / 32, block_bytes = ck_block_bytes(format), wide = in->bits == 16;
    for (int r = row_begin; r < row_end; r++)
        for (int i = 0; i < in->n; i++) {
            float acc = 0.0f;
            for (int b = 0; b < blocks; b++) {
                const uint8_t *block = weights + (size_t)r * row_bytes + (size_t)b * block_bytes;
                const int8_t *x = in->values + ((size_t)i * blocks + b) * 4 * in->bits;
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
                    const int32_t q = wide ? 256 * (int32_t)x[c] + (int32_t)x[32 + c] : (int32_t)x[c];
                    t += u * q;
                }
                const float f = (float)t * in->scales[k];
                acc = fmaf(f, ck_half(ck_load_u16(block)), acc);
                if (format == CK_FORMAT_Q4_1) acc = fmaf(ck_half(ck_load_u16(block + 2)), in->scaled_sums[k], acc);
            }
            y[(size_t)i * y_stride + r] = acc;
        }
}

// MARK: - Packed weights (the AVX-512 VNNI variant's layout)

static inline int ck_tile_block_bytes(int format) { return 16 * ck_block_bytes(format); }

/// Within a tile block: the integer vectors (Q4: 4 x 64 bytes, Q8_0: 8 x 64), then 16 halves d,
/// then (Q4_1) 16 halves m.
static inline int ck_tile_scales_offset(int format) { return format == CK_FORMAT_Q8_0 ? 512 : 256; }

size_t ck_packed_bytes(int format, int rows, int columns)
{
    return (size_t)(rows + 15) / 16 * (size_t)(columns / 32) * ck_tile_block_bytes(format);
}

void ck_pack(int format, const uint8_t *weights, size_t row_bytes, int rows, int columns, uint8_t *packed)
{
    const int blocks = columns / 32, block_bytes = ck_block_bytes(format), tile_block = ck_tile_block_bytes(format);
    const int scales_at = ck_tile_scales_offset(format), tiles = (rows + 15) / 16;
    memset(packed, 0, ck_packed_bytes(format, rows, columns));
    for (int tile = 0; tile < tiles; tile++)
        for (int b = 0; b < blocks; b++) {
            uint8_t *p = packed + ((size_t)tile * blocks + b) * tile_block;
            for (int lane = 0; lane < 16 && 16 * tile + lane < rows; lane++) {
                const uint8_t *block = weights + (size_t)(16 * tile + lane) * row_bytes + (size_t)b * block_bytes;
                memcpy(p + scales_at + 2 * lane, block, 2);
                if (format == CK_FORMAT_Q8_0) {
                    for (int c = 0; c < 8; c++)
                        for (int j = 0; j < 4; j++) p[64 * c + 4 * lane + j] = (uint8_t)(block[2 + 4 * c + j] ^ 0x80);
                } else {
                    const int qs = format == CK_FORMAT_Q4_1 ? 4 : 2;
                    for (int c = 0; c < 4; c++) memcpy(p + 64 * c + 4 * lane, block + qs + 4 * c, 4);
                    if (format == CK_FORMAT_Q4_1) memcpy(p + scales_at + 32 + 2 * lane, block + 2, 2);
                }
            }
        }
}

// MARK: - AVX-512 VNNI variant

#if defined(__x86_64__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"))), \
                             apply_to = function)

#define CK_INLINE static inline __attribute__((always_inline))

/// `ck_quantize_block` and `ck_store_block` in vectors, with the same results: the largest
/// magnitude is exact in any order, each product x * inverse is the same fp32 operation, and
/// `vcvtps2dq` rounds half to even as `nearbyintf` does in the default rounding mode.
static float ck_vnni_quantize_block(int bits, const float *x, int8_t *out, int32_t *sum)
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
        const __m512i half = _mm512_set1_epi32(128);
        _mm_storeu_si128((__m128i *)out, _mm512_cvtepi32_epi8(_mm512_srai_epi32(_mm512_add_epi32(qa, half), 8)));
        _mm_storeu_si128((__m128i *)(out + 16), _mm512_cvtepi32_epi8(_mm512_srai_epi32(_mm512_add_epi32(qb, half), 8)));
        _mm_storeu_si128((__m128i *)(out + 32), _mm512_cvtepi32_epi8(qa));
        _mm_storeu_si128((__m128i *)(out + 48), _mm512_cvtepi32_epi8(qb));
    }
    *sum = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
    return d;
}

/// How many packed tile blocks ahead the kernel prefetches.
#define CK_PREFETCH_BLOCKS 4

CK_INLINE __m512i ck_vnni_broadcast4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/// One packed tile (16 weight rows: the lanes) times the G inputs i0 ..< i0 + G (G <= 8, a constant
/// after inlining, so the accumulators stay in registers) of `bits` (WIDE: 16). Each tile block is
/// decoded once into 8 vectors of 4-column chunks; each input's chunk is broadcast against them
/// (`vpdpbusd`; 16-bit inputs: the high bytes' sum shifted by 8 plus the low bytes'), so every lane
/// gets its row's exact block sum without a reduction.
CK_INLINE void ck_vnni_tile(const int G, const int format, const int wide, const uint8_t *tile, int blocks,
                            const ck_inputs *in, int i0, float *y, size_t y_stride, __mmask16 store)
{
    const int tile_block = ck_tile_block_bytes(format), scales_at = ck_tile_scales_offset(format);
    const size_t block_bytes = wide ? 64 : 32, row_bytes = (size_t)blocks * block_bytes;
    __m512 acc[8];
    for (int i = 0; i < G; i++) acc[i] = _mm512_setzero_ps();
    for (int b = 0; b < blocks; b++) {
        const uint8_t *p = tile + (size_t)b * tile_block;
        // Past the matrix's end is harmless: prefetches do not fault.
        for (int line = 0; line < tile_block; line += 64) ck_prefetch(p + CK_PREFETCH_BLOCKS * tile_block + line);
        __m512i w[8];
        if (format == CK_FORMAT_Q8_0) {
            for (int c = 0; c < 8; c++) w[c] = _mm512_loadu_si512(p + 64 * c);
        } else {
            const __m512i low = _mm512_set1_epi8(0x0f);
            for (int c = 0; c < 4; c++) {
                const __m512i v = _mm512_loadu_si512(p + 64 * c);
                w[c] = _mm512_and_si512(v, low);
                w[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
            }
        }
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + scales_at)));
        const __m512 mw = format == CK_FORMAT_Q4_1 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(p + scales_at + 32)))
                                                   : _mm512_setzero_ps();
        for (int i = 0; i < G; i++) {
            const size_t k = (size_t)b * in->stride + i0 + i;
            const int8_t *x = in->values + (size_t)(i0 + i) * row_bytes + (size_t)b * block_bytes;
            // Exact integers: the order of the chunk products does not matter.
            __m512i t = _mm512_set1_epi32(in->starts[k]);
            if (wide) {
                // Two independent chains: the high bytes' and the low bytes'.
                __m512i h = _mm512_setzero_si512();
                for (int c = 0; c < 8; c++) {
                    h = _mm512_dpbusd_epi32(h, w[c], ck_vnni_broadcast4(x + 4 * c));
                    t = _mm512_dpbusd_epi32(t, w[c], ck_vnni_broadcast4(x + 32 + 4 * c));
                }
                t = _mm512_add_epi32(t, _mm512_slli_epi32(h, 8));
            } else {
                for (int c = 0; c < 8; c++) t = _mm512_dpbusd_epi32(t, w[c], ck_vnni_broadcast4(x + 4 * c));
            }
            const __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(t), _mm512_set1_ps(in->scales[k]));
            acc[i] = _mm512_fmadd_ps(f, dw, acc[i]);
            if (format == CK_FORMAT_Q4_1) acc[i] = _mm512_fmadd_ps(mw, _mm512_set1_ps(in->scaled_sums[k]), acc[i]);
        }
    }
    for (int i = 0; i < G; i++) _mm512_mask_storeu_ps(y + (size_t)(i0 + i) * y_stride, store, acc[i]);
}

CK_INLINE void ck_vnni_rows(const int format, const int wide, const uint8_t *packed, int row_begin, int row_end,
                            const ck_inputs *in, float *y, size_t y_stride)
{
    const int blocks = in->columns / 32;
    const size_t tile_bytes = (size_t)blocks * ck_tile_block_bytes(format);
    for (int r = row_begin; r < row_end; r += 16) {
        const uint8_t *tile = packed + (size_t)(r / 16) * tile_bytes;
        const __mmask16 store = row_end - r >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (row_end - r)) - 1);
        int i = 0;
        for (; i + 8 <= in->n; i += 8) ck_vnni_tile(8, format, wide, tile, blocks, in, i, y + r, y_stride, store);
        switch (in->n - i) {
        case 1: ck_vnni_tile(1, format, wide, tile, blocks, in, i, y + r, y_stride, store); break;
        case 2: ck_vnni_tile(2, format, wide, tile, blocks, in, i, y + r, y_stride, store); break;
        case 3: ck_vnni_tile(3, format, wide, tile, blocks, in, i, y + r, y_stride, store); break;
        case 4: ck_vnni_tile(4, format, wide, tile, blocks, in, i, y + r, y_stride, store); break;
        case 5: ck_vnni_tile(5, format, wide, tile, blocks, in, i, y + r, y_stride, store); break;
        case 6: ck_vnni_tile(6, format, wide, tile, blocks, in, i, y + r, y_stride, store); break;
        case 7: ck_vnni_tile(7, format, wide, tile, blocks, in, i, y + r, y_stride, store); break;
        default: break;
        }
    }
}

static void ck_multiply_vnni(int format, const uint8_t *packed, int row_begin, int row_end, const ck_inputs *in,
                             float *y, size_t y_stride)
{
    const int wide = in->bits == 16;
    switch (format) {
    case CK_FORMAT_Q4_0:
        if (wide) ck_vnni_rows(CK_FORMAT_Q4_0, 1, packed, row_begin, row_end, in, y, y_stride);
        else ck_vnni_rows(CK_FORMAT_Q4_0, 0, packed, row_begin, row_end, in, y, y_stride);
        break;
    case CK_FORMAT_Q4_1:
        if (wide) ck_vnni_rows(CK_FORMAT_Q4_1, 1, packed, row_begin, row_end, in, y, y_stride);
        else ck_vnni_rows(CK_FORMAT_Q4_1, 0, packed, row_begin, row_end, in, y, y_stride);
        break;
    default:
        if (wide) ck_vnni_rows(CK_FORMAT_Q8_0, 1, packed, row_begin, row_end, in, y, y_stride);
        else ck_vnni_rows(CK_FORMAT_Q8_0, 0, packed, row_begin, row_end, in, y, y_stride);
        break;
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

void ck_multiply(int format, const uint8_t *weights, size_t row_bytes, int row_begin, int row_end,
                 const ck_inputs *inputs, float *y, size_t y_stride)
{
    ck_multiply_scalar(format, weights, row_bytes, row_begin, row_end, inputs, y, y_stride);
}

void ck_multiply_packed(int format, const uint8_t *packed, int row_begin, int row_end, const ck_inputs *inputs,
                        float *y, size_t y_stride)
{
#if defined(__x86_64__)
    ck_multiply_vnni(format, packed, row_begin, row_end, inputs, y, y_stride);
#endif
}
