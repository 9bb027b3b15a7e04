import Testing
@testable import Worker
import Medusa

/// A small deterministic generator (the sampler's SplitMix64), so failures reproduce.
typealias SplitMix64 = SeededGenerator

/// Owns aligned bytes that a `WeightMatrix` points into.
final class KernelTestBuffer {
    let pointer: UnsafeMutableRawPointer
    let count: Int
    init(count: Int) {
        self.count = count
        pointer = .allocate(byteCount: max(count, 1), alignment: 64)
        pointer.initializeMemory(as: UInt8.self, repeating: 0xcd, count: max(count, 1))
    }
    deinit { pointer.deallocate() }
}

enum KernelTestData {
    static func floats(_ count: Int, _ rng: inout SplitMix64, scale: Float = 1) -> [Float] {
        (0..<count).map { _ in Float.random(in: -scale...scale, using: &rng) }
    }

    /// A `rows x columns` matrix of `type` built by quantizing random values, each row followed by
    /// `padding` bytes of garbage (so strides other than the row size are exercised).
    static func matrix(
        _ type: TensorType, rows: Int, columns: Int, _ rng: inout SplitMix64, padding: Int = 0
    ) -> WeightMatrix {
        let rowBytes = type.rowBytes(columns)
        let stride = rowBytes + padding
        let buffer = KernelTestBuffer(count: rows * stride)
        for r in 0..<rows {
            // Rows of varying magnitude, as real weight rows are.
            let scale = Float.random(in: 0.05...2, using: &rng)
            let bytes = Quantizer.quantize(floats(columns, &rng, scale: scale), to: type)
            bytes.withUnsafeBytes { (buffer.pointer + r * stride).copyMemory(from: $0.baseAddress!, byteCount: rowBytes) }
        }
        return WeightMatrix(
            type: type, rows: rows, columns: columns, base: buffer.pointer, rowStride: stride, owner: buffer)
    }

    /// Where each quantized type keeps its fp16 scale d and (if any) its fp16 minimum or minimum scale.
    static func halfOffsets(_ type: TensorType) -> (d: Int, m: Int?) {
        switch type {
        case .q4_0, .q5_0, .q8_0: (0, nil)
        case .q4_1, .q5_1, .q4_K, .q5_K: (0, 2)
        case .q2_K: (80, 82)
        case .q3_K: (108, nil)
        case .q6_K: (208, nil)
        case .f32, .f16, .bf16: preconditionFailure("\(type) has no scales")
        }
    }

