/// Scalar references, kept beside every fast kernel: straightforward loops, no SIMD. Tests compare
/// the fast kernels with these on random data.
///
/// Every quantized type is read here as GGML lays it out (`ggml-common.h`), through one view:
/// each block is a run of 32-value groups, and a group is 32 small signed integers w with, per
/// sub-block of 32 or 16 of them, a scale D and (for the formats with minimums) a minimum M, both
/// exact fp32 products of the block's fp16 scales and its integer sub-scales. Value c of a group is
///
///     Float(w[c]) * D[c / width] + M[c / width]     (rounded after the product and after the sum)
///
/// which is the `gguf` package's numpy dequantizer's arithmetic for every type. The integer-input
/// products (`multiplyInt16`, `multiplyInt8`) are defined on the same view.
public enum ReferenceKernels {
    /// One 32-value group of a quantized block.
    public struct Group: Equatable, Sendable {
        /// The 32 integers (Q4_0: q - 8; Q5_0: q - 16; Q6_K: q - 32; Q3_K: q - 4 unless its high bit is set).
        public var integers: [Int]
        /// Values per sub-block: 32, or 16 for Q2_K, Q3_K and Q6_K (two sub-blocks per group).
        public var width: Int
        /// D per sub-block: the block's d times the sub-block's integer scale (exact in fp32).
        public var scales: [Float]
        /// M per sub-block (Q4_1, Q5_1: m; Q2_K, Q4_K, Q5_K: -(dmin times the integer minimum)); nil without minimums.
        public var minimums: [Float]?
        /// The sub-blocks' integer scales and minimums (1 and 0 for the 32-value formats; Q3_K's scale is signed).
        public var subScales: [Int]
        public var subMinimums: [Int]
    }

