// The weight formats' traits and file layouts, the input quantization, the packing into tiles and
// the portable definition of the integer-input products (`ck_multiply`), which the AVX-512 VNNI
// and AVX2 kernels (vnni.c, avx2.c) reproduce bit for bit.
#include "formats.h"

#include <math.h>

// MARK: - Traits

int ck_format_block_values(int format) { return ck_traits(format).block_values; }

int ck_format_block_bytes(int format) { return ck_traits(format).block_bytes; }

float ck_half(uint16_t h)
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

// MARK: - File layouts (GGML's ggml-common.h)

/// A 32-value block's value c: the low nibble of byte c (c < 16) or the high nibble of byte c - 16.
static inline uint8_t ck_nibble(const uint8_t *qs, int c) { return c < 16 ? qs[c] & 15 : qs[c - 16] >> 4; }

/// Q4_K/Q5_K's 6-bit scale and minimum of group j (GGML's get_scale_min_k4).
static void ck_scale_min_k4(const uint8_t *q, int j, int *sc, int *mn)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 15) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

/// Q3_K's 6-bit scale k, as stored (0...63; the scale is that minus 32).
static int ck_scale_q3(const uint8_t *scales, int k)
{
    const int low = k < 8 ? scales[k] & 15 : scales[k - 8] >> 4;
    return low | (((scales[8 + k % 4] >> (2 * (k / 4))) & 3) << 4);
}

void ck_group(int format, const uint8_t *b, int g, uint8_t u[32], int sc[2], int mn[2], uint16_t *d, uint16_t *m)
{
    sc[0] = sc[1] = 1;
    mn[0] = mn[1] = 0;
    *m = 0;
    switch (format) {
    case CK_FORMAT_Q4_0:
    case CK_FORMAT_Q4_1: {
        const int qs = format == CK_FORMAT_Q4_0 ? 2 : 4;
        for (int c = 0; c < 32; c++) u[c] = ck_nibble(b + qs, c);
        *d = ck_load_u16(b);
        if (format == CK_FORMAT_Q4_1) *m = ck_load_u16(b + 2);
        break;
    }
    case CK_FORMAT_Q5_0:
    case CK_FORMAT_Q5_1: {
        const int qh = format == CK_FORMAT_Q5_0 ? 2 : 4;
        const uint32_t high = ck_load_u32(b + qh);
        for (int c = 0; c < 32; c++) u[c] = (uint8_t)(ck_nibble(b + qh + 4, c) | ((high >> c) & 1) << 4);
        *d = ck_load_u16(b);
        if (format == CK_FORMAT_Q5_1) *m = ck_load_u16(b + 2);
        break;
    }
    case CK_FORMAT_Q8_0:
        for (int c = 0; c < 32; c++) u[c] = (uint8_t)(b[2 + c] ^ 0x80);
        *d = ck_load_u16(b);
        break;
    case CK_FORMAT_Q2_K:
        // scales[16] at 0, qs[64] at 16, d at 80, dmin at 82; value i: bits 2 (i % 128 / 32) of
        // qs[32 (i / 128) + i % 32]. Group g: bytes 32 (g / 4) ..., shift 2 (g % 4).
        for (int c = 0; c < 32; c++) u[c] = (b[16 + 32 * (g / 4) + c] >> (2 * (g % 4))) & 3;
        for (int h = 0; h < 2; h++) {
            sc[h] = b[2 * g + h] & 15;
            mn[h] = b[2 * g + h] >> 4;
        }
        *d = ck_load_u16(b + 80);
        *m = ck_load_u16(b + 82);
        break;
    case CK_FORMAT_Q3_K:
        // hmask[32] at 0, qs[64] at 32, scales[12] at 96, d at 108; u = 2-bit part + 4 * high bit
        // (w = u - 4: minus 4 unless the high bit is set).
        for (int c = 0; c < 32; c++)
            u[c] = (uint8_t)(((b[32 + 32 * (g / 4) + c] >> (2 * (g % 4))) & 3) | (((b[c] >> g) & 1) << 2));
        for (int h = 0; h < 2; h++) sc[h] = ck_scale_q3(b + 96, 2 * g + h) - 32;
        *d = ck_load_u16(b + 108);
        break;
    case CK_FORMAT_Q4_K:
    case CK_FORMAT_Q5_K: {
        // d, dmin, scales[12] at 4, [Q5_K: qh[32] at 16], qs[128]; value i: nibble i % 64 / 32 of
        // qs[32 (i / 64) + i % 32], Q5_K bit 4 from bit i / 32 of qh[i % 32].
        const int qs = format == CK_FORMAT_Q4_K ? 16 : 48;
        for (int c = 0; c < 32; c++) {
            u[c] = (b[qs + 32 * (g / 2) + c] >> (4 * (g % 2))) & 15;
            if (format == CK_FORMAT_Q5_K) u[c] |= (uint8_t)(((b[16 + c] >> g) & 1) << 4);
        }
        ck_scale_min_k4(b + 4, g, &sc[0], &mn[0]);
        *d = ck_load_u16(b);
        *m = ck_load_u16(b + 2);
        break;
    }
    default:  // CK_FORMAT_Q6_K
        // ql[128] at 0, qh[64] at 128, scales[16] (int8) at 192, d at 208; value i (h = i / 128):
        // nibble i % 128 / 64 of ql[64h + i % 64], bits 2 (i % 128 / 32) of qh[32h + i % 32] above it.
        for (int c = 0; c < 32; c++) {
            const int i = 32 * g + c, h = i / 128;
            const int low = (b[64 * h + i % 64] >> (4 * (i % 128 / 64))) & 15;
            const int high = (b[128 + 32 * h + i % 32] >> (2 * (i % 128 / 32))) & 3;
            u[c] = (uint8_t)(low | high << 4);
        }
        for (int h = 0; h < 2; h++) sc[h] = (int8_t)b[192 + 2 * g + h];
        *d = ck_load_u16(b + 208);
        break;
    }
}

