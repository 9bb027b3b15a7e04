/// fp32 matrix products straight from the 32-value quantized blocks (Q8_0, Q4_0, Q4_1).
///
/// The activations stay exact fp32; only the weights are quantized, as the model file defines
/// them. A block is decoded once into four 8-lane vectors of small integers and reused for a tile
/// of input rows:
///
///     dot(w, x) over a block = d * sum(q * x)            (Q8_0, Q4_0 with q - 8 centred)
///                            = d * sum(q * x) + m * sum(x)   (Q4_1)
///
/// `sum(x)` per block and input row is computed once per call (`blockSums`).
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

    static func multiply(
        _ w: WeightMatrix, x: UnsafePointer<Float>, xStride: Int, n: Int,
        y: UnsafeMutablePointer<Float>, yStride: Int, pool: ThreadPool
    ) {
        switch w.type {
        case .q8_0: multiply(Q8_0Block.self, w, x: x, xStride: xStride, n: n, y: y, yStride: yStride, pool: pool)
        case .q4_0: multiply(Q4_0Block.self, w, x: x, xStride: xStride, n: n, y: y, yStride: yStride, pool: pool)
        case .q4_1: multiply(Q4_1Block.self, w, x: x, xStride: xStride, n: n, y: y, yStride: yStride, pool: pool)
        default: preconditionFailure("no block kernel for \(w.type)")
        }
    }

    private static func multiply<F: BlockFormat>(
        _ format: F.Type, _ w: WeightMatrix, x: UnsafePointer<Float>, xStride: Int, n: Int,
        y: UnsafeMutablePointer<Float>, yStride: Int, pool: ThreadPool
    ) {
        let blocks = w.columns / 32
        // Per-block sums of the inputs, in the pool's shared slot, for the offset formats.
        var sums: UnsafePointer<Float>? = nil
        if F.hasOffset {
            let s = pool.scratch(thread: pool.threadCount, bytes: 4 * max(1, n * blocks))
                .assumingMemoryBound(to: Float.self)
            blockSums(x: x, xStride: xStride, n: n, blocks: blocks, into: s)
            sums = UnsafePointer(s)
        }
        let chunk = MatMul.rowsPerTask(rows: w.rows, threads: pool.threadCount)
        let tasks = (w.rows + chunk - 1) / chunk
        pool.run(taskCount: tasks) { task in
            let rows = task * chunk..<min(w.rows, (task + 1) * chunk)
            var i = 0
            while i + tileRows <= n {
                for r in rows {
                    tile4(F.self, w.row(r), blocks: blocks, x: x + i * xStride, xStride: xStride,
                          sums: sums.map { $0 + i * blocks }, y: y + i * yStride + r, yStride: yStride)
                }
                i += tileRows
            }
            while i < n {
                for r in rows {
                    y[i * yStride + r] = single(
                        F.self, w.row(r), blocks: blocks, x: x + i * xStride, sums: sums.map { $0 + i * blocks })
                }
                i += 1
            }
        }
    }

    /// `sums[i * blocks + b]` = sum of input row i's values in block b (fixed order: 8 lanes, then
    /// `SIMDSupport.sum`).
    static func blockSums(
        x: UnsafePointer<Float>, xStride: Int, n: Int, blocks: Int, into sums: UnsafeMutablePointer<Float>
    ) {
        for i in 0..<n {
            for b in 0..<blocks {
                let p = x + i * xStride + 32 * b
                let v = (SIMDSupport.load8(p) + SIMDSupport.load8(p + 8))
                    + (SIMDSupport.load8(p + 16) + SIMDSupport.load8(p + 24))
                sums[i * blocks + b] = SIMDSupport.sum(v)
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
            total.addProduct(blockDot(q, x + 32 * b), SIMD8(repeating: F.scale(block)))
            if F.hasOffset { offset.addProduct(F.offset(block), sums.unsafelyUnwrapped[b]) }
        }
        return SIMDSupport.sum(total) + offset
    }

    @inline(__always)
    private static func tile4<F: BlockFormat>(
        _ format: F.Type, _ row: UnsafeRawPointer, blocks: Int, x: UnsafePointer<Float>, xStride: Int,
        sums: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>, yStride: Int
    ) {
        var t0 = SIMD8<Float>(), t1 = SIMD8<Float>(), t2 = SIMD8<Float>(), t3 = SIMD8<Float>()
        var o0: Float = 0, o1: Float = 0, o2: Float = 0, o3: Float = 0
        for b in 0..<blocks {
            let block = row + b * F.blockBytes
            let q = F.decode(block)
            let d = SIMD8<Float>(repeating: F.scale(block))
            let xb = x + 32 * b
            t0.addProduct(blockDot(q, xb), d)
            t1.addProduct(blockDot(q, xb + xStride), d)
            t2.addProduct(blockDot(q, xb + 2 * xStride), d)
            t3.addProduct(blockDot(q, xb + 3 * xStride), d)
            if F.hasOffset {
                let m = F.offset(block)
                let s = sums.unsafelyUnwrapped + b
                o0.addProduct(m, s[0])
                o1.addProduct(m, s[blocks])
                o2.addProduct(m, s[2 * blocks])
                o3.addProduct(m, s[3 * blocks])
            }
        }
        y[0] = SIMDSupport.sum(t0) + o0
        y[yStride] = SIMDSupport.sum(t1) + o1
        y[2 * yStride] = SIMDSupport.sum(t2) + o2
        y[3 * yStride] = SIMDSupport.sum(t3) + o3
    }
}

