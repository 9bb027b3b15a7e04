import CKernels
import Testing
@testable import Worker

/// The int16-activation block kernels (`MatMulInputs.int16`): the Swift kernels, the portable C
/// definition (`ck_multiply` at 16 bits) and the AVX-512 VNNI kernel on packed rows, against their
/// scalar reference (`ReferenceKernels.multiplyInt16`), each other bit for bit, and their batch
/// invariance.
@Suite("MatMul int16 inputs")
struct KernelInt16Tests {
    /// Runs the Swift kernels' `prepare` for `type`; returns its values in column order, its scales
    /// and minimum factors (input-major, as the reference lists them).
    static func prepared(_ type: TensorType, _ x: [Float], n: Int, columns: Int) -> (values: [Int16], scales: [Float], factors: [Float]) {
        let blocks = columns / 32
        var values = [Int16](repeating: -1, count: n * columns)
        var scales = [Float](repeating: -1, count: n * blocks)
        var factors = [Float](repeating: -1, count: n * blocks)
        var lanes: [Int] = []
        x.withUnsafeBufferPointer { xp in
            values.withUnsafeMutableBufferPointer { v in
                scales.withUnsafeMutableBufferPointer { s in
                    factors.withUnsafeMutableBufferPointer { t in
                        func run<F: Int16BlockFormat>(_ f: F.Type) {
                            Int16BlockKernels.prepare(F.self, x: xp.baseAddress!, xStride: columns, n: n, columns: columns,
                                                      values: v.baseAddress!, scales: s.baseAddress!,
                                                      minimumFactors: t.baseAddress!)
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
        let byInput = { (table: [Float]) in (0..<(n * blocks)).map { table[($0 % blocks) * n + $0 / blocks] } }
        return (ordered, byInput(scales), byInput(factors))
    }

    /// Runs `ck_prepare` at 16 bits with `variant`; returns its values (q = 256 h + l) in column
    /// order, its scales, sums, first-half sums and scaled sums (input-major).
    static func preparedC(_ x: [Float], n: Int, columns: Int, variant: IntegerKernels.Variant)
        -> (values: [Int16], scales: [Float], sums: [Int32], halves: [Int32], factors: [Float]) {
        let blocks = columns / 32
        let memory = UnsafeMutableRawPointer.allocate(byteCount: ck_prepare_bytes(16, Int32(n), Int32(columns)), alignment: 64)
        defer { memory.deallocate() }
        let p = x.withUnsafeBufferPointer {
            IntegerKernels.prepare(bits: 16, x: $0.baseAddress!, xStride: columns, n: n, columns: columns,
                                   memory: memory, variant: variant)
        }
        #expect(p.bits == 16 && p.n == Int32(n))
        var values: [Int16] = []
        var scales: [Float] = [], sums: [Int32] = [], halves: [Int32] = [], factors: [Float] = []
        for i in 0..<n {
            for b in 0..<blocks {
                let block = p.values + 64 * (i * blocks + b)
                values += (0..<32).map { Int16(256 * Int(block[$0]) + Int(block[32 + $0])) }
                let k = b * p.stride + i
                scales.append(p.scales[k])
                sums.append(p.sums[k])
                halves.append(p.half_sums[k])
                factors.append(p.scaled_sums[k])
                let d = p.scales[k]
                #expect(Self.sameBits([p.scaled_halves.0![k], p.scaled_halves.1![k]],
                                      [d * Float(p.half_sums[k]), d * Float(p.sums[k] - p.half_sums[k])]))
            }
        }
        return (values, scales, sums, halves, factors)
    }

    /// How a test runs the int16 product.
    enum Kernel: CustomStringConvertible, CaseIterable {
        /// The Swift kernels on the rows (unpacked matrix).
        case swift
        /// `ck_multiply` at 16 bits on the rows.
        case portableC
        /// `ck_multiply_packed` at 16 bits on the packed rows (AVX-512 VNNI CPUs only).
        case vnni

        var description: String { "\(self == .swift ? "Swift" : (self == .portableC ? "portable C" : "VNNI"))" }

        static var runnable: [Kernel] { IntegerKernels.Variant.avx512VNNI.isSupported ? allCases : [.swift, .portableC] }
    }

    static func multiply(_ w: WeightMatrix, _ x: [Float], n: Int, pool: ThreadPool, kernel: Kernel) -> [Float] {
        let matrix = kernel == .vnni ? w.packedForVNNI(variant: .avx512VNNI) : w
        #expect((matrix.packed != nil) == (kernel == .vnni))
        var y = [Float](repeating: .nan, count: n * w.rows)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                let products = MatMul.Products(.init(matrix, y: yp.baseAddress!, yStride: w.rows))
                switch kernel {
                case .swift:
                    Int16BlockKernels.multiply(products, x: xp.baseAddress!, xStride: w.columns, n: n, pool: pool,
                                               variant: .portable)
                case .portableC:
                    IntegerKernels.multiply(bits: 16, products, x: xp.baseAddress!, xStride: w.columns, n: n, pool: pool,
                                            variant: .portable)
                case .vnni:
                    Int16BlockKernels.multiply(products, x: xp.baseAddress!, xStride: w.columns, n: n, pool: pool,
                                               variant: .avx512VNNI)
                }
            }
        }
        return y
    }

    static func sameBits(_ a: [Float], _ b: [Float]) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern || ($0.isNaN && $1.isNaN) }
    }

    @Test("activations are quantized exactly as the reference does, by the Swift and C preparations (zero, tiny and non-finite blocks too)",
          arguments: KernelTestData.swiftBlockFormats)
    func quantization(type: TensorType) {
        var rng = SplitMix64(seed: 0x1671 ^ UInt64(type.rawValue))
        let columns = 32 * 12, n = 3
        var x = KernelTestData.floats(n * columns, &rng, scale: 4)
        for j in 0..<32 { x[32 + j] = 0 }                   // an all-zero block
        for j in 0..<32 { x[64 + j] *= 1e-30 }              // tiny values
        x[96 + 5] = .infinity                               // non-finite blocks
        x[128 + 31] = .nan
        for j in 0..<32 { x[160 + j] = j % 2 == 0 ? 0.5 : -0.5 }  // ties in magnitude
        for j in 0..<32 { x[192 + j] = j == 3 ? -Float(bitPattern: 7) : 0 }  // ~1e-44: L / max|x| overflows
        let kernel = Self.prepared(type, x, n: n, columns: columns)
        let c = [IntegerKernels.Variant.portable, .avx512VNNI].filter(\.isSupported).map {
            ($0, Self.preparedC(x, n: n, columns: columns, variant: $0))
        }
        for i in 0..<n {
            let reference = ReferenceKernels.quantizeInt16(x[(i * columns)..<((i + 1) * columns)])
            let rows = (i * columns)..<((i + 1) * columns), blocks = (i * 12)..<((i + 1) * 12)
            #expect(Array(kernel.values[rows]) == reference.values, "\(type) row \(i)")
            #expect(Self.sameBits(Array(kernel.scales[blocks]), reference.scales), "\(type) row \(i) scales")
            for (variant, prepared) in c {
                #expect(Array(prepared.values[rows]) == reference.values, "\(type) row \(i) C \(variant)")
                #expect(Self.sameBits(Array(prepared.scales[blocks]), reference.scales), "\(type) row \(i) C \(variant) scales")
            }
            for b in 0..<12 {
                let sum = reference.values[(32 * b)..<(32 * b + 32)].reduce(Int32(0)) { $0 + Int32($1) }
                let half = reference.values[(32 * b)..<(32 * b + 16)].reduce(Int32(0)) { $0 + Int32($1) }
                let factor = reference.scales[b] * Float(sum)
                #expect(Self.sameBits([kernel.factors[i * 12 + b]], [factor]), "\(type) row \(i) block \(b) factor")
                for (variant, prepared) in c {
                    #expect(prepared.sums[i * 12 + b] == sum && prepared.halves[i * 12 + b] == half
                                && Self.sameBits([prepared.factors[i * 12 + b]], [factor]),
                            "\(type) row \(i) block \(b) C \(variant)")
                }
            }
        }
        #expect(kernel.scales[3].isNaN && kernel.scales[4].isNaN && kernel.scales[1] == 0 && kernel.scales[6] == 0)
        #expect(kernel.values[192..<224].allSatisfy { $0 == 0 })
        #expect(kernel.values[0..<32].contains(32639) || kernel.values[0..<32].contains(-32639))
        #expect(kernel.values.allSatisfy { abs(Int($0)) <= 32639 })
    }

    @Test("every kernel matches the scalar reference and the others bit for bit: n 1...17, odd row counts, 1/2/3 threads",
          arguments: KernelTestData.blockFormats)
    func matchesReference(type: TensorType) {
        var rng = SplitMix64(seed: 0x16a ^ UInt64(type.rawValue))
        let pools = [KernelTestData.pool(1), KernelTestData.pool(2), KernelTestData.pool(3)]
        let shapes = [(1, 32), (7, 64), (13, 96), (67, 576), (9, 1536), (45, 192)]
        for (rows, columns) in shapes {
            let columns = KernelTestData.width(columns, type)
            let w = KernelTestData.matrix(type, rows: rows, columns: columns, &rng, padding: rows % 3 * 2)
            for n in [1, 2, 3, 5, 8, 9, 17] {
                let x = KernelTestData.floats(n * columns, &rng, scale: 2)
                let reference = ReferenceKernels.multiplyInt16(w, x: x, n: n)
                var first: [Float]?
                for kernel in Kernel.runnable {
                    for pool in pools where kernel != .portableC || pool.threadCount == 2 {
                        let y = Self.multiply(w, x, n: n, pool: pool, kernel: kernel)
                        let label = "\(type) \(rows)x\(columns) n=\(n) \(kernel) threads=\(pool.threadCount)"
                        if let first {
                            #expect(Self.sameBits(y, first), "\(label) differs from the Swift kernel")
                        } else {
                            first = y
                        }
                        KernelMatMulTests.check(w, x, n: n, y, reference: reference, label: label)
                    }
                }
            }
        }
    }

    @Test("stays within the int16 rounding bound of the exact fp32 product", arguments: KernelTestData.blockFormats)
    func roundingBound(type: TensorType) {
        KernelTestData.checkRoundingBound(type, inputs: .int16, seed: 0xb0b) { ReferenceKernels.quantizeInt16($0).scales }
    }

    @Test("a row alone, inside blocks of 2...33 rows, on 1/2/3 threads: bit-identical (Swift and VNNI kernels)",
          arguments: KernelTestData.blockFormats)
    func batchInvariant(type: TensorType) {
        for kernel in Kernel.runnable where kernel != .portableC {
            KernelTestData.checkBatchInvariance(type, seed: 0x16ba7, label: "int16 \(kernel)") { w, x, n, pool in
                Self.multiply(w, x, n: n, pool: pool, kernel: kernel)
            }
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
