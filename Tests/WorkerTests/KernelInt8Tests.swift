import Foundation
import Testing
import CKernels
@testable import Worker

/// The int8-activation block kernels (`MatMulInputs.int8`, C variants in `CKernels`) against their
/// scalar reference (`ReferenceKernels.multiplyInt8`), each other, and their batch invariance.
@Suite("MatMul int8 inputs")
struct KernelInt8Tests {
    /// The variants this CPU runs (the scalar one always).
    static let variants = Int8BlockKernels.Variant.allCases.filter(\.isSupported)

    /// The product with `variant`'s kernel: the VNNI kernel on the matrix packed for it.
    static func multiply(_ w: WeightMatrix, _ x: [Float], n: Int, pool: ThreadPool, variant: Int8BlockKernels.Variant) -> [Float] {
        let w = w.packedForVNNI(variant: variant)
        #expect((w.packed != nil) == (variant == .avx512VNNI))
        var y = [Float](repeating: .nan, count: n * w.rows)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                Int8BlockKernels.multiply(.init(.init(w, y: yp.baseAddress!, yStride: w.rows)), x: xp.baseAddress!,
                                          xStride: w.columns, n: n, pool: pool, variant: variant)
            }
        }
        return y
    }

    static func sameBits(_ a: [Float], _ b: [Float]) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern }
    }

    @Test("the forward pass uses the fastest variant this CPU runs")
    func variantChoice() {
        let best = Self.variants.last!
        #expect(IntegerKernels.variant.isSupported)
        #expect(IntegerKernels.variant == best || ProcessInfoHelper.overridden)
        #expect(Int8BlockKernels.Variant.allCases.map(\.rawValue) == [Int32(CK_ISA_SCALAR), Int32(CK_ISA_AVX512_VNNI)])
        #expect(Int8BlockKernels.Variant.portable.isSupported)
        print("int8 kernels: \(Self.variants.map(\.description).joined(separator: ", ")) supported; using \(IntegerKernels.variant)")
    }

    @Test("activations are quantized exactly as the reference does, for every weight format (zero, tiny and non-finite blocks too)")
    func quantization() {
        var rng = SplitMix64(seed: 0x8a71)
        let columns = 32 * 12, n = 11
        var x = KernelTestData.floats(n * columns, &rng, scale: 4)
        for j in 0..<32 { x[32 + j] = 0 }                   // an all-zero block
        for j in 0..<32 { x[64 + j] *= 1e-30 }              // tiny values
        for j in 0..<32 { x[96 + j] = j == 3 ? Float(bitPattern: 7) : 0 }  // ~1e-44: d subnormal, 1 / d overflows
        x[128 + 5] = .infinity                              // non-finite blocks
        x[160 + 31] = .nan
        for j in 0..<32 { x[192 + j] = j % 2 == 0 ? 0.5 : -0.5 }  // ties in magnitude
        for j in 0..<32 { x[224 + j] = Float(j - 16) * 127 / 16 / 2 + 0.25 }  // halves after scaling
        let memory = UnsafeMutableRawPointer.allocate(byteCount: Int8BlockKernels.preparedBytes(n: n, columns: columns), alignment: 64)
        defer { memory.deallocate() }
        for variant in Self.variants {
            let p = x.withUnsafeBufferPointer {
                Int8BlockKernels.prepare(x: $0.baseAddress!, xStride: columns, n: n, columns: columns, memory: memory,
                                         variant: variant)
            }
            Self.checkPrepared(p, x: x, n: n, columns: columns, variant: variant)
        }
    }

    static func checkPrepared(_ p: ck_inputs, x: [Float], n: Int, columns: Int, variant: Int8BlockKernels.Variant) {
        let blocks = columns / 32
        #expect(p.n == Int32(n) && p.stride == 16)
        for i in 0..<n {
            let reference = ReferenceKernels.quantizeInt8(x[(i * columns)..<((i + 1) * columns)])
            let values = (0..<columns).map { p.values[i * columns + $0] }
            #expect(values == reference.values, "\(variant) row \(i)")
            for b in 0..<blocks {
                let k = b * p.stride + i
                let d = p.scales[k], e = reference.scales[b]
                #expect(d.bitPattern == e.bitPattern || (d.isNaN && e.isNaN), "\(variant) row \(i) block \(b): \(d) vs \(e)")
                let sum = reference.values[(32 * b)..<(32 * b + 32)].reduce(Int32(0)) { $0 + Int32($1) }
                let half = reference.values[(32 * b)..<(32 * b + 16)].reduce(Int32(0)) { $0 + Int32($1) }
                #expect(p.sums[k] == sum && p.half_sums[k] == half)
                #expect(p.scaled_sums[k].bitPattern == (d * Float(sum)).bitPattern || d.isNaN)
            }
        }
        // Padding inputs (11...15) are zero.
        #expect((n..<16).allSatisfy { i in p.scales[i] == 0 && p.sums[i] == 0 })
        #expect(p.scales[1 * p.stride] == 0 && p.scales[3 * p.stride] == 0)
        #expect(p.scales[4 * p.stride].isNaN && p.scales[5 * p.stride].isNaN)
        #expect((0..<32).contains { abs(Int(p.values[$0])) == 127 })
    }

    @Test("every variant matches the scalar reference: n 1...17, odd row counts, 1/2/3 threads",
          arguments: KernelTestData.blockFormats)
    func matchesReference(type: TensorType) {
        var rng = SplitMix64(seed: 0x8a ^ UInt64(type.rawValue))
        let pools = [KernelTestData.pool(1), KernelTestData.pool(2), KernelTestData.pool(3)]
        let shapes = [(1, 32), (7, 64), (13, 96), (67, 576), (9, 1536), (45, 192)]
        for (rows, columns) in shapes {
            let columns = KernelTestData.width(columns, type)
            let w = KernelTestData.matrix(type, rows: rows, columns: columns, &rng, padding: rows % 3 * 2)
            for n in [1, 2, 3, 5, 8, 9, 17] {
                let x = KernelTestData.floats(n * columns, &rng, scale: 2)
                let reference = ReferenceKernels.multiplyInt8(w, x: x, n: n)
                var first: [Float]?
                for variant in Self.variants {
                    for pool in pools where variant != .portable || pool.threadCount == 2 {
                        let y = Self.multiply(w, x, n: n, pool: pool, variant: variant)
                        if let first {
                            #expect(Self.sameBits(y, first), "\(type) \(rows)x\(columns) n=\(n) \(variant) threads=\(pool.threadCount) differs from the scalar variant")
                        } else {
                            first = y
                        }
                        KernelMatMulTests.check(w, x, n: n, y, reference: reference,
                                                label: "\(type) \(rows)x\(columns) n=\(n) \(variant) threads=\(pool.threadCount)")
                    }
                }
            }
        }
    }

    @Test("stays within the int8 rounding bound of the exact fp32 product", arguments: KernelTestData.blockFormats)
    func roundingBound(type: TensorType) {
        let largest = KernelTestData.checkRoundingBound(type, inputs: .int8, seed: 0xb08) { ReferenceKernels.quantizeInt8($0).scales }
        #expect(largest > 0, "the int8 rounding shows")
    }

    @Test("a row alone, inside blocks of 2...33 rows, on 1/2/3 threads: bit-identical, every variant",
          arguments: KernelTestData.blockFormats)
    func batchInvariant(type: TensorType) {
        for variant in Self.variants where variant != .portable {
            KernelTestData.checkBatchInvariance(type, seed: 0x8ba7, label: "\(variant)") { w, x, n, pool in
                Self.multiply(w, x, n: n, pool: pool, variant: variant)
            }
        }
    }

    @Test("fused products (QKV, gate/up) equal separate calls bit for bit", arguments: KernelTestData.blockFormats)
    func fusedProducts(type: TensorType) {
        KernelTestData.checkFusedProducts(type, inputs: .int8, seed: 0x8f)
    }

    @Test("packed rows: as many bytes as the rows; kept by whole-matrix slices and by gathers, dropped by partial slices; 16-row padding")
    func packing() {
        guard Int8BlockKernels.Variant.avx512VNNI.isSupported else { return }
        var rng = SplitMix64(seed: 0x9ac)
        for type in KernelTestData.blockFormats {
            let columns = 2 * type.blockSize, format = IntegerKernels.format(type)
            let w = KernelTestData.matrix(type, rows: 35, columns: columns, &rng, padding: 6)
            let packed = w.packedForVNNI()
            #expect(packed.packed != nil && w.packed == nil)
            #expect(ck_packed_bytes(format, 35, 0, Int32(columns / 32)) == 3 * 16 * type.rowBytes(columns))
            if type.blockSize == 256 {
                // Groups 3 ... 10: 8 groups of two super-blocks, each with its header of scales.
                let slice = ck_packed_bytes(format, 16, 3, 8)
                #expect(slice > 16 * type.bytesPerBlock && slice < 2 * 16 * type.bytesPerBlock)
            }
            #expect(packed.rowSlice(0..<35).packed != nil && packed.columnSlice(0..<columns).packed != nil)
            #expect(packed.rowSlice(16..<35).packed == nil && packed.columnSlice(0..<32).packed == nil)
            let gathered = packed.gatheringRows([34, 0, 17])
            #expect(gathered.packed != nil && w.gatheringRows([1]).packed == nil)
            let x = KernelTestData.floats(3 * columns, &rng)
            let all = Self.multiply(w, x, n: 3, pool: KernelTestData.pool(2), variant: .portable)
            let some = Self.multiply(gathered, x, n: 3, pool: KernelTestData.pool(2), variant: .avx512VNNI)
            for i in 0..<3 {
                #expect(zip([34, 0, 17], some[(3 * i)..<(3 * i + 3)]).allSatisfy { all[i * 35 + $0].bitPattern == $1.bitPattern })
            }
            #expect(w.packedForVNNI(variant: .portable).packed == nil)
        }
        let f32 = KernelTestData.matrix(.f32, rows: 3, columns: 32, &rng)
        #expect(f32.packedForVNNI().packed == nil)
    }

    @Test("non-finite inputs give NaN, not a trap or garbage", arguments: KernelTestData.blockFormats)
    func nonFinite(type: TensorType) {
        var rng = SplitMix64(seed: 0x80f ^ UInt64(type.rawValue))
        let columns = KernelTestData.width(64, type)
        let w = KernelTestData.matrix(type, rows: 5, columns: columns, &rng)
        var x = KernelTestData.floats(2 * columns, &rng)
        x[columns + 6] = .infinity
        for variant in Self.variants {
            let y = Self.multiply(w, x, n: 2, pool: KernelTestData.pool(1), variant: variant)
            #expect(y[0..<5].allSatisfy(\.isFinite) && y[5..<10].allSatisfy(\.isNaN), "\(type) \(variant)")
        }
    }
}

enum ProcessInfoHelper {
    static var overridden: Bool { ProcessInfo.processInfo.environment["MEDUSA_INT_KERNELS"] != nil }
}
