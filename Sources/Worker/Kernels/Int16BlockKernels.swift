import CKernels
#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Matrix products of the block formats (Q8_0, Q4_0, Q4_1) with the activations rounded to 16-bit
/// integers per 32-column block (`MatMulInputs.int16`, the default of the forward pass).
///
/// Input row i's block b becomes 32 int16 values q_x = round-to-nearest-even(x * L / max|x|) with
/// one fp32 scale s = max|x| / L, L = 32639 (`CK_INT16_LEVELS`: 127 * 256 + 127, so that each q_x
/// splits into two signed bytes for the VNNI kernel). A value's rounding error is at most half a
/// step, ~2^-16 of the block's largest value: ~257 times finer than 8-bit activations
/// (llama.cpp's), whose rounding is large enough to flip near ties between two tokens. Per output
/// and block, in block order, with t the exact integer sum(q_w * q_x) (Q4_0: q_w = q - 8):
///
///     acc = fma(float(t) * s, d_w, acc)          then, Q4_1 only: acc = fma(m_w, s * sum(q_x), acc)
///
/// which is the int8 kernels' definition (`ck_multiply`) with wider inputs. Two implementations
/// compute it bit for bit (integers are exact in any order; the fp32 operations are the same):
/// - on AVX-512 VNNI CPUs, the C kernel on weights packed at load time (`WeightMatrix.packedForVNNI`,
///   `ck_multiply_packed`): 16 rows in the lanes, two `vpdpbusd` per 4-column chunk (the high and
///   the low bytes of q_x), a weight block read once for up to 8 inputs;
/// - elsewhere (and on unpacked matrices) the Swift kernels below on the files' rows: a weight block
///   decoded once into two 16-lane int16 vectors, two `vpmaddwd` per input (8 exact int32 lanes),
///   and the lanes of four blocks (one row, four inputs; or four rows, one input) summed together
///   by `vphaddd`, so that the fp32 operations run four outputs to a vector.
///
/// Decoding avoids shuffles, as `BlockKernels` does, so the lanes hold columns in a per-format order
/// (`Int16BlockFormat.laneColumns`); `prepare` lays the quantized activations out in the same order.
///
/// Batch invariance: each output value goes through the same operations in the same order whichever
/// tile computes it, and the activations are quantized per row, so a row's result depends neither
/// on `n` nor on the split.
enum Int16BlockKernels {
    /// The largest int16 magnitude used; the scale maps max|x| of a block to it.
    static let levels = Float(CK_INT16_LEVELS)

    static func multiply(
        _ products: MatMul.Products, x: UnsafePointer<Float>, xStride: Int, n: Int, pool: ThreadPool,
        variant: IntegerKernels.Variant = IntegerKernels.variant
    ) {
        if IntegerKernels.readsPacked(products, variant: variant) {
            IntegerKernels.multiply(bits: 16, products, x: x, xStride: xStride, n: n, pool: pool, variant: variant)
            return
        }
        switch products.first.weights.type {
        case .q8_0: multiply(Q8_0Block.self, products, x: x, xStride: xStride, n: n, pool: pool)
        case .q4_0: multiply(Q4_0Block.self, products, x: x, xStride: xStride, n: n, pool: pool)
        case .q4_1: multiply(Q4_1Block.self, products, x: x, xStride: xStride, n: n, pool: pool)
        default:
            // The other formats have no Swift kernel: the portable C definition on the rows.
            IntegerKernels.multiply(bits: 16, products, x: x, xStride: xStride, n: n, pool: pool, variant: .portable)
        }
    }

    /// The quantized activations of one call, in the pool's shared scratch slot.
    struct Prepared {
        var n: Int
        /// [n, columns] int16, each block's 32 values in `laneColumns` order.
        var values: UnsafePointer<Int16>
        /// [blocks, n] (block-major): each block's scale s.
        var scales: UnsafePointer<Float>
        /// [blocks, n]: each block's s * sum(q_x) (offset formats only).
        var minimumFactors: UnsafePointer<Float>?
    }

