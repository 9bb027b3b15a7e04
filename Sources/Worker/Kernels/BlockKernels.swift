/// fp32 matrix products straight from the 32-value quantized blocks (Q8_0, Q4_0, Q4_1).
///
/// The activations stay exact fp32; only the weights are quantized, as the model file defines
/// them. A block is decoded once into four 8-lane vectors of small integers and reused for a tile
/// of input rows:
///
///     dot(w, x) over a block = d * sum(q * x)            (Q8_0, Q4_0 with q - 8 centred)
///                            = d * sum(q * x) + m * sum(x)   (Q4_1)
///
/// Decoding avoids shuffles, the scarce port on current x86 cores: a block's payload is loaded as
/// 8-byte broadcasts and each 32-bit lane picks its byte or nibble with a per-lane variable shift.
/// That puts the values in a fixed permuted column order within each 8-lane vector (`lanePermutation`),
/// so the activations are copied once per call into the same order (`prepare`), with `sum(x)` per
/// block and input row for the offset format.
///
/// Batch invariance: every output value goes through the same operations in the same order
/// whichever tile computed it (`blockDot`, one FMA per block into an 8-lane total, a scalar offset
/// chain, `SIMDSupport.sum`), so a row's result does not depend on `n` or on the thread split.
enum BlockKernels {
    /// Input rows sharing one decoded block.
    static let tileRows = 4

    /// Whether `type` has a block kernel here.
    static func handles(_ type: TensorType) -> Bool {
        type == .q8_0 || type == .q4_0 || type == .q4_1
    }

    /// The products of up to three matrices of one type and width with the same inputs, in one
    /// job of the pool (the inputs are prepared once; QKV and gate/up are fused this way).
    static func multiply(
        _ products: MatMul.Products, x: UnsafePointer<Float>, xStride: Int, n: Int, pool: ThreadPool
    ) {
        switch products.first.weights.type {
        case .q8_0: multiply(Q8_0Block.self, products, x: x, xStride: xStride, n: n, pool: pool)
        case .q4_0: multiply(Q4_0Block.self, products, x: x, xStride: xStride, n: n, pool: pool)
        case .q4_1: multiply(Q4_1Block.self, products, x: x, xStride: xStride, n: n, pool: pool)
        default: preconditionFailure("no block kernel for \(products.first.weights.type)")
        }
    }

    private static func multiply<F: BlockFormat>(
        _ format: F.Type, _ products: MatMul.Products, x: UnsafePointer<Float>, xStride: Int, n: Int,
        pool: ThreadPool
    ) {
        let columns = products.first.weights.columns
        let blocks = columns / 32
        let xp: UnsafePointer<Float>, stride: Int, sums: UnsafePointer<Float>?
        if F.permutesLanes {
            // Permuted inputs [n, columns], then per-block sums [n, blocks], in the pool's shared slot.
            let shared = pool.scratch(thread: pool.threadCount, bytes: 4 * n * (columns + blocks))
                .assumingMemoryBound(to: Float.self)
            prepare(x: x, xStride: xStride, n: n, columns: columns, into: shared,
                    sums: F.hasOffset ? shared + n * columns : nil)
            (xp, stride) = (UnsafePointer(shared), columns)
            sums = F.hasOffset ? UnsafePointer(shared + n * columns) : nil
        } else {
            precondition(!F.hasOffset, "offset formats take their block sums from prepare")
            (xp, stride, sums) = (x, xStride, nil)
        }
        MatMul.forEachChunk(products, pool: pool) { product, rows in
            let w = product.weights, y = product.y, yStride = product.yStride
            if n == 1 {
                for r in rows {
                    y[r] = single(F.self, w.row(r), blocks: blocks, x: xp, sums: sums)
                }
                return
            }
            // Tiles of 4 input rows; the last 1-3 rows as a tile of 2 and/or one row, so no row is
            // computed twice (each row's arithmetic is the same in every tile).
            var i = 0
            while i + tileRows <= n {
                let inputs = SIMD4<Int>(i, i + 1, i + 2, i + 3)
                for r in rows {
                    let out = tile4(F.self, w.row(r), blocks: blocks, x: xp, xStride: stride, sums: sums, inputs: inputs)
                    y[i * yStride + r] = out.0
                    y[(i + 1) * yStride + r] = out.1
                    y[(i + 2) * yStride + r] = out.2
                    y[(i + 3) * yStride + r] = out.3
                }
                i += tileRows
            }
            if i + 2 <= n {
                for r in rows {
                    let out = tile2(F.self, w.row(r), blocks: blocks, x: xp, xStride: stride, sums: sums, first: i)
                    y[i * yStride + r] = out.0
                    y[(i + 1) * yStride + r] = out.1
                }
                i += 2
            }
            if i < n {
                let x = xp + i * stride, rowSums = sums.map { $0 + i * blocks }
                for r in rows {
                    y[i * yStride + r] = single(F.self, w.row(r), blocks: blocks, x: x, sums: rowSums)
                }
            }
        }
    }