    /// Group `g` (0 ..< blockSize / 32) of the `type` block at `block`.
    public static func group(_ type: TensorType, _ block: UnsafeRawPointer, _ g: Int) -> Group {
        precondition(type.isQuantized && g >= 0 && g < type.blockSize / 32, "no group \(g) in a \(type) block")
        func byte(_ offset: Int) -> Int { Int(block.load(fromByteOffset: offset, as: UInt8.self)) }
        func half(_ offset: Int) -> Float { HalfPrecision.loadHalf(block, offset) }
        /// A 32-value format's value c: the low nibble of byte c (c < 16) or the high nibble of byte c - 16.
        func nibble(_ start: Int, _ c: Int) -> Int { c < 16 ? byte(start + c) & 15 : byte(start + c - 16) >> 4 }
        func fifthBit(_ start: Int, _ c: Int) -> Int { (Int(block.loadUnaligned(fromByteOffset: start, as: UInt32.self).littleEndian) >> c) & 1 }
        let v = (0..<32).map { 32 * g + $0 }  // the values' indices in the block
        var w = [Int](repeating: 0, count: 32)
        switch type {
        case .q4_0, .q4_1:
            let start = type == .q4_0 ? 2 : 4
            for c in 0..<32 { w[c] = nibble(start, c) - (type == .q4_0 ? 8 : 0) }
            return plain(w, d: half(0), m: type == .q4_1 ? half(2) : nil)
        case .q5_0, .q5_1:
            let bits = type == .q5_0 ? 2 : 4
            for c in 0..<32 { w[c] = (nibble(bits + 4, c) | fifthBit(bits, c) << 4) - (type == .q5_0 ? 16 : 0) }
            return plain(w, d: half(0), m: type == .q5_1 ? half(2) : nil)
        case .q8_0:
            for c in 0..<32 { w[c] = Int(Int8(truncatingIfNeeded: byte(2 + c))) }
            return plain(w, d: half(0), m: nil)
        case .q2_K:
            // scales[16] at 0, qs[64] at 16, d at 80, dmin at 82. Value i: bits 2s of qs[32h + l]
            // with h = i / 128, s = i % 128 / 32, l = i % 32.
            for c in 0..<32 { w[c] = (byte(16 + 32 * (v[c] / 128) + v[c] % 32) >> (2 * (v[c] % 128 / 32))) & 3 }
            let sub = [byte(2 * g), byte(2 * g + 1)]
            return withSubBlocks(w, width: 16, d: half(80), scales: sub.map { $0 & 15 }, dmin: half(82), minimums: sub.map { $0 >> 4 })
        case .q3_K:
            // hmask[32] at 0, qs[64] at 32, scales[12] at 96, d at 108. Value i: the 2-bit part as Q2_K's,
            // minus 4 unless bit i / 32 of hmask[i % 32] is set.
            for c in 0..<32 {
                let low = (byte(32 + 32 * (v[c] / 128) + v[c] % 32) >> (2 * (v[c] % 128 / 32))) & 3
                let high = (byte(v[c] % 32) >> (v[c] / 32)) & 1
                w[c] = low - (high == 1 ? 0 : 4)
            }
            let sub = [2 * g, 2 * g + 1].map { k in
                let low = k < 8 ? byte(96 + k) & 15 : byte(96 + k - 8) >> 4
                let high = (byte(96 + 8 + k % 4) >> (2 * (k / 4))) & 3
                return (low | high << 4) - 32
            }
            return withSubBlocks(w, width: 16, d: half(108), scales: sub, dmin: nil, minimums: nil)
        case .q4_K, .q5_K:
            // d at 0, dmin at 2, 6-bit scales and mins at 4 (12 bytes), [Q5_K: qh[32] at 16], qs[128].
            // Value i: nibble i % 64 / 32 of qs[32 (i / 64) + i % 32]; Q5_K adds bit i / 32 of qh[i % 32] as bit 4.
            let qs = type == .q4_K ? 16 : 48
            for c in 0..<32 {
                w[c] = (byte(qs + 32 * (v[c] / 64) + v[c] % 32) >> (4 * (v[c] % 64 / 32))) & 15
                if type == .q5_K { w[c] |= ((byte(16 + v[c] % 32) >> (v[c] / 32)) & 1) << 4 }
            }
            let (scale, minimum) = g < 4
                ? (byte(4 + g) & 63, byte(8 + g) & 63)
                : ((byte(8 + g) & 15) | (byte(g) >> 6) << 4, (byte(8 + g) >> 4) | (byte(4 + g) >> 6) << 4)
            return withSubBlocks(w, width: 32, d: half(0), scales: [scale], dmin: half(2), minimums: [minimum])
        case .q6_K:
            // ql[128] at 0, qh[64] at 128, scales[16] (int8) at 192, d at 208. Value i (h = i / 128):
            // nibble i % 128 / 64 of ql[64h + i % 64], bits 2 (i % 128 / 32) of qh[32h + i % 32] above it; minus 32.
            for c in 0..<32 {
                let i = v[c], h = i / 128
                let low = (byte(64 * h + i % 64) >> (4 * (i % 128 / 64))) & 15
                let high = (byte(128 + 32 * h + i % 32) >> (2 * (i % 128 / 32))) & 3
                w[c] = (low | high << 4) - 32
            }
            let sub = [2 * g, 2 * g + 1].map { Int(Int8(truncatingIfNeeded: byte(192 + $0))) }
            return withSubBlocks(w, width: 16, d: half(208), scales: sub, dmin: nil, minimums: nil)
        case .f32, .f16, .bf16:
            preconditionFailure("\(type) has no groups")
        }
    }

    /// A 32-value format's group: D = d, M = m.
    private static func plain(_ w: [Int], d: Float, m: Float?) -> Group {
        Group(integers: w, width: 32, scales: [d], minimums: m.map { [$0] }, subScales: [1], subMinimums: [0])
    }

    /// A K-quant group: D = d * scale, M = -(dmin * minimum) per sub-block.
    private static func withSubBlocks(
        _ w: [Int], width: Int, d: Float, scales: [Int], dmin: Float?, minimums: [Int]?
    ) -> Group {
        Group(integers: w, width: width, scales: scales.map { d * Float($0) },
              minimums: dmin.map { dmin in minimums!.map { -(dmin * Float($0)) } },
              subScales: scales, subMinimums: minimums ?? scales.map { _ in 0 })
    }