    private static func multiply<F: Int16BlockFormat>(
        _ format: F.Type, _ products: MatMul.Products, x: UnsafePointer<Float>, xStride: Int, n: Int,
        pool: ThreadPool
    ) {
        let columns = products.first.weights.columns
        let blocks = columns / 32
        // Scales [blocks, n], minimum factors [blocks, n], then the values, each on a 64-byte boundary.
        let tableBytes = (4 * n * blocks + 63) / 64 * 64
        let shared = pool.scratch(thread: pool.threadCount, bytes: 2 * tableBytes + 2 * n * columns)
        let scales = shared.assumingMemoryBound(to: Float.self)
        let factors = F.hasOffset ? (shared + tableBytes).assumingMemoryBound(to: Float.self) : nil
        let values = (shared + 2 * tableBytes).assumingMemoryBound(to: Int16.self)
        prepare(F.self, x: x, xStride: xStride, n: n, columns: columns, values: values, scales: scales,
                minimumFactors: factors)
        let p = Prepared(n: n, values: values, scales: scales, minimumFactors: factors.map { UnsafePointer($0) })

        MatMul.forEachChunk(products, pool: pool) { product, rows in
            let w = product.weights, y = product.y, yStride = product.yStride
            // Tiles of 4 inputs on one row; the last 1-3 inputs two or one at a time on 4 rows together.
            var i = 0
            while i + 4 <= n {
                for r in rows {
                    let out = inputs4(F.self, w.row(r), blocks: blocks, p, first: i)
                    y[i * yStride + r] = out[0]
                    y[(i + 1) * yStride + r] = out[1]
                    y[(i + 2) * yStride + r] = out[2]
                    y[(i + 3) * yStride + r] = out[3]
                }
                i += 4
            }
            while i < n {
                let pair = i + 1 < n
                var r = rows.lowerBound
                while r + 4 <= rows.upperBound {
                    // Fetch the rows after the next four while these are multiplied: four rows read
                    // side by side are streams the hardware prefetcher follows poorly, and so are the
                    // row-parallel O and down under tensor parallelism (column slices: strided parts
                    // of rows). Past the matrix's end a prefetch is harmless.
                    if n <= 2 {
                        let lines = (w.rowBytes + 63) / 64
                        for ahead in (r + 8)..<(r + 12) {
                            let row = w.row(ahead)
                            for line in 0..<lines { ck_prefetch(row + 64 * line) }
                        }
                    }
                    if pair {
                        let out = rows4(F.self, 2, w, first: r, blocks: blocks, p, input: i)
                        for k in 0..<4 {
                            y[i * yStride + r + k] = out.0[k]
                            y[(i + 1) * yStride + r + k] = out.1[k]
                        }
                    } else {
                        let out = rows4(F.self, 1, w, first: r, blocks: blocks, p, input: i)
                        for k in 0..<4 { y[i * yStride + r + k] = out.0[k] }
                    }
                    r += 4
                }
                while r < rows.upperBound {
                    y[i * yStride + r] = single(F.self, w.row(r), blocks: blocks, p, input: i)
                    if pair { y[(i + 1) * yStride + r] = single(F.self, w.row(r), blocks: blocks, p, input: i + 1) }
                    r += 1
                }
                i += pair ? 2 : 1
            }
        }
    }

