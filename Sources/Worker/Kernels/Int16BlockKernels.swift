import CKernels
#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Matrix products of the block formats (Q8_0, Q4_0, Q4_1) with the activations rounded to 16-bit
/// integers per 32-column block (`MatMulInputs.int16`, the default of the forward pass).
///
/// Input row i's block b becomes 32 int16 values q_x = round-to-nearest-even(x * 32767 / max|x|)
/// with one fp32 scale s = max|x| / 32767. A value's rounding error is at most half a step, 2^-16
/// of the block's largest value: ~258 times finer than 8-bit activations (llama.cpp's), whose
/// rounding is large enough to flip near ties between two tokens. A weight block is decoded once into two 16-lane int16
/// vectors and reused for a tile of input rows:
///
///     dot(w, x) over a block ~ (d_w * s) * sum(q_w * q_x)                  (Q8_0; Q4_0 with q - 8)
///                            ~ (d_w * s) * sum(q_w * q_x) + m_w * sum(x)   (Q4_1; sum(x) of the fp32 x)
///
/// The integer products go through two `vpmaddwd` (pairwise int16 products summed into 8 int32
/// lanes) and one add: each lane sums four products, at most 4 * 128 * 32767 < 2^24, so the lane is
/// exact and so is its conversion to fp32, which is FMA'd with d_w * s into an 8-lane fp32 total.
///
/// Decoding avoids shuffles, as `BlockKernels` does, so the lanes hold columns in a per-format order
/// (`Int16BlockFormat.laneColumns`); `prepare` lays the quantized activations out in the same order.
///
/// Batch invariance: each output value goes through the same operations in the same order (`dot`,
/// one FMA per block, a scalar offset chain, `SIMDSupport.sum`) whichever tile computes it, and the
/// activations are quantized per row, so a row's result depends neither on `n` nor on the split.
enum Int16BlockKernels {
    /// The largest int16 magnitude used; the scale maps max|x| of a block to it.
    static let levels: Float = 32767

    static func multiply(
        _ products: MatMul.Products, x: UnsafePointer<Float>, xStride: Int, n: Int, pool: ThreadPool
    ) {
        switch products.first.weights.type {
        case .q8_0: multiply(Q8_0Block.self, products, x: x, xStride: xStride, n: n, pool: pool)
        case .q4_0: multiply(Q4_0Block.self, products, x: x, xStride: xStride, n: n, pool: pool)
        case .q4_1: multiply(Q4_1Block.self, products, x: x, xStride: xStride, n: n, pool: pool)
        default: preconditionFailure("no int16 block kernel for \(products.first.weights.type)")
        }
    }

    /// The quantized activations of one call, in the pool's shared scratch slot.
    struct Prepared {
        /// [n, columns] int16, each block's 32 values in `laneColumns` order.
        var values: UnsafePointer<Int16>
        /// [n, blocks]: each block's scale s, in all 8 lanes.
        var scales: UnsafePointer<SIMD8<Float>>
        /// [n, blocks]: each block's sum of the fp32 inputs (offset formats only).
        var sums: UnsafePointer<Float>?
    }

    private static func multiply<F: Int16BlockFormat>(
        _ format: F.Type, _ products: MatMul.Products, x: UnsafePointer<Float>, xStride: Int, n: Int,
        pool: ThreadPool
    ) {
        let columns = products.first.weights.columns
        let blocks = columns / 32
        // Scales [n, blocks] of 8 lanes, sums [n, blocks], then the values, each on a 64-byte boundary.
        let sumBytes = (4 * n * blocks + 63) / 64 * 64
        let shared = pool.scratch(thread: pool.threadCount, bytes: 32 * n * blocks + sumBytes + 2 * n * columns)
        let scales = shared.assumingMemoryBound(to: SIMD8<Float>.self)
        let sums = F.hasOffset ? (shared + 32 * n * blocks).assumingMemoryBound(to: Float.self) : nil
        let values = (shared + 32 * n * blocks + sumBytes).assumingMemoryBound(to: Int16.self)
        prepare(F.self, x: x, xStride: xStride, n: n, columns: columns, values: values, scales: scales, sums: sums)
        let p = Prepared(values: values, scales: scales, sums: sums.map { UnsafePointer($0) })

        MatMul.forEachChunk(products, pool: pool) { product, rows in
            let w = product.weights, y = product.y, yStride = product.yStride
            if n == 1 {
                // Fetch the row after next while this one is multiplied. Under tensor parallelism
                // the row-parallel O and down are column slices (strided parts of rows), which the
                // hardware prefetcher follows poorly: np = 2 decoding went from 1.06-1.17x to
                // 1.35-1.44x np = 1 (measured); one rank was unchanged within this VM's noise.
                // Past the matrix's end a prefetch is harmless.
                let lines = (w.rowBytes + 63) / 64
                for r in rows {
                    let ahead = w.row(r + 2)
                    for line in 0..<lines { ck_prefetch(ahead + 64 * line) }
                    y[r] = single(F.self, w.row(r), blocks: blocks, p, input: 0)
                }
                return
            }
            // Tiles of 4 input rows; the last 1-3 rows as a tile of 2 and/or one row (as `BlockKernels`).
            var i = 0
            while i + 4 <= n {
                for r in rows {
                    let out = tile4(F.self, w.row(r), blocks: blocks, p, first: i)
                    y[i * yStride + r] = out.0
                    y[(i + 1) * yStride + r] = out.1
                    y[(i + 2) * yStride + r] = out.2
                    y[(i + 3) * yStride + r] = out.3
                }
                i += 4
            }
            if i + 2 <= n {
                for r in rows {
                    let out = tile2(F.self, w.row(r), blocks: blocks, p, first: i)
                    y[i * yStride + r] = out.0
                    y[(i + 1) * yStride + r] = out.1
                }
                i += 2
            }
            if i < n {
                for r in rows { y[i * yStride + r] = single(F.self, w.row(r), blocks: blocks, p, input: i) }
            }
        }
    }

