/// Fast (SIMD) dequantization of whole rows. Bit-exact with `ReferenceKernels.dequantize`: each
/// value is computed with the same fp32 operations in the same order, just several at a time.
///
/// Values: Q8_0 `q * d`; Q4_0 `(q - 8) * d`; Q4_1 `q * d + m` (a product, then a sum: no FMA);
/// F16 / BF16 widened; F32 copied. Block layouts are GGML's (see `TensorType`).
enum Dequantize {
    /// Writes `count` values (a multiple of `type.blockSize`) of the row at `source`.
    static func row(
        _ type: TensorType, _ source: UnsafeRawPointer, count: Int, into destination: UnsafeMutablePointer<Float>
    ) {
        precondition(count % type.blockSize == 0, "\(count) values are not whole \(type) blocks")
        switch type {
        case .f32:
            UnsafeMutableRawPointer(destination).copyMemory(from: source, byteCount: 4 * count)
        case .f16: f16(source, count: count, into: destination)
        case .bf16: bf16(source, count: count, into: destination)
        case .q8_0: q8_0(source, blocks: count / 32, into: destination)
        case .q4_0: q4_0(source, blocks: count / 32, into: destination)
        case .q4_1: q4_1(source, blocks: count / 32, into: destination)
        }
    }

    @inline(__always)
    private static func store(_ v: SIMD16<Float>, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD16<Float>.self)
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

    static func q8_0(_ source: UnsafeRawPointer, blocks: Int, into destination: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let block = source + b * 34
            let d = HalfPrecision.loadHalf(block)
            let q0 = block.loadUnaligned(fromByteOffset: 2, as: SIMD16<Int8>.self)
            let q1 = block.loadUnaligned(fromByteOffset: 18, as: SIMD16<Int8>.self)
            store(SIMDSupport.float16(q0) * d, destination + 32 * b)
            store(SIMDSupport.float16(q1) * d, destination + 32 * b + 16)
        }
    }

    static func q4_0(_ source: UnsafeRawPointer, blocks: Int, into destination: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let block = source + b * 18
            let d = HalfPrecision.loadHalf(block)
            let q = block.loadUnaligned(fromByteOffset: 2, as: SIMD16<UInt8>.self)
            store((SIMDSupport.float16(q & 0x0f) - 8) * d, destination + 32 * b)
            store((SIMDSupport.float16(q &>> 4) - 8) * d, destination + 32 * b + 16)
        }
    }

    static func q4_1(_ source: UnsafeRawPointer, blocks: Int, into destination: UnsafeMutablePointer<Float>) {
        for b in 0..<blocks {
            let block = source + b * 20
            let d = HalfPrecision.loadHalf(block)
            let m = HalfPrecision.loadHalf(block, 2)
            let q = block.loadUnaligned(fromByteOffset: 4, as: SIMD16<UInt8>.self)
            store(SIMDSupport.float16(q & 0x0f) * d + m, destination + 32 * b)
            store(SIMDSupport.float16(q &>> 4) * d + m, destination + 32 * b + 16)
        }
    }
}
