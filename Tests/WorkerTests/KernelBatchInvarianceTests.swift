import Testing
@testable import Worker

/// A row's result must not depend on how many rows share the call nor on the thread split: Medusa's
/// greedy output must equal plain decoding (DESIGN.md section 6).
@Suite("Batch invariance")
struct KernelBatchInvarianceTests {
    @Test("a row alone, inside blocks of 2...64 rows, on 1/2/3 threads: bit-identical", arguments: KernelTestData.formats)
    func invariant(type: TensorType) {
        var rng = SplitMix64(seed: 0xba7c4 ^ UInt64(type.rawValue))
        let (rows, columns) = (75, KernelTestData.width(608, type))  // rows not a multiple of 8; 19 blocks of 32
        let w = KernelTestData.matrix(type, rows: rows, columns: columns, &rng)
        let total = 64
        let x = KernelTestData.floats(total * columns, &rng, scale: 3)
        let pools = [KernelTestData.pool(1), KernelTestData.pool(2), KernelTestData.pool(3)]

        // Each row alone, single thread.
        var alone = [Float]()
        for i in 0..<total {
            alone += KernelTestData.multiply(w, Array(x[(i * columns)..<((i + 1) * columns)]), n: 1, pool: pools[0])
        }
        for pool in pools {
            for n in [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64] {
                // Cover every row with blocks of n (the last block shorter), shifted by n / 2.
                var start = -(n / 2)
                while start < total {
                    let lo = max(0, start), hi = min(total, start + n)
                    let y = KernelTestData.multiply(w, Array(x[(lo * columns)..<(hi * columns)]), n: hi - lo, pool: pool)
                    let expected = Array(alone[(lo * rows)..<(hi * rows)])
                    let same = zip(y, expected).allSatisfy { $0.bitPattern == $1.bitPattern }
                    #expect(same, "\(type) threads=\(pool.threadCount) block n=\(n) rows \(lo)..<\(hi)")
                    start += n
                }
            }
        }
    }

    @Test("row-sliced shards reproduce the whole matrix bit for bit", arguments: KernelTestData.formats)
    func rowShards(type: TensorType) {
        var rng = SplitMix64(seed: 0x5a4d ^ UInt64(type.rawValue))
        let columns = KernelTestData.width(320, type)
        let w = KernelTestData.matrix(type, rows: 50, columns: columns, &rng)
        let x = KernelTestData.floats(6 * columns, &rng)
        let pool = KernelTestData.pool(2)
        let whole = KernelTestData.multiply(w, x, n: 6, pool: pool)
        for cut in [1, 17, 33, 49] {
            let a = KernelTestData.multiply(w.rowSlice(0..<cut), x, n: 6, pool: pool)
            let b = KernelTestData.multiply(w.rowSlice(cut..<50), x, n: 6, pool: pool)
            for i in 0..<6 {
                let joined = a[(i * cut)..<((i + 1) * cut)] + b[(i * (50 - cut))..<((i + 1) * (50 - cut))]
                #expect(zip(joined, whole[(i * 50)..<((i + 1) * 50)]).allSatisfy { $0.bitPattern == $1.bitPattern })
            }
        }
    }
}
