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

    /// The int16 path's activations for one row of whole 32-value blocks, in column order: per block
    /// the scale s = max|x| / L and q = round-to-nearest-even(x * (L / max|x|)), L = 32639
    /// (`CK_INT16_LEVELS`; 0 for an all-zero block, and for a block whose L / max|x| overflows, with
    /// s = 0). A block holding an infinity or NaN gets scale NaN and q = 0.
    public static func quantizeInt16(_ x: ArraySlice<Float>) -> (values: [Int16], scales: [Float]) {
        quantizeBlocks(x) { largest in
            (largest / 32639, largest > 0 ? 32639 / largest : 0)
        }
    }

    /// Per 32-value block of `x`: NaN scale and zero values when the block holds an infinity or NaN;
    /// else `rule(max|x|)` gives (scale, inverse) and q = round-to-nearest-even(x * inverse) (a
    /// block whose inverse is not finite keeps scale 0 and zero values).
    private static func quantizeBlocks<Q: FixedWidthInteger>(
        _ x: ArraySlice<Float>, _ rule: (_ largest: Float) -> (scale: Float, inverse: Float)
    ) -> (values: [Q], scales: [Float]) {
        precondition(x.count % 32 == 0, "\(x.count) values are not whole 32-value blocks")
        var values = [Q](repeating: 0, count: x.count)
        var scales = [Float](repeating: 0, count: x.count / 32)
        for b in 0..<(x.count / 32) {
            let block = x[(x.startIndex + 32 * b)..<(x.startIndex + 32 * b + 32)]
            guard block.allSatisfy(\.isFinite) else {
                scales[b] = .nan
                continue
            }
            var largest: Float = 0
            for v in block { largest = max(largest, abs(v)) }
            let (scale, inverse) = rule(largest)
            guard inverse.isFinite else { continue }
            scales[b] = scale
            for (j, v) in block.enumerated() {
                values[32 * b + j] = Q((v * inverse).rounded(.toNearestOrEven))
            }
        }
        return (values, scales)
    }

    /// A Q8_0, Q4_0 or Q4_1 block's integer values (Q4_0: q - 8) and its scale d and minimum m (0
    /// but for Q4_1): the weights are d * q (+ m).
    public static func blockIntegers(_ type: TensorType, _ block: UnsafeRawPointer) -> (q: [Int], d: Float, m: Float) {
        var q = [Int](repeating: 0, count: 32)
        switch type {
        case .q8_0:
            for j in 0..<32 { q[j] = Int(Int8(bitPattern: block.load(fromByteOffset: 2 + j, as: UInt8.self))) }
            return (q, HalfPrecision.loadHalf(block), 0)
        case .q4_0, .q4_1:
            let start = type == .q4_0 ? 2 : 4, centre = type == .q4_0 ? 8 : 0
            for j in 0..<16 {
                let byte = block.load(fromByteOffset: start + j, as: UInt8.self)
                q[j] = Int(byte & 0x0f) - centre
                q[j + 16] = Int(byte >> 4) - centre
            }
            return (q, HalfPrecision.loadHalf(block), type == .q4_1 ? HalfPrecision.loadHalf(block, 2) : 0)
        default:
            preconditionFailure("\(type) has no integer blocks")
        }
    }

    /// The int16 path's products (`MatMulInputs.int16`) for Q8_0, Q4_0 and Q4_1 weights: x
    /// quantized by `quantizeInt16`, per block the exact integer sum(q_w * q_x) times d_w * s, plus
    /// for Q4_1 m_w * s * sum(q_x); in Double, rounded once.
    public static func multiplyInt16(_ w: WeightMatrix, x: [Float], n: Int) -> [Float] {
        multiplyQuantized(w, x: x, n: n, quantize: quantizeInt16) { _, q, scale in
            scale * Double(q.reduce(0) { $0 + Int($1) })
        }
    }

    /// The integer-input products: each input row quantized by `quantize`; per block the exact
    /// integer sum(q_w * q_x) times d_w * s, plus m_w * `minimumFactor(x block, q_x block, s)` (the
    /// weights' minimum is 0 but for Q4_1); in Double, rounded once.
    private static func multiplyQuantized<Q: BinaryInteger>(
        _ w: WeightMatrix, x: [Float], n: Int, quantize: (ArraySlice<Float>) -> (values: [Q], scales: [Float]),
        minimumFactor: (_ x: ArraySlice<Float>, _ q: ArraySlice<Q>, _ scale: Double) -> Double
    ) -> [Float] {
        precondition(x.count >= n * w.columns, "x holds fewer than \(n) rows of \(w.columns)")
        let blocks = w.columns / 32
        let quantized = (0..<n).map { quantize(x[($0 * w.columns)..<(($0 + 1) * w.columns)]) }
        var y = [Float](repeating: 0, count: n * w.rows)
        for r in 0..<w.rows {
            let weights = (0..<blocks).map { blockIntegers(w.type, w.row(r) + $0 * w.type.bytesPerBlock) }
            for i in 0..<n {
                var sum = 0.0
                for b in 0..<blocks {
                    let (q, d, m) = weights[b]
                    let values = quantized[i].values[(32 * b)..<(32 * b + 32)]
                    var integer = 0
                    for (j, v) in values.enumerated() { integer += q[j] * Int(v) }
                    let scale = Double(quantized[i].scales[b])
                    let xBlock = x[(i * w.columns + 32 * b)..<(i * w.columns + 32 * b + 32)]
                    sum += Double(integer) * Double(d) * scale + Double(m) * minimumFactor(xBlock, values, scale)
                }
                y[i * w.rows + r] = Float(sum)
            }
        }
        return y
    }

    /// The int8 path's activations (`MatMulInputs.int8`, llama.cpp's Q8_0 rounding) for one row of
    /// whole 32-value blocks: per block d = max|x| / 127 and q = round-to-nearest-even(x * (1 / d))
    /// (0 for an all-zero block, and for a block whose 1 / d overflows, with d = 0). A block holding
    /// an infinity or NaN gets d = NaN and q = 0.
    public static func quantizeInt8(_ x: ArraySlice<Float>) -> (values: [Int8], scales: [Float]) {
        quantizeBlocks(x) { largest in
            let d = largest / 127
            return (d, d != 0 ? 1 / d : 0)
        }
    }

    /// The int8 path's products (`MatMulInputs.int8`) for Q8_0, Q4_0 and Q4_1 weights: x quantized
    /// by `quantizeInt8`, per block the exact integer sum(q_w * q_x) times d_w * d, plus for Q4_1
    /// m_w * d * sum(q_x); in Double, rounded once.
    public static func multiplyInt8(_ w: WeightMatrix, x: [Float], n: Int) -> [Float] {
        multiplyQuantized(w, x: x, n: n, quantize: quantizeInt8) { _, q, scale in
            scale * Double(q.reduce(0) { $0 + Int($1) })
        }
    }
}
