import Testing
@testable import Worker

@Suite("MatMul")
struct KernelMatMulTests {
    /// Allowed |fast - reference| for one output: fp32 accumulation error, relative to sum |x * w|.
    static func tolerance(_ type: TensorType, _ x: ArraySlice<Float>, _ w: ArraySlice<Float>) -> Double {
        var magnitude = 0.0
        for (a, b) in zip(x, w) { magnitude += abs(Double(a) * Double(b)) }
        return 1e-5 * magnitude + 1e-30
    }

    /// `y` within `tolerance` of `reference` (default: the exact fp32 product) for every output.
    static func check(_ w: WeightMatrix, _ x: [Float], n: Int, _ y: [Float], reference: [Float]? = nil, label: String) {
        let reference = reference ?? ReferenceKernels.multiply(w, x: x, n: n)
        for r in 0..<w.rows {
            var row = [Float](repeating: 0, count: w.columns)
            row.withUnsafeMutableBufferPointer { w.dequantizeRow(r, into: $0.baseAddress!) }
            for i in 0..<n {
                let error = abs(Double(y[i * w.rows + r]) - Double(reference[i * w.rows + r]))
                let allowed = tolerance(w.type, x[(i * w.columns)..<((i + 1) * w.columns)], row[...])
                #expect(error <= allowed, "\(label) row \(r) input \(i): error \(error) > \(allowed)")
            }
        }
    }

    @Test("matches the reference on odd shapes", arguments: KernelTestData.formats)
    func matchesReference(type: TensorType) {
        var rng = SplitMix64(seed: 0x3a7 ^ UInt64(type.rawValue))
        let pool = KernelTestData.pool(2)
        let shapes = [(1, 32), (7, 64), (13, 96), (67, 576), (9, 4096), (45, 1536)]
        for (rows, columns) in shapes {
            let columns = KernelTestData.width(columns, type)
            let w = KernelTestData.matrix(type, rows: rows, columns: columns, &rng, padding: rows % 3 * 2)
            for n in 1...9 {
                let x = KernelTestData.floats(n * columns, &rng, scale: 2)
                let y = KernelTestData.multiply(w, x, n: n, pool: pool)
                Self.check(w, x, n: n, y, label: "\(type) \(rows)x\(columns) n=\(n)")
            }
        }
    }

    @Test("F32/F16/BF16 accept columns that are not multiples of 8", arguments: [TensorType.f32, .f16, .bf16])
    func oddColumns(type: TensorType) {
        var rng = SplitMix64(seed: 0x0dd ^ UInt64(type.rawValue))
        let pool = KernelTestData.pool(3)
        for columns in [1, 5, 33, 77] {
            let w = KernelTestData.matrix(type, rows: 5, columns: columns, &rng)
            let x = KernelTestData.floats(3 * columns, &rng)
            Self.check(w, x, n: 3, KernelTestData.multiply(w, x, n: 3, pool: pool), label: "\(type) 5x\(columns)")
        }
    }