// MARK: - Quantization of the inputs

/// A block's scale d and the factor q = x * inverse, from whether its values are all finite and
/// their largest magnitude; returns whether the values are usable (else they quantize to 0: d is
/// NaN for a non-finite block, 0 when the inverse overflows).
int ck_block_scale(int bits, int finite, float largest, float *d, float *inverse)
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

/// One block at `bits`: returns d and writes q.
static float ck_quantize_block(int bits, const float *x, int32_t *q)
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
    for (int j = 0; j < 32; j++) q[j] = usable ? (int32_t)nearbyintf(x[j] * inverse) : 0;
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

/// Where `ck_prepare_layout` puts its tables in its memory: six block-major tables of `table`
/// bytes (scales, sums, first-half sums, scaled sums, scaled first and second halves), then the
/// row-major values.
typedef struct {
    size_t stride, table, values, total;
} ck_layout;

enum { CK_TABLES = 6 };

static ck_layout ck_layout_of(int bits, int n, int columns)
{
    const size_t stride = ((size_t)n + 7) / 8 * 8;
    const size_t table = ck_round64(4 * ((size_t)columns / 32) * stride), values = CK_TABLES * table;
    return (ck_layout){
        .stride = stride, .table = table, .values = values,
        .total = values + ck_round64((size_t)n * columns * (bits / 8)),
    };
}

size_t ck_prepare_bytes(int bits, int n, int columns) { return ck_layout_of(bits, n, columns).total; }

#if defined(__x86_64__)
float ck_vnni_quantize_block(int bits, const float *x, int8_t *out, int32_t *sum, int32_t *half);
#endif

void ck_prepare_layout(int bits, int n, int columns, void *memory, ck_inputs *out)
{
    const ck_layout layout = ck_layout_of(bits, n, columns);
    uint8_t *base = memory;
    memset(base, 0, CK_TABLES * layout.table);
    *out = (ck_inputs){
        .n = n, .columns = columns, .bits = bits, .stride = layout.stride, .values = (int8_t *)(base + layout.values),
        .scales = (float *)base, .sums = (int32_t *)(base + layout.table),
        .half_sums = (int32_t *)(base + 2 * layout.table), .scaled_sums = (float *)(base + 3 * layout.table),
        .scaled_halves = {(float *)(base + 4 * layout.table), (float *)(base + 5 * layout.table)},
    };
}

