/// Fast (SIMD) dequantization of whole rows. Bit-exact with `ReferenceKernels.dequantize`: each
/// value is computed with the same fp32 operations in the same order, just several at a time.
///
/// Quantized values are `Float(w) * D + M` per 32-value group and sub-block (`ReferenceKernels.Group`):
/// a product, then a sum, no FMA. F16 / BF16 are widened; F32 copied. Block layouts are GGML's.
enum Dequantize {
    /// Writes `count` values of the row whose first block is at `source`, starting at column
    /// `firstColumn` of that block (0, or a multiple of 32 inside a K-quant super-block); `count`
    /// is a multiple of `type.sliceGranularity`.
    static func row(
        _ type: TensorType, _ source: UnsafeRawPointer, firstColumn: Int = 0, count: Int,
        into destination: UnsafeMutablePointer<Float>
    ) {
        precondition(count % type.sliceGranularity == 0 && firstColumn % type.sliceGranularity == 0,
                     "\(count) values from column \(firstColumn) are not whole \(type) groups")
        switch type {
        case .f32:
            UnsafeMutableRawPointer(destination).copyMemory(from: source + 4 * firstColumn, byteCount: 4 * count)
        case .f16: f16(source + 2 * firstColumn, count: count, into: destination)
        case .bf16: bf16(source + 2 * firstColumn, count: count, into: destination)
        default:
            let perBlock = type.blockSize / 32, first = firstColumn / 32
            for g in 0..<(count / 32) {
                let a = first + g
                group(type, source + (a / perBlock) * type.bytesPerBlock, a % perBlock, into: destination + 32 * g)
            }
        }
    }

