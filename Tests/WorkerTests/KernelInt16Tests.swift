import Testing
@testable import Worker

/// The int16-activation block kernels (`MatMulInputs.int16`) against their scalar reference
/// (`ReferenceKernels.multiplyInt16`), and their batch invariance.
@Suite("MatMul int16 inputs")
struct KernelInt16Tests {
    /// Runs the kernel's `prepare` for `type` and returns its values in column order and its scales.
    static func prepared(_ type: TensorType, _ x: [Float], n: Int, columns: Int) -> (values: [Int16], scales: [Float], sums: [Float]) {
        let blocks = columns / 32
        var values = [Int16](repeating: -1, count: n * columns)
        var scales = [SIMD8<Float>](repeating: SIMD8(repeating: -1), count: n * blocks)
        var sums = [Float](repeating: -1, count: n * blocks)
        var lanes: [Int] = []
        x.withUnsafeBufferPointer { xp in
            values.withUnsafeMutableBufferPointer { v in
                scales.withUnsafeMutableBufferPointer { s in
                    sums.withUnsafeMutableBufferPointer { t in
                        func run<F: Int16BlockFormat>(_ f: F.Type) {
                            Int16BlockKernels.prepare(F.self, x: xp.baseAddress!, xStride: columns, n: n, columns: columns,
                                                      values: v.baseAddress!, scales: s.baseAddress!, sums: t.baseAddress!)
                            lanes = F.laneColumns
                        }
                        switch type {
                        case .q8_0: run(Q8_0Block.self)
                        case .q4_0: run(Q4_0Block.self)
                        default: run(Q4_1Block.self)
                        }
                    }
                }
            }
        }
        #expect(Set(lanes) == Set(0..<32) && lanes.count == 32, "\(type) lanes are a permutation")
        var ordered = values
        for i in 0..<(n * blocks) {
            for lane in 0..<32 { ordered[32 * i + lanes[lane]] = values[32 * i + lane] }
        }
        #expect(scales.allSatisfy { s in (0..<8).allSatisfy { s[$0].bitPattern == s[0].bitPattern } }, "\(type) scale lanes")
        return (ordered, scales.map { $0[0] }, sums)
    }

    @Test("activations are quantized exactly as the reference does (zero, tiny and non-finite blocks too)",
          arguments: KernelTestData.blockFormats)
    func quantization(type: TensorType) {
        var rng = SplitMix64(seed: 0x1671 ^ UInt64(type.rawValue))
        let columns = 32 * 12
        var x = KernelTestData.floats(3 * columns, &rng, scale: 4)
        for j in 0..<32 { x[32 + j] = 0 }                   // an all-zero block
        for j in 0..<32 { x[64 + j] *= 1e-30 }              // subnormal-range values
        x[96 + 5] = .infinity                               // non-finite blocks
        x[128 + 31] = .nan
        for j in 0..<32 { x[160 + j] = j % 2 == 0 ? 0.5 : -0.5 }  // ties in magnitude
        let kernel = Self.prepared(type, x, n: 3, columns: columns)
        for i in 0..<3 {
            let reference = ReferenceKernels.quantizeInt16(x[(i * columns)..<((i + 1) * columns)])
            #expect(Array(kernel.values[(i * columns)..<((i + 1) * columns)]) == reference.values, "\(type) row \(i)")
            let scales = Array(kernel.scales[(i * 12)..<((i + 1) * 12)])
            #expect(zip(scales, reference.scales).allSatisfy { $0.bitPattern == $1.bitPattern || ($0.isNaN && $1.isNaN) },
                    "\(type) row \(i) scales")
        }
        #expect(kernel.scales[3].isNaN && kernel.scales[4].isNaN && kernel.scales[1] == 0)
        #expect(kernel.values[0..<32].contains(32767) || kernel.values[0..<32].contains(-32767))
    }

    @Test("matches the scalar reference: n 1...17, odd row counts, 1/2/3 threads", arguments: KernelTestData.blockFormats)
    func matchesReference(type: TensorType) {
        var rng = SplitMix64(seed: 0x16a ^ UInt64(type.rawValue))
        let pools = [KernelTestData.pool(1), KernelTestData.pool(2), KernelTestData.pool(3)]
        let shapes = [(1, 32), (7, 64), (13, 96), (67, 576), (9, 1536), (45, 192)]
        for (rows, columns) in shapes {
            let w = KernelTestData.matrix(type, rows: rows, columns: columns, &rng, padding: rows % 3 * 2)
            for n in [1, 2, 3, 5, 8, 17] {
                let x = KernelTestData.floats(n * columns, &rng, scale: 2)
                let reference = ReferenceKernels.multiplyInt16(w, x: x, n: n)
                for pool in pools {
                    let y = KernelTestData.multiply(w, x, n: n, pool: pool, inputs: .int16)
                    KernelMatMulTests.check(w, x, n: n, y, reference: reference,
                                            label: "\(type) \(rows)x\(columns) n=\(n) threads=\(pool.threadCount)")
                }
            }
        }
    }

    @Test("stays within the int16 rounding bound of the exact fp32 product", arguments: KernelTestData.blockFormats)
    func roundingBound(type: TensorType) {
        KernelTestData.checkRoundingBound(type, inputs: .int16, seed: 0xb0b) { ReferenceKernels.quantizeInt16($0).scales }
    }

    @Test("a row alone, inside blocks of 2...33 rows, on 1/2/3 threads: bit-identical", arguments: KernelTestData.blockFormats)
    func batchInvariant(type: TensorType) {
        KernelTestData.checkBatchInvariance(type, seed: 0x16ba7, label: "int16") { w, x, n, pool in
            KernelTestData.multiply(w, x, n: n, pool: pool, inputs: .int16)
        }
    }

    @Test("fused products (QKV, gate/up) equal separate calls bit for bit", arguments: KernelTestData.blockFormats)
    func fusedProducts(type: TensorType) {
        KernelTestData.checkFusedProducts(type, inputs: .int16, seed: 0x16f)
    }

    @Test("formats without a block kernel ignore the choice", arguments: [TensorType.f32, .f16, .bf16])
    func otherFormats(type: TensorType) {
        var rng = SplitMix64(seed: 0x0f ^ UInt64(type.rawValue))
        let pool = KernelTestData.pool(2)
        let w = KernelTestData.matrix(type, rows: 11, columns: 64, &rng)
        let x = KernelTestData.floats(3 * 64, &rng)
        let a = KernelTestData.multiply(w, x, n: 3, pool: pool, inputs: .fp32)
        let b = KernelTestData.multiply(w, x, n: 3, pool: pool, inputs: .int16)
        #expect(zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern })
    }
}