void ck_prepare_rows(int isa, const float *x, size_t x_stride, int row_begin, int row_end, const ck_inputs *inputs)
{
    const int bits = inputs->bits, blocks = inputs->columns / 32, block_bytes = 4 * bits;
    const size_t stride = inputs->stride;
    // The tables live in the caller's memory (`ck_prepare_layout`); the struct only reads them.
    float *scales = (float *)inputs->scales, *scaled = (float *)inputs->scaled_sums;
    float *low = (float *)inputs->scaled_halves[0], *high = (float *)inputs->scaled_halves[1];
    int32_t *sums = (int32_t *)inputs->sums, *halves = (int32_t *)inputs->half_sums;
    int8_t *values = (int8_t *)inputs->values;
    for (int i = row_begin; i < row_end; i++)
        for (int b = 0; b < blocks; b++) {
            int32_t sum = 0, half = 0;
            const float *block = x + (size_t)i * x_stride + 32 * b;
            int8_t *q = values + ((size_t)i * blocks + b) * block_bytes;
            float d;
#if defined(__x86_64__)
            if (isa == CK_ISA_AVX512_VNNI) {
                d = ck_vnni_quantize_block(bits, block, q, &sum, &half);
            } else
#endif
            {
                int32_t integers[32];
                d = ck_quantize_block(bits, block, integers);
                ck_store_block(bits, integers, q);
                for (int j = 0; j < 32; j++) {
                    sum += integers[j];
                    if (j < 16) half += integers[j];
                }
            }
            const size_t k = b * stride + i;
            scales[k] = d;
            sums[k] = sum;
            halves[k] = half;
            scaled[k] = d * (float)sum;
            low[k] = d * (float)half;
            high[k] = d * (float)(sum - half);
        }
}

void ck_prepare(int isa, int bits, const float *x, size_t x_stride, int n, int columns, void *memory, ck_inputs *out)
{
    ck_prepare_layout(bits, n, columns, memory, out);
    ck_prepare_rows(isa, x, x_stride, 0, n, out);
}

// MARK: - Portable variant (the definition)

void ck_multiply(int format, const uint8_t *weights, size_t row_bytes, int first_group, int row_begin, int row_end,
                 const ck_inputs *in, float *y, size_t y_stride)
{
    const ck_format_traits traits = ck_traits(format), *t = &traits;
    const int groups = in->columns / 32, per_block = t->block_values / 32, wide = in->bits == 16;
    const int halves = 32 / t->sub;
    for (int r = row_begin; r < row_end; r++)
        for (int i = 0; i < in->n; i++) {
            float acc = 0.0f;
            for (int g = 0; g < groups; g++) {
                const int a = first_group + g;
                const uint8_t *block = weights + (size_t)r * row_bytes + (size_t)(a / per_block) * t->block_bytes;
                uint8_t u[32];
                int sc[2], mn[2];
                uint16_t dh, mh;
                ck_group(format, block, a % per_block, u, sc, mn, &dh, &mh);
                const int8_t *x = in->values + ((size_t)i * groups + g) * 4 * in->bits;
                const size_t k = (size_t)g * in->stride + i;
                const float s = in->scales[k], d = ck_half(dh), m = ck_half(mh);
                for (int h = 0; h < halves; h++) {
                    const int32_t part = halves == 1 ? in->sums[k] : (h == 0 ? in->half_sums[k] : in->sums[k] - in->half_sums[k]);
                    int32_t total = t->offset * part;
                    for (int c = h * t->sub; c < (h + 1) * t->sub; c++) {
                        const int32_t q = wide ? 256 * (int32_t)x[c] + (int32_t)x[32 + c] : (int32_t)x[c];
                        total += (int32_t)u[c] * q;
                    }
                    const float scale = t->block_values == 32 ? d : d * (float)sc[h];
                    acc = fmaf((float)total * s, scale, acc);
                    if (t->min_kind != 0) {
                        const float minimum = t->min_kind == 1 ? m : -(m * (float)mn[h]);
                        const float factor = halves == 1 ? in->scaled_sums[k] : in->scaled_halves[h][k];
                        acc = fmaf(minimum, factor, acc);
                    }
                }
            }
            y[(size_t)i * y_stride + r] = acc;
        }
}

// MARK: - Packing

size_t ck_packed_bytes(int format, int rows, int first_group, int groups)
{
    const ck_format_traits traits = ck_traits(format), *t = &traits;
    const int per_block = t->block_values / 32;
    const int blocks = (first_group + groups + per_block - 1) / per_block;
    return (size_t)(rows + 15) / 16 * ((size_t)blocks * t->header_bytes + (size_t)groups * t->group_bytes);
}

