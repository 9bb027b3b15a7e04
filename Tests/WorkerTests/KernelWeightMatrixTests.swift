import Testing
@testable import Worker

@Suite("WeightMatrix")
struct KernelWeightMatrixTests {
    @Test("row and column slices address the same values", arguments: KernelTestData.formats)
    func slices(type: TensorType) {
        var rng = SplitMix64(seed: 0x511ce ^ UInt64(type.rawValue))
        let w = KernelTestData.matrix(type, rows: 11, columns: 256, &rng, padding: 6)
        let full = (0..<w.rows).map { r in
            [Float](unsafeUninitializedCapacity: w.columns) { p, n in w.dequantizeRow(r, into: p.baseAddress!); n = w.columns }
        }
        let rowShard = w.rowSlice(3..<9)
        #expect(rowShard.rows == 6 && rowShard.columns == 256 && rowShard.rowStride == w.rowStride)
        let columnShard = w.columnSlice(64..<192)
        #expect(columnShard.rows == 11 && columnShard.columns == 128 && columnShard.rowStride == w.rowStride)
        for r in 0..<6 {
            var row = [Float](repeating: 0, count: 256)
            row.withUnsafeMutableBufferPointer { rowShard.dequantizeRow(r, into: $0.baseAddress!) }
            #expect(row == full[r + 3])
        }
        for r in 0..<11 {
            var row = [Float](repeating: 0, count: 128)
            row.withUnsafeMutableBufferPointer { columnShard.dequantizeRow(r, into: $0.baseAddress!) }
            #expect(row == Array(full[r][64..<192]))
        }
        // A slice of a slice, and matmul over it.
        let both = w.rowSlice(2..<10).columnSlice(32..<224).rowSlice(1..<5)
        var x = KernelTestData.floats(2 * 192, &rng)
        let pool = KernelTestData.pool(2)
        let y = KernelTestData.multiply(both, x, n: 2, pool: pool)
        x = x.map { $0 }  // keep x alive and unchanged for the reference
        for i in 0..<2 {
            for r in 0..<4 {
                var expected = 0.0
                for c in 0..<192 { expected += Double(x[i * 192 + c]) * Double(full[3 + r][32 + c]) }
                #expect(abs(Double(y[i * 4 + r]) - expected) <= KernelMatMulTests.tolerance(type, x[(i * 192)..<(i * 192 + 192)], full[3 + r][32..<224]))
            }
        }
    }

    @Test("the stride defaults to the packed row size")
    func defaultStride() {
        let w = WeightMatrix(type: .q4_1, rows: 2, columns: 64, base: UnsafeRawPointer(bitPattern: 64)!, owner: nil)
        #expect(w.rowStride == 40 && w.rowBytes == 40)
    }
}