    @Test("honours strides and leaves the gaps alone", arguments: KernelTestData.formats)
    func strides(type: TensorType) {
        var rng = SplitMix64(seed: 0x57d ^ UInt64(type.rawValue))
        let pool = KernelTestData.pool(2)
        let (rows, columns, n) = (19, KernelTestData.width(128, type), 5)
        let (xStride, yStride) = (columns + 32, 23)
        let w = KernelTestData.matrix(type, rows: rows, columns: columns, &rng)
        let x = KernelTestData.floats(n * xStride, &rng)
        var y = [Float](repeating: -7, count: n * yStride)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                MatMul.multiply(w, x: xp.baseAddress!, xStride: xStride, n: n, y: yp.baseAddress!, yStride: yStride, pool: pool)
            }
        }
        var packedX = [Float]()
        for i in 0..<n { packedX += x[(i * xStride)..<(i * xStride + columns)] }
        let packed = KernelTestData.multiply(w, packedX, n: n, pool: pool)
        for i in 0..<n {
            #expect(Array(y[(i * yStride)..<(i * yStride + rows)]) == Array(packed[(i * rows)..<((i + 1) * rows)]))
            #expect(y[(i * yStride + rows)..<((i + 1) * yStride)].allSatisfy { $0 == -7 })
        }
    }

    @Test("n = 0 and empty shards do nothing")
    func empty() {
        var rng = SplitMix64(seed: 1)
        let pool = KernelTestData.pool(2)
        let w = KernelTestData.matrix(.q4_1, rows: 4, columns: 64, &rng)
        #expect(KernelTestData.multiply(w, [], n: 0, pool: pool).isEmpty)
        #expect(KernelTestData.multiply(w.rowSlice(2..<2), [Float](repeating: 1, count: 64), n: 1, pool: pool).isEmpty)
    }

    @Test("fused products (QKV, gate/up) equal separate calls bit for bit; mixed types fall back", arguments: KernelTestData.formats)
    func fusedProducts(type: TensorType) {
        var rng = SplitMix64(seed: 0xf05e ^ UInt64(type.rawValue))
        let pool = KernelTestData.pool(2)
        let columns = KernelTestData.width(96, type)
        let a = KernelTestData.matrix(type, rows: 37, columns: columns, &rng)
        let b = KernelTestData.matrix(type, rows: 9, columns: columns, &rng)
        let c = KernelTestData.matrix(type == .q8_0 ? .q4_1 : .q8_0, rows: 20, columns: columns, &rng)
        for n in [1, 3, 6] {
            let x = KernelTestData.floats(n * columns, &rng)
            let separate = [a, b, c].map { KernelTestData.multiply($0, x, n: n, pool: pool) }
            func run(_ matrices: [WeightMatrix]) -> [[Float]] {
                var o0 = [Float](repeating: .nan, count: n * matrices[0].rows)
                var o1 = [Float](repeating: .nan, count: n * matrices[1].rows)
                var o2 = [Float](repeating: .nan, count: n * (matrices.count == 3 ? matrices[2].rows : 0))
                x.withUnsafeBufferPointer { xp in
                    o0.withUnsafeMutableBufferPointer { y0 in
                        o1.withUnsafeMutableBufferPointer { y1 in
                            o2.withUnsafeMutableBufferPointer { y2 in
                                let first = MatMul.Product(matrices[0], y: y0.baseAddress!, yStride: matrices[0].rows)
                                let second = MatMul.Product(matrices[1], y: y1.baseAddress!, yStride: matrices[1].rows)
                                let third = matrices.count == 3
                                    ? MatMul.Product(matrices[2], y: y2.baseAddress!, yStride: matrices[2].rows) : nil
                                MatMul.multiply(.init(first, second, third), x: xp.baseAddress!, xStride: columns, n: n, pool: pool)
                            }
                        }
                    }
                }
                return matrices.count == 3 ? [o0, o1, o2] : [o0, o1]
            }
            // Same type: one fused job. With c (another type): the fallback, one job each.
            let fused = run([a, b])
            for k in 0..<2 {
                #expect(zip(fused[k], separate[k]).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(type) fused \(k) n=\(n)")
            }
            let outs = run([a, b, c])
            for k in 0..<3 {
                #expect(zip(outs[k], separate[k]).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(type) product \(k) n=\(n)")
            }
        }
    }
}

/// Row-parallel shards cut matrices by input columns on 32-value boundaries, which for the
/// K-quants fall inside 256-value super-blocks: every kernel reads such a slice's own groups with
/// its super-block's scales.
@Suite("Column slices")
struct KernelColumnSliceTests {
    @Test("a column slice from any 32-value group multiplies as its reference, with every input choice and kernel",
          arguments: KernelTestData.blockFormats)
    func slices(type: TensorType) {
        var rng = SplitMix64(seed: 0xc01 ^ UInt64(type.rawValue))
        let pool = KernelTestData.pool(2)
        let columns = KernelTestData.width(768, type), rows = 21, n = 3
        let w = KernelTestData.matrix(type, rows: rows, columns: columns, &rng, padding: 4)
        let cuts = [0, 96, 416, 448, columns]
        for (lo, hi) in zip(cuts, cuts.dropFirst()) {
            let slice = w.columnSlice(lo..<hi)
            #expect(slice.firstColumn == (type.blockSize == 256 ? lo % 256 : 0) && slice.columns == hi - lo)
            let x = KernelTestData.floats(n * slice.columns, &rng, scale: 2)
            let label = "\(type) columns \(lo)..<\(hi)"
            KernelMatMulTests.check(slice, x, n: n, KernelTestData.multiply(slice, x, n: n, pool: pool), label: "\(label) fp32")
            let int16 = ReferenceKernels.multiplyInt16(slice, x: x, n: n), int8 = ReferenceKernels.multiplyInt8(slice, x: x, n: n)
            var results: [(String, [Float], [Float])] = []
            for packed in [slice, slice.packedForVNNI()] {
                let kind = packed.packed == nil ? "rows" : "packed"
                results.append(("int16 \(kind)", KernelTestData.multiply(packed, x, n: n, pool: pool, inputs: .int16), int16))
                results.append(("int8 \(kind)", KernelTestData.multiply(packed, x, n: n, pool: pool, inputs: .int8), int8))
            }
            for (kind, y, reference) in results {
                KernelMatMulTests.check(slice, x, n: n, y, reference: reference, label: "\(label) \(kind)")
            }
            // The packed kernels compute the portable definition bit for bit.
            for k in [0, 1] where results.count == 4 {
                #expect(zip(results[k].1, results[k + 2].1).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(label) \(results[k + 2].0)")
            }
        }
    }
}