    /// Quantizes each input row's blocks to int16 (`values` [n, columns] in `F.laneColumns` order,
    /// `scales` [n, blocks], each in all 8 lanes: the kernels multiply it by the weight scale as a
    /// vector loaded from memory, which LLVM cannot turn back into a scalar product and a register
    /// broadcast, one shuffle-port operation more per block and input row) and, with `sums`, stores each block's sum of the fp32 inputs (fixed
    /// order: four 8-lane vectors added pairwise, then `SIMDSupport.sum`).
    ///
    /// A block that holds an infinity or NaN gets a NaN scale (and zero values), so its products are
    /// NaN as the fp32 path's would be, instead of trapping in the conversion.
    static func prepare<F: Int16BlockFormat>(
        _ format: F.Type, x: UnsafePointer<Float>, xStride: Int, n: Int, columns: Int,
        values: UnsafeMutablePointer<Int16>, scales: UnsafeMutablePointer<SIMD8<Float>>, sums: UnsafeMutablePointer<Float>?
    ) {
        let blocks = columns / 32
        F.laneColumns.withUnsafeBufferPointer { lanes in
            withUnsafeTemporaryAllocation(of: Int32.self, capacity: 32) { rounded in
                for i in 0..<n {
                    for b in 0..<blocks {
                        let p = x + i * xStride + 32 * b
                        let v = (SIMDSupport.load8(p), SIMDSupport.load8(p + 8),
                                 SIMDSupport.load8(p + 16), SIMDSupport.load8(p + 24))
                        let total = SIMDSupport.sum((v.0 + v.1) + (v.2 + v.3))
                        let largest = pointwiseMax(pointwiseMax(magnitude(v.0), magnitude(v.1)),
                                                   pointwiseMax(magnitude(v.2), magnitude(v.3))).max()
                        let finite = total.isFinite && largest.isFinite
                        let scale = finite ? largest / levels : .nan
                        let inverse: Float = finite && largest > 0 ? levels / largest : 0
                        let base = rounded.baseAddress!
                        for k in 0..<4 {
                            let part = k == 0 ? v.0 : (k == 1 ? v.1 : (k == 2 ? v.2 : v.3))
                            UnsafeMutableRawPointer(base + 8 * k).storeBytes(
                                of: roundToInt32(finite ? part * inverse : SIMD8()), as: SIMD8<Int32>.self)
                        }
                        let out = values + i * columns + 32 * b
                        for lane in 0..<32 { out[lane] = Int16(truncatingIfNeeded: base[lanes[lane]]) }
                        scales[i * blocks + b] = SIMD8(repeating: scale)
                        if let sums { sums[i * blocks + b] = total }
                    }
                }
            }
        }
    }

    /// |v| lane by lane (the sign bit cleared).
    @inline(__always)
    private static func magnitude(_ v: SIMD8<Float>) -> SIMD8<Float> {
        unsafeBitCast(unsafeBitCast(v, to: SIMD8<UInt32>.self) & 0x7fff_ffff, to: SIMD8<Float>.self)
    }

    /// Round to nearest, ties to even, of values within +-32767.5.
    @inline(__always)
    private static func roundToInt32(_ v: SIMD8<Float>) -> SIMD8<Int32> {
        #if arch(x86_64)
        // vcvtps2dq rounds by MXCSR, which Swift leaves at round-to-nearest-even.
        return unsafeBitCast(_mm256_cvtps_epi32(v), to: SIMD8<Int32>.self)
        #else
        return SIMD8<Int32>(v.rounded(.toNearestOrEven))
        #endif
    }