/// Writes one row's (lane's) part of a tile block header: d, m, and the sub-scales.
static void ck_pack_header(int format, const ck_format_traits *t, const uint8_t *block, int lane, uint8_t *p)
{
    uint8_t u[32];
    int sc[2], mn[2];
    uint16_t d, m;
    ck_group(format, block, 0, u, sc, mn, &d, &m);
    memcpy(p + 2 * lane, &d, 2);
    if (t->min_kind != 0) memcpy(p + 32 + 2 * lane, &m, 2);
    uint8_t *scales = p + (t->min_kind != 0 ? 64 : 32);
    uint32_t w[3] = {0, 0, 0};
    switch (format) {
    case CK_FORMAT_Q4_K:
    case CK_FORMAT_Q5_K:
        for (int j = 0; j < 8; j++) {
            int s, n;
            ck_scale_min_k4(block + 4, j, &s, &n);
            w[0] |= (uint32_t)(s & 15) << (4 * j);
            w[1] |= (uint32_t)(n & 15) << (4 * j);
            w[2] |= (uint32_t)(s >> 4) << (2 * j) | (uint32_t)(n >> 4) << (16 + 2 * j);
        }
        break;
    case CK_FORMAT_Q3_K:
        for (int k = 0; k < 16; k++) {
            const int s = ck_scale_q3(block + 96, k);
            w[k / 8] |= (uint32_t)(s & 15) << (4 * (k % 8));
            w[2] |= (uint32_t)(s >> 4) << (2 * k);
        }
        break;
    case CK_FORMAT_Q2_K:
    case CK_FORMAT_Q6_K: {
        const uint8_t *bytes = block + (format == CK_FORMAT_Q2_K ? 0 : 192);
        for (int v = 0; v < 4; v++) memcpy(scales + 64 * v + 4 * lane, bytes + 4 * v, 4);
        return;
    }
    default:
        return;
    }
    for (int v = 0; v < 3; v++) memcpy(scales + 64 * v + 4 * lane, &w[v], 4);
}

/// Writes one row's (lane's) integers of group g into a tile group's vectors.
static void ck_pack_group(int format, const ck_format_traits *t, const uint8_t *block, int g, int lane, uint8_t *p)
{
    uint8_t u[32];
    int sc[2], mn[2];
    uint16_t d, m;
    ck_group(format, block, g, u, sc, mn, &d, &m);
    const int low_mask = (1 << t->low_bits) - 1;
    uint8_t *high = p + 64 * t->low_vectors;
    for (int c = 0; c < 8; c++)
        for (int j = 0; j < 4; j++) {
            const int v = u[4 * c + j], at = 4 * lane + j;
            const int low = v & low_mask, top = v >> t->low_bits;
            if (t->low_bits == 8) {
                p[64 * c + at] = (uint8_t)low;
            } else if (t->low_bits == 4) {
                p[64 * (c % 4) + at] |= (uint8_t)(low << (c < 4 ? 0 : 4));
            } else {
                p[64 * (c % 2) + at] |= (uint8_t)(low << (2 * (c / 2)));
            }
            if (t->high_bits == 1) {
                high[at] |= (uint8_t)(top << c);
            } else if (t->high_bits == 2) {
                high[64 * (c % 2) + at] |= (uint8_t)(top << (2 * (c / 2)));
            }
        }
}

void ck_pack(int format, const uint8_t *weights, size_t row_bytes, int rows, int first_group, int groups, uint8_t *packed)
{
    const ck_format_traits traits = ck_traits(format), *t = &traits;
    const int per_block = t->block_values / 32, tiles = (rows + 15) / 16;
    const size_t tile_bytes = ck_packed_bytes(format, 16, first_group, groups);
    memset(packed, 0, (size_t)tiles * tile_bytes);
    for (int tile = 0; tile < tiles; tile++) {
        uint8_t *p = packed + (size_t)tile * tile_bytes;
        for (int g = 0; g < groups;) {
            const int a = first_group + g, in_block = per_block - a % per_block;
            const int count = in_block < groups - g ? in_block : groups - g;
            for (int lane = 0; lane < 16 && 16 * tile + lane < rows; lane++) {
                const uint8_t *block = weights + (size_t)(16 * tile + lane) * row_bytes + (size_t)(a / per_block) * t->block_bytes;
                ck_pack_header(format, t, block, lane, p);
                for (int j = 0; j < count; j++)
                    ck_pack_group(format, t, block, a % per_block + j, lane, p + t->header_bytes + (size_t)j * t->group_bytes);
            }
            p += t->header_bytes + (size_t)count * t->group_bytes;
            g += count;
        }
    }
}

// MARK: - Variants

#if defined(__x86_64__)
#include <cpuid.h>

void ck_multiply_vnni(int format, const uint8_t *packed, int first_group, int row_begin, int row_end,
                      const ck_inputs *in, float *y, size_t y_stride);

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

void ck_multiply_packed(int format, const uint8_t *packed, int first_group, int row_begin, int row_end,
                        const ck_inputs *inputs, float *y, size_t y_stride)
{
#if defined(__x86_64__)
    ck_multiply_vnni(format, packed, first_group, row_begin, row_end, inputs, y, y_stride);
#endif
}