    /// Random blocks: random payload bytes (integers and integer sub-scales), finite random fp16
    /// scales (and mins).
    static func randomBlocks(_ type: TensorType, blocks: Int, _ rng: inout SplitMix64) -> [UInt8] {
        var bytes = (0..<(blocks * type.bytesPerBlock)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        func putHalf(_ v: Float, at offset: Int) {
            let bits = Float16(v).bitPattern
            bytes[offset] = UInt8(bits & 0xff)
            bytes[offset + 1] = UInt8(bits >> 8)
        }
        for b in 0..<blocks {
            let start = b * type.bytesPerBlock
            switch type {
            case .f16:
                putHalf(Float.random(in: -70000...70000, using: &rng), at: start)  // includes +-inf
            case .bf16, .f32:
                break  // every bit pattern is a value; NaNs are compared by bits
            default:
                let (d, m) = halfOffsets(type)
                putHalf(Float.random(in: -0.1...0.1, using: &rng), at: start + d)
                if let m { putHalf(Float.random(in: -1...1, using: &rng), at: start + m) }
            }
        }
        return bytes
    }

    /// Runs `MatMul.multiply` on an array of rows and returns `n x w.rows` outputs.
    static func multiply(
        _ w: WeightMatrix, _ x: [Float], n: Int, pool: ThreadPool, inputs: MatMulInputs = .fp32
    ) -> [Float] {
        var y = [Float](repeating: .nan, count: n * w.rows)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                MatMul.multiply(
                    w, x: xp.baseAddress!, xStride: w.columns, n: n, y: yp.baseAddress!, yStride: w.rows, pool: pool,
                    inputs: inputs)
            }
        }
        return y
    }

    /// Tests run in parallel on few cores: keep idle workers from spinning long.
    static func pool(_ threads: Int) -> ThreadPool { ThreadPool(threadCount: threads, spinIterations: 2000) }

    static let formats: [TensorType] = TensorType.allCases

    /// The formats with int16- and int8-activation kernels: every quantized type.
    static let blockFormats: [TensorType] = TensorType.allCases.filter(\.isQuantized)

    /// The formats with Swift block kernels (fp32 inputs, and int16 inputs on CPUs without VNNI).
    static let swiftBlockFormats: [TensorType] = [.q8_0, .q4_0, .q4_1]

    /// `columns` rounded up to whole blocks of `type` (a K-quant row holds 256-value super-blocks).
    static func width(_ columns: Int, _ type: TensorType) -> Int {
        (columns + type.blockSize - 1) / type.blockSize * type.blockSize
    }

    /// An integer-input kernel against the exact fp32 product: each activation moves by at most half
    /// a step (s / 2) of its block, so |y - y_fp32| <= sum_c |W[r, c]| * s_b(c) / 2, plus fp32
    /// accumulation error. `scales` gives a row's block steps. Returns the largest error seen.
    @discardableResult
    static func checkRoundingBound(
        _ type: TensorType, inputs: MatMulInputs, seed: UInt64, scales: (ArraySlice<Float>) -> [Float]
    ) -> Double {
        var rng = SplitMix64(seed: seed ^ UInt64(type.rawValue))
        let (rows, columns, n) = (33, width(576, type), 5)
        let w = matrix(type, rows: rows, columns: columns, &rng)
        let x = floats(n * columns, &rng, scale: 3)
        let exact = ReferenceKernels.multiply(w, x: x, n: n)
        let y = multiply(w, x, n: n, pool: pool(2), inputs: inputs)
        var largest = 0.0
        for r in 0..<rows {
            var row = [Float](repeating: 0, count: columns)
            row.withUnsafeMutableBufferPointer { w.dequantizeRow(r, into: $0.baseAddress!) }
            for i in 0..<n {
                let xi = x[(i * columns)..<((i + 1) * columns)]
                let steps = scales(xi)
                var bound = 0.0
                for c in 0..<columns { bound += abs(Double(row[c])) * Double(steps[c / 32]) / 2 }
                bound += KernelMatMulTests.tolerance(type, xi, row[...])
                let error = abs(Double(y[i * rows + r]) - Double(exact[i * rows + r]))
                largest = max(largest, error)
                #expect(error <= bound, "\(type) \(inputs) row \(r) input \(i): \(error) > \(bound)")
            }
        }
        return largest
    }

    /// Rows multiplied alone (n = 1, one thread) and inside blocks of 2...33 rows on 1/2/3 threads
    /// give the same bits, through `multiply(w, x, n, pool)`.
    static func checkBatchInvariance(
        _ type: TensorType, seed: UInt64, label: String,
        multiply: (WeightMatrix, [Float], Int, ThreadPool) -> [Float]
    ) {
        var rng = SplitMix64(seed: seed ^ UInt64(type.rawValue))
        let (rows, columns, total) = (75, width(608, type), 40)
        let w = matrix(type, rows: rows, columns: columns, &rng)
        let x = floats(total * columns, &rng, scale: 3)
        let pools = [pool(1), pool(2), pool(3)]
        var alone = [Float]()
        for i in 0..<total { alone += multiply(w, Array(x[(i * columns)..<((i + 1) * columns)]), 1, pools[0]) }
        for pool in pools {
            for n in [1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 33] {
                var start = -(n / 2)
                while start < total {
                    let lo = max(0, start), hi = min(total, start + n)
                    let y = multiply(w, Array(x[(lo * columns)..<(hi * columns)]), hi - lo, pool)
                    let same = zip(y, alone[(lo * rows)..<(hi * rows)]).allSatisfy { $0.bitPattern == $1.bitPattern }
                    #expect(same, "\(type) \(label) threads=\(pool.threadCount) block n=\(n) rows \(lo)..<\(hi)")
                    start += n
                }
            }
        }
    }

    /// Fused products (QKV, gate/up: one pool job) equal separate `MatMul.multiply` calls bit for bit.
    static func checkFusedProducts(_ type: TensorType, inputs: MatMulInputs, seed: UInt64) {
        var rng = SplitMix64(seed: seed ^ UInt64(type.rawValue))
        let pool = pool(2)
        let columns = width(96, type)
        // With integer inputs, a and c carry the VNNI kernels' packed rows (when they run here) and b
        // does not: one job runs both kernels (int8), or falls back to the portable one (int16).
        let packing = { (w: WeightMatrix) in inputs != .fp32 ? w.packedForVNNI() : w }
        let a = packing(matrix(type, rows: 37, columns: columns, &rng))
        let b = matrix(type, rows: 9, columns: columns, &rng)
        let c = packing(matrix(type, rows: 20, columns: columns, &rng))
        for n in [1, 3, 6] {
            let x = floats(n * columns, &rng)
            let separate = [a, b, c].map { multiply($0, x, n: n, pool: pool, inputs: inputs) }
            var o0 = [Float](repeating: .nan, count: n * a.rows)
            var o1 = [Float](repeating: .nan, count: n * b.rows)
            var o2 = [Float](repeating: .nan, count: n * c.rows)
            x.withUnsafeBufferPointer { xp in
                o0.withUnsafeMutableBufferPointer { y0 in
                    o1.withUnsafeMutableBufferPointer { y1 in
                        o2.withUnsafeMutableBufferPointer { y2 in
                            MatMul.multiply(
                                .init(.init(a, y: y0.baseAddress!, yStride: a.rows), .init(b, y: y1.baseAddress!, yStride: b.rows),
                                      .init(c, y: y2.baseAddress!, yStride: c.rows)),
                                x: xp.baseAddress!, xStride: columns, n: n, pool: pool, inputs: inputs)
                        }
                    }
                }
            }
            let outs = [o0, o1, o2]
            for k in 0..<3 {
                #expect(zip(outs[k], separate[k]).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(type) \(inputs) product \(k) n=\(n)")
            }
        }
    }
}
