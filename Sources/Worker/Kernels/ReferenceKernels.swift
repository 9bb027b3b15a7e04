/// Scalar references, kept beside every fast kernel: straightforward loops, no SIMD. Tests compare
/// the fast kernels with these on random data.
public enum ReferenceKernels {
    /// Dequantizes `count` values (whole blocks) stored as `type` in `bytes`.
    ///
    /// Q8_0: `Float(q) * d`. Q4_0: `Float(q - 8) * d`. Q4_1: `Float(q) * d + m`, rounded after the
    /// product and after the sum (no fused multiply-add). Value j of a Q4 block is the low nibble of
    /// byte j, value j + 16 the high nibble.
    public static func dequantize(_ type: TensorType, _ bytes: UnsafeRawBufferPointer, count: Int) -> [Float] {
        precondition(count % type.blockSize == 0, "\(count) values are not whole \(type) blocks")
        precondition(bytes.count >= type.rowBytes(count), "\(bytes.count) bytes hold fewer than \(count) values")
        var out = [Float](repeating: 0, count: count)
        let blockSize = type.blockSize
        for b in 0..<(count / blockSize) {
            let block = bytes.baseAddress! + b * type.bytesPerBlock
            switch type {
            case .f32:
                out[b] = block.loadUnaligned(as: Float.self)
            case .f16:
                out[b] = HalfPrecision.float(fromHalfBits: HalfPrecision.loadUInt16(block))
            case .bf16:
                out[b] = HalfPrecision.float(fromBFloat16Bits: HalfPrecision.loadUInt16(block))
            case .q8_0:
                let d = HalfPrecision.loadHalf(block)
                for j in 0..<32 {
                    let q = Int8(bitPattern: block.load(fromByteOffset: 2 + j, as: UInt8.self))
                    out[32 * b + j] = Float(q) * d
                }
            case .q4_0:
                let d = HalfPrecision.loadHalf(block)
                for j in 0..<16 {
                    let byte = block.load(fromByteOffset: 2 + j, as: UInt8.self)
                    out[32 * b + j] = Float(Int(byte & 0x0f) - 8) * d
                    out[32 * b + j + 16] = Float(Int(byte >> 4) - 8) * d
                }
            case .q4_1:
                let d = HalfPrecision.loadHalf(block)
                let m = HalfPrecision.loadHalf(block, 2)
                for j in 0..<16 {
                    let byte = block.load(fromByteOffset: 4 + j, as: UInt8.self)
                    let low = Float(byte & 0x0f) * d
                    let high = Float(byte >> 4) * d
                    out[32 * b + j] = low + m
                    out[32 * b + j + 16] = high + m
                }
            }
        }
        return out
    }

    /// `y[i * w.rows + r] = sum_c x[i * w.columns + c] * W[r, c]` for `n` input rows: the weights
    /// dequantized to fp32, products and sums in Double, rounded to Float once at the end.
    public static func multiply(_ w: WeightMatrix, x: [Float], n: Int) -> [Float] {
        precondition(x.count >= n * w.columns, "x holds fewer than \(n) rows of \(w.columns)")
        var y = [Float](repeating: 0, count: n * w.rows)
        for r in 0..<w.rows {
            let row = dequantize(w.type, UnsafeRawBufferPointer(start: w.row(r), count: w.rowBytes), count: w.columns)
            for i in 0..<n {
                var sum = 0.0
                for c in 0..<w.columns {
                    sum += Double(x[i * w.columns + c]) * Double(row[c])
                }
                y[i * w.rows + r] = Float(sum)
            }
        }
        return y
    }
}