/// A block's 32 integer values as fp32, in column order (0-7, 8-15, 16-23, 24-31).
typealias DecodedBlock = (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>)

protocol BlockFormat {
    static var blockBytes: Int { get }
    static var hasOffset: Bool { get }
    static func decode(_ block: UnsafeRawPointer) -> DecodedBlock
    static func scale(_ block: UnsafeRawPointer) -> Float
    static func offset(_ block: UnsafeRawPointer) -> Float
}

extension BlockFormat {
    @inline(__always)
    static func scale(_ block: UnsafeRawPointer) -> Float { HalfPrecision.loadHalf(block) }
    @inline(__always)
    static func offset(_ block: UnsafeRawPointer) -> Float { 0 }
}

@inline(__always)
private func widen(_ bytes: SIMD8<UInt8>) -> SIMD8<Float> {
    SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: bytes))
}

@inline(__always)
private func widen(_ bytes: SIMD8<Int8>) -> SIMD8<Float> {
    SIMD8<Float>(SIMD8<Int32>(truncatingIfNeeded: bytes))
}

/// d (fp16), 32 x int8.
enum Q8_0Block: BlockFormat {
    static var blockBytes: Int { 34 }
    static var hasOffset: Bool { false }
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
    @inline(__always)
    static func decode(_ block: UnsafeRawPointer) -> DecodedBlock {
        let q = block.loadUnaligned(fromByteOffset: 2, as: SIMD16<UInt8>.self)
        let lo = SIMD16<Int8>(truncatingIfNeeded: q & 0x0f) &- 8
        let hi = SIMD16<Int8>(truncatingIfNeeded: q &>> 4) &- 8
        return (widen(lo.lowHalf), widen(lo.highHalf), widen(hi.lowHalf), widen(hi.highHalf))
    }
}

/// d, m (fp16), 16 bytes of nibbles as Q4_0; value q * d + m.
enum Q4_1Block: BlockFormat {
    static var blockBytes: Int { 20 }
    static var hasOffset: Bool { true }
    @inline(__always)
    static func decode(_ block: UnsafeRawPointer) -> DecodedBlock {
        let q = block.loadUnaligned(fromByteOffset: 4, as: SIMD16<UInt8>.self)
        let lo = q & 0x0f
        let hi = q &>> 4
        return (widen(lo.lowHalf), widen(lo.highHalf), widen(hi.lowHalf), widen(hi.highHalf))
    }
    @inline(__always)
    static func offset(_ block: UnsafeRawPointer) -> Float { HalfPrecision.loadHalf(block, 2) }
}