    /// sum(q_w * q_x) over one block, in 8 exact int32 lanes, converted to fp32.
    @inline(__always)
    static func dot(_ w: Int16Block, _ x: UnsafePointer<Int16>) -> SIMD8<Float> {
        let raw = UnsafeRawPointer(x)
        let a = raw.loadUnaligned(as: SIMD16<Int16>.self)
        let b = raw.loadUnaligned(fromByteOffset: 32, as: SIMD16<Int16>.self)
        return float(multiplyAddPairs(w.0, a) &+ multiplyAddPairs(w.1, b))
    }

    /// int32 -> fp32 lane by lane (exact below 2^24). On x86_64 through `vcvtdq2ps` directly: the
    /// generic SIMD conversion stayed an out-of-line call in the tiles, spilling every accumulator.
    @inline(__always)
    static func float(_ v: SIMD8<Int32>) -> SIMD8<Float> {
        #if arch(x86_64)
        return _mm256_cvtepi32_ps(unsafeBitCast(v, to: SIMD4<Int64>.self))
        #else
        return SIMD8<Float>(v)
        #endif
    }

    /// Lane j = a[2j] * b[2j] + a[2j + 1] * b[2j + 1], in int32 (`vpmaddwd`).
    @inline(__always)
    static func multiplyAddPairs(_ a: SIMD16<Int16>, _ b: SIMD16<Int16>) -> SIMD8<Int32> {
        #if arch(x86_64)
        let r = _mm256_madd_epi16(unsafeBitCast(a, to: SIMD4<Int64>.self), unsafeBitCast(b, to: SIMD4<Int64>.self))
        return unsafeBitCast(r, to: SIMD8<Int32>.self)
        #else
        let p = SIMD16<Int32>(truncatingIfNeeded: a) &* SIMD16<Int32>(truncatingIfNeeded: b)
        return p.evenHalf &+ p.oddHalf
        #endif
    }

    @inline(__always)
    private static func single<F: Int16BlockFormat>(
        _ format: F.Type, _ row: UnsafeRawPointer, blocks: Int, _ p: Prepared, input i: Int
    ) -> Float {
        let x = p.values + i * 32 * blocks, s = p.scales + i * blocks
        var total = SIMD8<Float>()
        var offset: Float = 0
        for b in 0..<blocks {
            let block = row + b * F.blockBytes
            let q = F.decodeInt16(block)
            let (d, m) = HalfPrecision.loadHalfPair(block)
            let dw = SIMD8<Float>(repeating: d)
            total.addProduct(dot(q, x + 32 * b), dw * s[b])
            if F.hasOffset { offset.addProduct(m, p.sums.unsafelyUnwrapped[i * blocks + b]) }
        }
        return SIMDSupport.sum(total) + offset
    }

    @inline(__always)
    private static func tile4<F: Int16BlockFormat>(
        _ format: F.Type, _ row: UnsafeRawPointer, blocks: Int, _ p: Prepared, first i: Int
    ) -> (Float, Float, Float, Float) {
        let columns = 32 * blocks
        let x0 = p.values + i * columns, x1 = x0 + columns, x2 = x1 + columns, x3 = x2 + columns
        let s0 = p.scales + i * blocks, s1 = s0 + blocks, s2 = s1 + blocks, s3 = s2 + blocks
        var t0 = SIMD8<Float>(), t1 = SIMD8<Float>(), t2 = SIMD8<Float>(), t3 = SIMD8<Float>()
        var o0: Float = 0, o1: Float = 0, o2: Float = 0, o3: Float = 0
        for b in 0..<blocks {
            let block = row + b * F.blockBytes
            let q = F.decodeInt16(block)
            let (d, m) = HalfPrecision.loadHalfPair(block)
            let dw = SIMD8<Float>(repeating: d)
            t0.addProduct(dot(q, x0 + 32 * b), dw * s0[b])
            t1.addProduct(dot(q, x1 + 32 * b), dw * s1[b])
            t2.addProduct(dot(q, x2 + 32 * b), dw * s2[b])
            t3.addProduct(dot(q, x3 + 32 * b), dw * s3[b])
            if F.hasOffset {
                let sum = p.sums.unsafelyUnwrapped + i * blocks + b
                o0.addProduct(m, sum[0])
                o1.addProduct(m, sum[blocks])
                o2.addProduct(m, sum[2 * blocks])
                o3.addProduct(m, sum[3 * blocks])
            }
        }
        return (SIMDSupport.sum(t0) + o0, SIMDSupport.sum(t1) + o1, SIMDSupport.sum(t2) + o2, SIMDSupport.sum(t3) + o3)
    }