    /// Within every 8 columns, the column lane j of a decoded vector holds: 0, 4, 1, 5, 2, 6, 3, 7.
    static let lanePermutation = [0, 4, 1, 5, 2, 6, 3, 7]

    /// Copies each input row into `out` [n, columns] with every 8 columns in `lanePermutation` order;
    /// with `sums`, also `sums[i * blocks + b]`, the sum of row i's values in block b (fixed order:
    /// four 8-lane vectors added pairwise, then `SIMDSupport.sum`).
    static func prepare(
        x: UnsafePointer<Float>, xStride: Int, n: Int, columns: Int, into out: UnsafeMutablePointer<Float>,
        sums: UnsafeMutablePointer<Float>?
    ) {
        let blocks = columns / 32
        for i in 0..<n {
            let row = x + i * xStride
            let dst = out + i * columns
            for b in 0..<blocks {
                var v = (SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>())
                for k in 0..<4 {
                    let p = row + 32 * b + 8 * k
                    let permuted = SIMD8<Float>(p[0], p[4], p[1], p[5], p[2], p[6], p[3], p[7])
                    UnsafeMutableRawPointer(dst + 32 * b + 8 * k).storeBytes(of: permuted, as: SIMD8<Float>.self)
                    switch k {
                    case 0: v.0 = permuted
                    case 1: v.1 = permuted
                    case 2: v.2 = permuted
                    default: v.3 = permuted
                    }
                }
                if let sums { sums[i * blocks + b] = SIMDSupport.sum((v.0 + v.1) + (v.2 + v.3)) }
            }
        }
    }

    /// sum over the block of q * x, 8 lanes wide: the one place block products are formed.
    @inline(__always)
    static func blockDot(_ q: DecodedBlock, _ x: UnsafePointer<Float>) -> SIMD8<Float> {
        var acc = q.0 * SIMDSupport.load8(x)
        acc.addProduct(q.1, SIMDSupport.load8(x + 8))
        acc.addProduct(q.2, SIMDSupport.load8(x + 16))
        acc.addProduct(q.3, SIMDSupport.load8(x + 24))
        return acc
    }

    @inline(__always)
    private static func single<F: BlockFormat>(
        _ format: F.Type, _ row: UnsafeRawPointer, blocks: Int, x: UnsafePointer<Float>, sums: UnsafePointer<Float>?
    ) -> Float {
        var total = SIMD8<Float>()
        var offset: Float = 0
        for b in 0..<blocks {
            let block = row + b * F.blockBytes
            let q = F.decode(block)
            let (d, m) = HalfPrecision.loadHalfPair(block)
            total.addProduct(blockDot(q, x + 32 * b), SIMD8(repeating: d))
            if F.hasOffset { offset.addProduct(m, sums.unsafelyUnwrapped[b]) }
        }
        return SIMDSupport.sum(total) + offset
    }

    @inline(__always)
    private static func tile4<F: BlockFormat>(
        _ format: F.Type, _ row: UnsafeRawPointer, blocks: Int, x: UnsafePointer<Float>, xStride: Int,
        sums: UnsafePointer<Float>?, inputs: SIMD4<Int>
    ) -> (Float, Float, Float, Float) {
        let x0 = x + inputs[0] * xStride, x1 = x + inputs[1] * xStride
        let x2 = x + inputs[2] * xStride, x3 = x + inputs[3] * xStride
        var t0 = SIMD8<Float>(), t1 = SIMD8<Float>(), t2 = SIMD8<Float>(), t3 = SIMD8<Float>()
        var o0: Float = 0, o1: Float = 0, o2: Float = 0, o3: Float = 0
        for b in 0..<blocks {
            let block = row + b * F.blockBytes
            let q = F.decode(block)
            let (scale, m) = HalfPrecision.loadHalfPair(block)
            let d = SIMD8<Float>(repeating: scale)
            t0.addProduct(blockDot(q, x0 + 32 * b), d)
            t1.addProduct(blockDot(q, x1 + 32 * b), d)
            t2.addProduct(blockDot(q, x2 + 32 * b), d)
            t3.addProduct(blockDot(q, x3 + 32 * b), d)
            if F.hasOffset {
                let s = sums.unsafelyUnwrapped + b
                o0.addProduct(m, s[inputs[0] * blocks])
                o1.addProduct(m, s[inputs[1] * blocks])
                o2.addProduct(m, s[inputs[2] * blocks])
                o3.addProduct(m, s[inputs[3] * blocks])
            }
        }
        return (SIMDSupport.sum(t0) + o0, SIMDSupport.sum(t1) + o1, SIMDSupport.sum(t2) + o2, SIMDSupport.sum(t3) + o3)
    }
    @inline(__always)
    private static func tile2<F: BlockFormat>(
        _ format: F.Type, _ row: UnsafeRawPointer, blocks: Int, x: UnsafePointer<Float>, xStride: Int,
        sums: UnsafePointer<Float>?, first: Int
    ) -> (Float, Float) {
        let x0 = x + first * xStride, x1 = x0 + xStride
        var t0 = SIMD8<Float>(), t1 = SIMD8<Float>()
        var o0: Float = 0, o1: Float = 0
        for b in 0..<blocks {
            let block = row + b * F.blockBytes
            let q = F.decode(block)
            let (scale, m) = HalfPrecision.loadHalfPair(block)
            let d = SIMD8<Float>(repeating: scale)
            t0.addProduct(blockDot(q, x0 + 32 * b), d)
            t1.addProduct(blockDot(q, x1 + 32 * b), d)
            if F.hasOffset {
                let s = sums.unsafelyUnwrapped + b
                o0.addProduct(m, s[first * blocks])
                o1.addProduct(m, s[(first + 1) * blocks])
            }
        }
        return (SIMDSupport.sum(t0) + o0, SIMDSupport.sum(t1) + o1)
    }
}

