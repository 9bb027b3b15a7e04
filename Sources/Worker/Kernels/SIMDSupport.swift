#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Small SIMD helpers shared by the kernels. Every reduction here has one fixed order, so a value
/// computed through them is the same wherever and however often it is computed.
enum SIMDSupport {
    /// Sum of 8 lanes in a fixed tree order: (lanes 0-3 + lanes 4-7), then pairs, then the last two.
    @inline(__always)
    static func sum(_ v: SIMD8<Float>) -> Float {
        let four = v.lowHalf + v.highHalf
        let two = four.lowHalf + four.highHalf
        return two[0] + two[1]
    }

    /// Eight fp32 values from memory (any alignment).
    @inline(__always)
    static func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
    }

    /// Eight fp16 values at `p` (any alignment) widened to fp32.
    @inline(__always)
    static func loadHalf8(_ p: UnsafeRawPointer) -> SIMD8<Float> {
        #if arch(x86_64)
        return _mm256_cvtph_ps(p.loadUnaligned(as: SIMD2<Int64>.self))
        #else
        let h = unsafeBitCast(p.loadUnaligned(as: SIMD8<UInt16>.self), to: SIMD8<Float16>.self)
        return SIMD8<Float>(
            Float(h[0]), Float(h[1]), Float(h[2]), Float(h[3]), Float(h[4]), Float(h[5]), Float(h[6]), Float(h[7]))
        #endif
    }

    /// Eight bf16 values at `p` (any alignment) widened to fp32.
    @inline(__always)
    static func loadBFloat8(_ p: UnsafeRawPointer) -> SIMD8<Float> {
        let bits = SIMD8<UInt32>(truncatingIfNeeded: p.loadUnaligned(as: SIMD8<UInt16>.self)) &<< 16
        return unsafeBitCast(bits, to: SIMD8<Float>.self)
    }

    /// 16 bytes widened to 16 fp32 values (0...255).
    @inline(__always)
    static func float16(_ bytes: SIMD16<UInt8>) -> SIMD16<Float> {
        SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: bytes))
    }

    /// 16 signed bytes widened to 16 fp32 values (-128...127).
    @inline(__always)
    static func float16(_ bytes: SIMD16<Int8>) -> SIMD16<Float> {
        SIMD16<Float>(SIMD16<Int32>(truncatingIfNeeded: bytes))
    }
}