    /// Quantizes each input row's blocks to int16: `values` [n, columns] in `F.laneColumns` order,
    /// `scales` [blocks, n] and, with `minimumFactors`, s * sum(q_x) [blocks, n]. The same values
    /// as `ck_prepare` at 16 bits: a block that holds an infinity or NaN gets a NaN scale and zero
    /// values (its products are NaN, as the fp32 path's would be); a block whose inverse scale
    /// overflows (tiny values) gets scale 0 and zero values.
    static func prepare<F: Int16BlockFormat>(
        _ format: F.Type, x: UnsafePointer<Float>, xStride: Int, n: Int, columns: Int,
        values: UnsafeMutablePointer<Int16>, scales: UnsafeMutablePointer<Float>,
        minimumFactors: UnsafeMutablePointer<Float>?
    ) {
        let blocks = columns / 32
        F.laneColumns.withUnsafeBufferPointer { lanes in
            withUnsafeTemporaryAllocation(of: Int32.self, capacity: 32) { rounded in
                for i in 0..<n {
                    for b in 0..<blocks {
                        let p = x + i * xStride + 32 * b
                        let v = (SIMDSupport.load8(p), SIMDSupport.load8(p + 8),
                                 SIMDSupport.load8(p + 16), SIMDSupport.load8(p + 24))
                        // x - x is 0 exactly when x is finite.
                        let finite = ((v.0 - v.0) + (v.1 - v.1) + (v.2 - v.2) + (v.3 - v.3)) == SIMD8()
                        let largest = finite
                            ? pointwiseMax(pointwiseMax(magnitude(v.0), magnitude(v.1)),
                                           pointwiseMax(magnitude(v.2), magnitude(v.3))).max()
                            : 0
                        var scale = finite ? largest / levels : .nan
                        let inverse: Float = finite && largest > 0 ? levels / largest : 0
                        let usable = finite && inverse.isFinite
                        if finite && !usable { scale = 0 }
                        let base = rounded.baseAddress!
                        var total = SIMD8<Int32>()
                        for k in 0..<4 {
                            let part = k == 0 ? v.0 : (k == 1 ? v.1 : (k == 2 ? v.2 : v.3))
                            let q = usable ? roundToInt32(part * inverse) : SIMD8()
                            total &+= q
                            UnsafeMutableRawPointer(base + 8 * k).storeBytes(of: q, as: SIMD8<Int32>.self)
                        }
                        let out = values + i * columns + 32 * b
                        for lane in 0..<32 { out[lane] = Int16(truncatingIfNeeded: base[lanes[lane]]) }
                        scales[b * n + i] = scale
                        if let minimumFactors { minimumFactors[b * n + i] = scale * Float(total.wrappedSum()) }
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

    /// Round to nearest, ties to even, of values within +-32639.5.
    @inline(__always)
    private static func roundToInt32(_ v: SIMD8<Float>) -> SIMD8<Int32> {
        #if arch(x86_64)
        // vcvtps2dq rounds by MXCSR, which Swift leaves at round-to-nearest-even.
        return unsafeBitCast(_mm256_cvtps_epi32(v), to: SIMD8<Int32>.self)
        #else
        return SIMD8<Int32>(v.rounded(.toNearestOrEven))
        #endif
    }

    /// sum(q_w * q_x) over one block in 8 exact int32 lanes (each sums four products, at most
    /// 4 * 128 * 32639 < 2^24).
    @inline(__always)
    static func dot(_ w: Int16Block, _ x: UnsafePointer<Int16>) -> SIMD8<Int32> {
        let raw = UnsafeRawPointer(x)
        let a = raw.loadUnaligned(as: SIMD16<Int16>.self)
        let b = raw.loadUnaligned(fromByteOffset: 32, as: SIMD16<Int16>.self)
        return multiplyAddPairs(w.0, a) &+ multiplyAddPairs(w.1, b)
    }

    /// The lane sums of four vectors (exact integers): (sum a, sum b, sum c, sum d), by three `vphaddd`.
    @inline(__always)
    static func sums(_ a: SIMD8<Int32>, _ b: SIMD8<Int32>, _ c: SIMD8<Int32>, _ d: SIMD8<Int32>) -> SIMD4<Int32> {
        #if arch(x86_64)
        func m(_ v: SIMD8<Int32>) -> SIMD4<Int64> { unsafeBitCast(v, to: SIMD4<Int64>.self) }
        let all = unsafeBitCast(_mm256_hadd_epi32(_mm256_hadd_epi32(m(a), m(b)), _mm256_hadd_epi32(m(c), m(d))),
                                to: SIMD8<Int32>.self)
        return all.lowHalf &+ all.highHalf
        #else
        return SIMD4(a.wrappedSum(), b.wrappedSum(), c.wrappedSum(), d.wrappedSum())
        #endif
    }

    /// int32 -> fp32 lane by lane (rounded to nearest even above 2^24). On x86_64 through
    /// `vcvtdq2ps` directly: the generic SIMD conversion can stay an out-of-line call.
    @inline(__always)
    static func float(_ v: SIMD4<Int32>) -> SIMD4<Float> {
        #if arch(x86_64)
        return _mm_cvtepi32_ps(unsafeBitCast(v, to: SIMD2<Int64>.self))
        #else
        return SIMD4<Float>(v)
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

    /// One row and the inputs i ..< i + 4 (lane k: input i + k).
    @inline(__always)
    private static func inputs4<F: Int16BlockFormat>(
        _ format: F.Type, _ row: UnsafeRawPointer, blocks: Int, _ p: Prepared, first i: Int
    ) -> SIMD4<Float> {
        let columns = 32 * blocks
        let x0 = p.values + i * columns, x1 = x0 + columns, x2 = x1 + columns, x3 = x2 + columns
        var acc = SIMD4<Float>()
        for b in 0..<blocks {
            let block = row + b * F.blockBytes
            let q = F.decodeInt16(block)
            let (d, m) = HalfPrecision.loadHalfPair(block)
            let t = sums(dot(q, x0 + 32 * b), dot(q, x1 + 32 * b), dot(q, x2 + 32 * b), dot(q, x3 + 32 * b))
            let s = UnsafeRawPointer(p.scales + b * p.n + i).loadUnaligned(as: SIMD4<Float>.self)
            acc.addProduct(float(t) * s, SIMD4(repeating: d))
            if F.hasOffset {
                let factors = UnsafeRawPointer(p.minimumFactors.unsafelyUnwrapped + b * p.n + i)
                acc.addProduct(SIMD4(repeating: m), factors.loadUnaligned(as: SIMD4<Float>.self))
            }
        }
        return acc
    }

    /// The rows r ..< r + 4 of `w` (lane k: row r + k) and the inputs i ..< i + G (G = 1 or 2, a
    /// constant after inlining; the second result is zero for G = 1).
    @inline(__always)
    private static func rows4<F: Int16BlockFormat>(
        _ format: F.Type, _ G: Int, _ w: WeightMatrix, first r: Int, blocks: Int, _ p: Prepared, input i: Int
    ) -> (SIMD4<Float>, SIMD4<Float>) {
        let x0 = p.values + i * 32 * blocks, x1 = x0 + 32 * blocks
        let row0 = w.row(r), stride = w.rowStride
        var acc0 = SIMD4<Float>(), acc1 = SIMD4<Float>()
        for b in 0..<blocks {
            let block = row0 + b * F.blockBytes
            let q0 = F.decodeInt16(block), q1 = F.decodeInt16(block + stride)
            let q2 = F.decodeInt16(block + 2 * stride), q3 = F.decodeInt16(block + 3 * stride)
            let (d, m) = halfPairs(block, stride: stride)
            let k = b * p.n + i
            let xb = x0 + 32 * b
            let t0 = sums(dot(q0, xb), dot(q1, xb), dot(q2, xb), dot(q3, xb))
            acc0.addProduct(float(t0) * SIMD4(repeating: p.scales[k]), d)
            if F.hasOffset { acc0.addProduct(m, SIMD4(repeating: p.minimumFactors.unsafelyUnwrapped[k])) }
            if G == 2 {
                let xc = x1 + 32 * b
                let t1 = sums(dot(q0, xc), dot(q1, xc), dot(q2, xc), dot(q3, xc))
                acc1.addProduct(float(t1) * SIMD4(repeating: p.scales[k + 1]), d)
                if F.hasOffset { acc1.addProduct(m, SIMD4(repeating: p.minimumFactors.unsafelyUnwrapped[k + 1])) }
            }
        }
        return (acc0, acc1)
    }

    /// The leading fp16 pairs (d, m) of four blocks `stride` bytes apart, as (d0...d3, m0...m3).
    @inline(__always)
    private static func halfPairs(_ block: UnsafeRawPointer, stride: Int) -> (SIMD4<Float>, SIMD4<Float>) {
        let words = SIMD4<UInt32>(block.loadUnaligned(as: UInt32.self),
                                  (block + stride).loadUnaligned(as: UInt32.self),
                                  (block + 2 * stride).loadUnaligned(as: UInt32.self),
                                  (block + 3 * stride).loadUnaligned(as: UInt32.self))
        let halves = unsafeBitCast(words, to: SIMD8<UInt16>.self)
        let ordered = SIMD8<UInt16>(lowHalf: halves.evenHalf, highHalf: halves.oddHalf)
        #if arch(x86_64)
        let both = _mm256_cvtph_ps(unsafeBitCast(ordered, to: SIMD2<Int64>.self))
        return (both.lowHalf, both.highHalf)
        #else
        let f = unsafeBitCast(ordered, to: SIMD8<Float16>.self)
        return (SIMD4(Float(f[0]), Float(f[1]), Float(f[2]), Float(f[3])),
                SIMD4(Float(f[4]), Float(f[5]), Float(f[6]), Float(f[7])))
        #endif
    }

    /// One row and one input.
    @inline(__always)
    private static func single<F: Int16BlockFormat>(
        _ format: F.Type, _ row: UnsafeRawPointer, blocks: Int, _ p: Prepared, input i: Int
    ) -> Float {
        let x = p.values + i * 32 * blocks
        var acc: Float = 0
        for b in 0..<blocks {
            let block = row + b * F.blockBytes
            let t = dot(F.decodeInt16(block), x + 32 * b).wrappedSum()
            let (d, m) = HalfPrecision.loadHalfPair(block)
            acc.addProduct(Float(t) * p.scales[b * p.n + i], d)
            if F.hasOffset { acc.addProduct(m, p.minimumFactors.unsafelyUnwrapped[b * p.n + i]) }
        }
        return acc
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