    @inline(__always)
    private static func tile2<F: Int16BlockFormat>(
        _ format: F.Type, _ row: UnsafeRawPointer, blocks: Int, _ p: Prepared, first i: Int
    ) -> (Float, Float) {
        let columns = 32 * blocks
        let x0 = p.values + i * columns, x1 = x0 + columns
        let s0 = p.scales + i * blocks, s1 = s0 + blocks
        var t0 = SIMD8<Float>(), t1 = SIMD8<Float>()
        var o0: Float = 0, o1: Float = 0
        for b in 0..<blocks {
            let block = row + b * F.blockBytes
            let q = F.decodeInt16(block)
            let (d, m) = HalfPrecision.loadHalfPair(block)
            let dw = SIMD8<Float>(repeating: d)
            t0.addProduct(dot(q, x0 + 32 * b), dw * s0[b])
            t1.addProduct(dot(q, x1 + 32 * b), dw * s1[b])
            if F.hasOffset {
                let sum = p.sums.unsafelyUnwrapped + i * blocks + b
                o0.addProduct(m, sum[0])
                o1.addProduct(m, sum[blocks])
            }
        }
        return (SIMDSupport.sum(t0) + o0, SIMDSupport.sum(t1) + o1)
    }
}

/// A block's 32 integer values as int16: lanes 0-15 and 16-31 hold the columns `laneColumns` names.
typealias Int16Block = (SIMD16<Int16>, SIMD16<Int16>)

protocol Int16BlockFormat: BlockFormat {
    /// The block's integer values (q - 8 for Q4_0), without its scale (and minimum).
    static func decodeInt16(_ block: UnsafeRawPointer) -> Int16Block
    /// `laneColumns[k]`: the block column that lane k of `decodeInt16` holds (0..<32, each once).
    static var laneColumns: [Int] { get }
}

/// Q4 lanes: each 16-lane half holds the even columns of its 16 (0, 2, ..., 14), then the odd ones.
private let q4LaneColumns = (0..<32).map { lane in
    let j = lane % 16
    return 16 * (lane / 16) + (j < 8 ? 2 * j : 2 * (j - 8) + 1)
}

/// The 16 payload bytes in both halves as 32-bit words; each word shifted so that its int16 halves
/// take the low (`high` false) or high nibbles of bytes 4k and 4k + 2 (lanes 0-3) or 4k + 1 and
/// 4k + 3 (lanes 4-7): one variable shift and one mask per 16 values, no shuffles.
@inline(__always)
private func nibbles16(_ payload: UnsafeRawPointer, high: Bool) -> SIMD16<Int16> {
    let half = payload.loadUnaligned(as: SIMD4<UInt32>.self)
    let words = SIMD8<UInt32>(lowHalf: half, highHalf: half)
    let shifts = high ? SIMD8<UInt32>(4, 4, 4, 4, 12, 12, 12, 12) : SIMD8<UInt32>(0, 0, 0, 0, 8, 8, 8, 8)
    return unsafeBitCast((words &>> shifts) & 0x000f_000f, to: SIMD16<Int16>.self)
}

extension Q4_0Block: Int16BlockFormat {
    static var laneColumns: [Int] { q4LaneColumns }
    @inline(__always)
    static func decodeInt16(_ block: UnsafeRawPointer) -> Int16Block {
        (nibbles16(block + 2, high: false) &- 8, nibbles16(block + 2, high: true) &- 8)
    }
}

extension Q4_1Block: Int16BlockFormat {
    static var laneColumns: [Int] { q4LaneColumns }
    @inline(__always)
    static func decodeInt16(_ block: UnsafeRawPointer) -> Int16Block {
        (nibbles16(block + 4, high: false), nibbles16(block + 4, high: true))
    }
}

/// Q8_0 lanes: the even columns (0, 2, ..., 30), then the odd ones: the 32 bytes read as 16 words,
/// each word's low byte sign-extended by a shift pair and its high byte by one arithmetic shift.
private let q8LaneColumns = (0..<32).map { lane in lane < 16 ? 2 * lane : 2 * (lane - 16) + 1 }

extension Q8_0Block: Int16BlockFormat {
    static var laneColumns: [Int] { q8LaneColumns }
    @inline(__always)
    static func decodeInt16(_ block: UnsafeRawPointer) -> Int16Block {
        let words = block.loadUnaligned(fromByteOffset: 2, as: SIMD16<Int16>.self)
        return ((words &<< 8) &>> 8, words &>> 8)
    }
}