/// A block's 32 integer values as fp32: columns 0-7, 8-15, 16-23, 24-31 (each 8 in
/// `lanePermutation` order when the format `permutesLanes`).
typealias DecodedBlock = (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>)

protocol BlockFormat {
    static var blockBytes: Int { get }
    static var hasOffset: Bool { get }
    /// Whether `decode` returns each 8 columns in `lanePermutation` order (else in column order).
    static var permutesLanes: Bool { get }
    /// Every format starts with its fp16 scale d; Q4_1 follows it with its fp16 minimum m.
    static func decode(_ block: UnsafeRawPointer) -> DecodedBlock
}

/// Bytes 0-7 of `p` in every pair of 32-bit lanes: lane j holds bytes 4 (j % 2) ..< 4 (j % 2) + 4.
@inline(__always)
private func broadcast8(_ p: UnsafeRawPointer) -> SIMD8<UInt32> {
    unsafeBitCast(SIMD4<UInt64>(repeating: p.loadUnaligned(as: UInt64.self)), to: SIMD8<UInt32>.self)
}

/// Shifts that bring byte j / 2 of lane j's word to the bottom: lanes read bytes 0, 4, 1, 5, 2, 6, 3, 7.
private let byteShifts = SIMD8<UInt32>(0, 0, 8, 8, 16, 16, 24, 24)

/// The low nibbles (`high` false) or high nibbles of 8 bytes at `p`, in `lanePermutation` order.
@inline(__always)
private func nibbles(_ words: SIMD8<UInt32>, high: Bool) -> SIMD8<Int32> {
    SIMD8<Int32>(truncatingIfNeeded: (words &>> (high ? byteShifts &+ 4 : byteShifts)) & 0x0f)
}

/// d (fp16), 32 x int8, decoded in column order by sign extension (measured faster here than
/// the shift decode: a byte needs no masking, and the LM head is large enough to stream).
enum Q8_0Block: BlockFormat {
    static var blockBytes: Int { 34 }
    static var hasOffset: Bool { false }
    static var permutesLanes: Bool { false }
    @inline(__always)
    private static func widen(_ bytes: SIMD8<Int8>) -> SIMD8<Float> {
        SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: bytes))
    }
    @inline(__always)
    static func decode(_ block: UnsafeRawPointer) -> DecodedBlock {
        let a = block.loadUnaligned(fromByteOffset: 2, as: SIMD16<Int8>.self)
        let b = block.loadUnaligned(fromByteOffset: 18, as: SIMD16<Int8>.self)
        return (widen(a.lowHalf), widen(a.highHalf), widen(b.lowHalf), widen(b.highHalf))
    }
}

/// d (fp16), 16 bytes: value j in the low nibble of byte j, value j + 16 in the high nibble; q - 8.
enum Q4_0Block: BlockFormat {
    static var blockBytes: Int { 18 }
    static var hasOffset: Bool { false }
    static var permutesLanes: Bool { true }
    @inline(__always)
    static func decode(_ block: UnsafeRawPointer) -> DecodedBlock {
        let a = broadcast8(block + 2), b = broadcast8(block + 10)
        return (SIMD8<Float>(nibbles(a, high: false) &- 8), SIMD8<Float>(nibbles(b, high: false) &- 8),
                SIMD8<Float>(nibbles(a, high: true) &- 8), SIMD8<Float>(nibbles(b, high: true) &- 8))
    }
}

/// d, m (fp16), 16 bytes of nibbles as Q4_0; value q * d + m.
enum Q4_1Block: BlockFormat {
    static var blockBytes: Int { 20 }
    static var hasOffset: Bool { true }
    static var permutesLanes: Bool { true }
    @inline(__always)
    static func decode(_ block: UnsafeRawPointer) -> DecodedBlock {
        let a = broadcast8(block + 4), b = broadcast8(block + 12)
        return (SIMD8<Float>(nibbles(a, high: false)), SIMD8<Float>(nibbles(b, high: false)),
                SIMD8<Float>(nibbles(a, high: true)), SIMD8<Float>(nibbles(b, high: true)))
    }
}