    /// Dequantizes `count` values (whole blocks) stored as `type` in `bytes`: floats widened, and
    /// quantized values as `Group` defines them.
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
            default:
                for g in 0..<(blockSize / 32) {
                    let group = Self.group(type, block, g)
                    for c in 0..<32 {
                        let k = c / group.width
                        let product = Float(group.integers[c]) * group.scales[k]
                        out[blockSize * b + 32 * g + c] = group.minimums.map { product + $0[k] } ?? product
                    }
                }
            }
        }
        return out
    }

    /// Row `r` of `w` dequantized: its `columns` values (whole blocks are read, the matrix's
    /// columns taken from them).
    public static func row(_ w: WeightMatrix, _ r: Int) -> [Float] {
        let spanned = w.blocksPerRow * w.type.blockSize
        let all = dequantize(w.type, UnsafeRawBufferPointer(start: w.row(r), count: w.rowBytes), count: spanned)
        return Array(all[w.firstColumn..<(w.firstColumn + w.columns)])
    }

    /// The groups of row `r` of `w` (a quantized matrix), its columns' groups in order.
    public static func groups(_ w: WeightMatrix, _ r: Int) -> [Group] {
        let perBlock = w.type.blockSize / 32
        return (0..<(w.columns / 32)).map { g in
            let a = w.firstColumn / 32 + g
            return group(w.type, w.row(r) + (a / perBlock) * w.type.bytesPerBlock, a % perBlock)
        }
    }

    /// `y[i * w.rows + r] = sum_c x[i * w.columns + c] * W[r, c]` for `n` input rows: the weights
    /// dequantized to fp32, products and sums in Double, rounded to Float once at the end.
    public static func multiply(_ w: WeightMatrix, x: [Float], n: Int) -> [Float] {
        precondition(x.count >= n * w.columns, "x holds fewer than \(n) rows of \(w.columns)")
        var y = [Float](repeating: 0, count: n * w.rows)
        for r in 0..<w.rows {
            let row = row(w, r)
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

    /// The int16 path's products (`MatMulInputs.int16`) for quantized weights: x quantized by
    /// `quantizeInt16`, then `multiplyQuantized`'s sums.
    public static func multiplyInt16(_ w: WeightMatrix, x: [Float], n: Int) -> [Float] {
        multiplyQuantized(w, x: x, n: n, quantize: quantizeInt16)
    }

    /// The integer-input products: each input row quantized per 32-value block by `quantize` (q_x,
    /// scale s); per weight group and sub-block k, the exact integer t_k = sum(w * q_x) over the
    /// sub-block times D_k * s, plus M_k * s * sum(q_x over the sub-block) for the formats with
    /// minimums; in Double, rounded once.
    private static func multiplyQuantized<Q: BinaryInteger>(
        _ w: WeightMatrix, x: [Float], n: Int, quantize: (ArraySlice<Float>) -> (values: [Q], scales: [Float])
    ) -> [Float] {
        precondition(x.count >= n * w.columns, "x holds fewer than \(n) rows of \(w.columns)")
        let quantized = (0..<n).map { quantize(x[($0 * w.columns)..<(($0 + 1) * w.columns)]) }
        var y = [Float](repeating: 0, count: n * w.rows)
        for r in 0..<w.rows {
            let groups = groups(w, r)
            for i in 0..<n {
                var sum = 0.0
                for (b, group) in groups.enumerated() {
                    let scale = Double(quantized[i].scales[b])
                    for k in 0..<(32 / group.width) {
                        var t = 0, s = 0
                        for c in (k * group.width)..<((k + 1) * group.width) {
                            let q = Int(quantized[i].values[32 * b + c])
                            t += group.integers[c] * q
                            s += q
                        }
                        sum += Double(t) * Double(group.scales[k]) * scale
                        if let m = group.minimums { sum += Double(m[k]) * scale * Double(s) }
                    }
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

    /// The int8 path's products (`MatMulInputs.int8`) for quantized weights: x quantized by
    /// `quantizeInt8`, then `multiplyQuantized`'s sums.
    public static func multiplyInt8(_ w: WeightMatrix, x: [Float], n: Int) -> [Float] {
        multiplyQuantized(w, x: x, n: n, quantize: quantizeInt8)
    }
}
