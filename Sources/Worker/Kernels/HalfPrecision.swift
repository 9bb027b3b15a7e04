#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Conversions between fp32 and the 16-bit weight formats (IEEE binary16 and bfloat16).
///
/// Float16 uses Swift's own type, which lowers to F16C's `vcvtph2ps` / `vcvtps2ph` on x86_64 when
/// the target has F16C. BF16 is the top half of an fp32 bit pattern.
enum HalfPrecision {
    /// fp16 bits -> fp32 (exact).
    @inline(__always)
    static func float(fromHalfBits bits: UInt16) -> Float {
        Float(Float16(bitPattern: bits))
    }

    /// fp32 -> fp16 bits, round to nearest even (as GGML's FP32_TO_FP16).
    @inline(__always)
    static func halfBits(from value: Float) -> UInt16 {
        Float16(value).bitPattern
    }

    /// bf16 bits -> fp32 (exact).
    @inline(__always)
    static func float(fromBFloat16Bits bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    /// fp32 -> bf16 bits, round to nearest even; NaNs stay NaN (quieted), as GGML's converter.
    @inline(__always)
    static func bfloat16Bits(from value: Float) -> UInt16 {
        let bits = value.bitPattern
        if bits & 0x7fff_ffff > 0x7f80_0000 {
            return UInt16(truncatingIfNeeded: bits >> 16) | 0x40
        }
        let rounded = bits &+ (0x7fff &+ ((bits >> 16) & 1))
        return UInt16(truncatingIfNeeded: rounded >> 16)
    }

    /// Reads a little-endian UInt16 at any alignment.
    @inline(__always)
    static func loadUInt16(_ p: UnsafeRawPointer, _ offset: Int = 0) -> UInt16 {
        UInt16(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }

    /// The two fp16 values at `p` and `p + 2` (a block's scale and, for Q4_1, its minimum).
    ///
    /// On x86_64 through one 32-bit `vmovd` and `vcvtph2ps`: converting a lone UInt16 compiles to
    /// `vpinsrw` into whatever register is live, which made every block of a kernel loop wait for
    /// the previous block's accumulator (measured: ~9 cycles per block, the whole Q4_1 kernel).
    /// Reading both halves needs 4 readable bytes at `p`, which every quantized block has.
    @inline(__always)
    static func loadHalfPair(_ p: UnsafeRawPointer) -> (Float, Float) {
        let bits = p.loadUnaligned(as: UInt32.self)
        #if arch(x86_64)
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(Int32(bitPattern: UInt32(littleEndian: bits))))
        return (v[0], v[1])
        #else
        let b = UInt32(littleEndian: bits)
        return (float(fromHalfBits: UInt16(truncatingIfNeeded: b)), float(fromHalfBits: UInt16(truncatingIfNeeded: b >> 16)))
        #endif
    }

    /// Reads an fp16 scale stored at `p + offset`.
    @inline(__always)
    static func loadHalf(_ p: UnsafeRawPointer, _ offset: Int = 0) -> Float {
        float(fromHalfBits: loadUInt16(p, offset))
    }
}