    @inline(__always)
    private static func store(_ v: SIMD16<Float>, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD16<Float>.self)
    }

    @inline(__always)
    private static func bytes(_ p: UnsafeRawPointer, _ offset: Int) -> SIMD16<UInt8> {
        p.loadUnaligned(fromByteOffset: offset, as: SIMD16<UInt8>.self)
    }

    /// Signed integers to fp32.
    @inline(__always)
    private static func float(_ v: SIMD16<Int32>) -> SIMD16<Float> { SIMD16<Float>(v) }

    @inline(__always)
    private static func widen(_ v: SIMD16<UInt8>) -> SIMD16<Int32> { SIMD16<Int32>(truncatingIfNeeded: v) }

    /// Bits `b` of each of 16 bytes, as 0 or 1 (per-byte shift of 32-bit lanes: the bytes are widened first).
    @inline(__always)
    private static func bit(_ v: SIMD16<UInt8>, _ b: Int) -> SIMD16<Int32> { (widen(v) &>> Int32(b)) & 1 }

    /// Writes group `g` of the `type` block at `block`: 32 values.
    @inline(__always)
    private static func group(_ type: TensorType, _ block: UnsafeRawPointer, _ g: Int, into out: UnsafeMutablePointer<Float>) {
        switch type {
        case .q8_0:
            let d = HalfPrecision.loadHalf(block)
            store(SIMDSupport.float16(block.loadUnaligned(fromByteOffset: 2, as: SIMD16<Int8>.self)) * d, out)
            store(SIMDSupport.float16(block.loadUnaligned(fromByteOffset: 18, as: SIMD16<Int8>.self)) * d, out + 16)
        case .q4_0, .q4_1:
            let (d, m) = HalfPrecision.loadHalfPair(block)
            let q = bytes(block, type == .q4_0 ? 2 : 4)
            let low = widen(q & 0x0f), high = widen(q &>> 4)
            if type == .q4_0 {
                store(float(low &- 8) * d, out)
                store(float(high &- 8) * d, out + 16)
            } else {
                store(float(low) * d + m, out)
                store(float(high) * d + m, out + 16)
            }
        case .q5_0, .q5_1:
            let (d, m) = HalfPrecision.loadHalfPair(block)
            let bits = type == .q5_0 ? 2 : 4
            let qh = block.loadUnaligned(fromByteOffset: bits, as: UInt32.self).littleEndian
            let lanes = SIMD16<UInt32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
            let h0 = SIMD16<Int32>(truncatingIfNeeded: ((SIMD16(repeating: qh) &>> lanes) & 1) &<< 4)
            let h1 = SIMD16<Int32>(truncatingIfNeeded: ((SIMD16(repeating: qh) &>> (lanes &+ 16)) & 1) &<< 4)
            let q = bytes(block, bits + 4)
            let low = widen(q & 0x0f) | h0, high = widen(q &>> 4) | h1
            if type == .q5_0 {
                store(float(low &- 16) * d, out)
                store(float(high &- 16) * d, out + 16)
            } else {
                store(float(low) * d + m, out)
                store(float(high) * d + m, out + 16)
            }
        case .q2_K:
            let (d, dmin) = HalfPrecision.loadHalfPair(block + 80)
            let shift = 2 * (g % 4), qs = 16 + 32 * (g / 4)
            for k in 0..<2 {
                let sc = Int32(block.load(fromByteOffset: 2 * g + k, as: UInt8.self))
                let w = (widen(bytes(block, qs + 16 * k)) &>> Int32(shift)) & 3
                store(float(w) * (d * Float(sc & 15)) + -(dmin * Float(sc >> 4)), out + 16 * k)
            }
        case .q3_K:
            let d = HalfPrecision.loadHalf(block, 108)
            let shift = 2 * (g % 4), qs = 32 + 32 * (g / 4)
            for k in 0..<2 {
                let s = 2 * g + k
                let scales = { (i: Int) in Int32(block.load(fromByteOffset: 96 + i, as: UInt8.self)) }
                let low = s < 8 ? scales(s) & 15 : scales(s - 8) >> 4
                let high = (scales(8 + s % 4) >> Int32(2 * (s / 4))) & 3
                let w = ((widen(bytes(block, qs + 16 * k)) &>> Int32(shift)) & 3) &- 4 &+ (bit(bytes(block, 16 * k), g) &<< 2)
                store(float(w) * (d * Float((low | high << 4) - 32)), out + 16 * k)
            }
        case .q4_K, .q5_K:
            let (d, dmin) = HalfPrecision.loadHalfPair(block)
            let scales = { (i: Int) in Int32(block.load(fromByteOffset: 4 + i, as: UInt8.self)) }
            let (sc, mn) = g < 4
                ? (scales(g) & 63, scales(g + 4) & 63)
                : ((scales(g + 4) & 15) | (scales(g - 4) >> 6) << 4, (scales(g + 4) >> 4) | (scales(g) >> 6) << 4)
            let D = d * Float(sc), M = -(dmin * Float(mn))
            let qs = (type == .q4_K ? 16 : 48) + 32 * (g / 2), shift = Int32(4 * (g % 2))
            for k in 0..<2 {
                var w = (widen(bytes(block, qs + 16 * k)) &>> shift) & 15
                if type == .q5_K { w |= bit(bytes(block, 16 + 16 * k), g) &<< 4 }
                store(float(w) * D + M, out + 16 * k)
            }
        case .q6_K:
            let d = HalfPrecision.loadHalf(block, 208)
            let h = g / 4, ql = 64 * h + 32 * (g % 2), qh = 128 + 32 * h
            let lowShift = Int32(4 * (g % 4 / 2)), highShift = Int32(2 * (g % 4))
            for k in 0..<2 {
                let sc = Int8(bitPattern: block.load(fromByteOffset: 192 + 2 * g + k, as: UInt8.self))
                let low = (widen(bytes(block, ql + 16 * k)) &>> lowShift) & 15
                let high = (widen(bytes(block, qh + 16 * k)) &>> highShift) & 3
                store(float((low | high &<< 4) &- 32) * (d * Float(sc)), out + 16 * k)
            }
        case .f32, .f16, .bf16:
            preconditionFailure("\(type) has no groups")
        }
    }

    static func f16(_ source: UnsafeRawPointer, count: Int, into destination: UnsafeMutablePointer<Float>) {
        var i = 0
        while i + 8 <= count {
            UnsafeMutableRawPointer(destination + i).storeBytes(
                of: SIMDSupport.loadHalf8(source + 2 * i), as: SIMD8<Float>.self)
            i += 8
        }
        while i < count {
            destination[i] = HalfPrecision.loadHalf(source, 2 * i)
            i += 1
        }
    }

    static func bf16(_ source: UnsafeRawPointer, count: Int, into destination: UnsafeMutablePointer<Float>) {
        var i = 0
        while i + 8 <= count {
            UnsafeMutableRawPointer(destination + i).storeBytes(
                of: SIMDSupport.loadBFloat8(source + 2 * i), as: SIMD8<Float>.self)
            i += 8
        }
        while i < count {
            destination[i] = HalfPrecision.float(fromBFloat16Bits: HalfPrecision.loadUInt16(source, 2 * i))
            i += 1
        }
    }
}
