#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Kernels of `LlamaModel.attend`: scores of several queries against a run of keys, the softmax of
/// one query's scores, and the softmax-weighted sum of values for several queries. Keys and values
/// are read as the cache stores them (`KVElement`: fp32 or fp16, widened to fp32 exactly), so an
/// fp16 cache gives the results an fp32 cache holding the same (rounded) values would.
///
/// Batch invariance: every value one query gets is computed by arithmetic that depends only on
/// that query, its visible keys and values, and their order — never on which other queries or keys
/// share a call, how they are blocked, or which thread runs them. Blocks that share loads keep one
/// accumulator per (query, key) or (query, dimension); ragged ends are padded by repeating a real
/// query or key and dropping the copy's result.
enum AttentionKernels {
    /// scores_g[j] = (q_g · key j) * scale for j in 0..<count and the four queries g, the keys being
    /// one tile (`KVCache.keyOffset`: [headDimension, keyTile], key j's dimension d at d * keyTile + j).
    /// Each dot product is one chain of fused multiply-adds over the dimensions in order, from zero
    /// (lane j of a vector of 8 keys), then times `scale`: the same whatever the other queries of the
    /// call and the key's place in it. Keys go in blocks of 16, so up to 15 entries past `count` may
    /// be written (their keys are read from the tile, which is always `keyTile` wide). Queries may
    /// repeat the previous one (with its score pointer): a repeat is not computed again.
    @inline(__always)
    static func scores<E: KVElement>(
        _ q0: UnsafePointer<Float>, _ q1: UnsafePointer<Float>, _ q2: UnsafePointer<Float>, _ q3: UnsafePointer<Float>,
        keyTile: UnsafePointer<E>, count: Int, headDimension hd: Int, scale: Float,
        into s0: UnsafeMutablePointer<Float>, _ s1: UnsafeMutablePointer<Float>, _ s2: UnsafeMutablePointer<Float>,
        _ s3: UnsafeMutablePointer<Float>
    ) {
        let distinct = q1 == q0 ? 1 : (q2 == q1 ? 2 : (q3 == q2 ? 3 : 4))
        switch distinct {
        case 1: scores(1, q0, q0, q0, q0, keyTile: keyTile, count: count, headDimension: hd, scale: scale, into: s0, s0, s0, s0)
        case 2: scores(2, q0, q1, q1, q1, keyTile: keyTile, count: count, headDimension: hd, scale: scale, into: s0, s1, s1, s1)
        case 3: scores(3, q0, q1, q2, q2, keyTile: keyTile, count: count, headDimension: hd, scale: scale, into: s0, s1, s2, s2)
        default: scores(4, q0, q1, q2, q3, keyTile: keyTile, count: count, headDimension: hd, scale: scale, into: s0, s1, s2, s3)
        }
    }

    /// `scores` for the first `g` queries (a constant after inlining: the other accumulators vanish).
    @inline(__always)
    private static func scores<E: KVElement>(
        _ g: Int, _ q0: UnsafePointer<Float>, _ q1: UnsafePointer<Float>, _ q2: UnsafePointer<Float>,
        _ q3: UnsafePointer<Float>, keyTile: UnsafePointer<E>, count: Int, headDimension hd: Int, scale: Float,
        into s0: UnsafeMutablePointer<Float>, _ s1: UnsafeMutablePointer<Float>, _ s2: UnsafeMutablePointer<Float>,
        _ s3: UnsafeMutablePointer<Float>
    ) {
        let width = KVCache.keyTile
        let factor = SIMD8<Float>(repeating: scale)
        // Query q's dimension d times the 16 keys (two vectors), into its two accumulators.
        @inline(__always) func add(_ q: UnsafePointer<Float>, _ d: Int, _ low: SIMD8<Float>, _ high: SIMD8<Float>,
                                   _ first: inout SIMD8<Float>, _ second: inout SIMD8<Float>) {
            let x = SIMD8<Float>(repeating: q[d])
            first.addProduct(x, low)
            second.addProduct(x, high)
        }
        @inline(__always) func put(_ first: SIMD8<Float>, _ second: SIMD8<Float>, _ out: UnsafeMutablePointer<Float>) {
            store(first * factor, out)
            store(second * factor, out + 8)
        }
        var j = 0
        while j < count {
            // One accumulator pair per query, in registers (the unused ones vanish for g < 4).
            var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), b0 = SIMD8<Float>(), b1 = SIMD8<Float>()
            var c0 = SIMD8<Float>(), c1 = SIMD8<Float>(), e0 = SIMD8<Float>(), e1 = SIMD8<Float>()
            var row = keyTile + j
            for d in 0..<hd {
                let low = E.load8(row), high = E.load8(row + 8)
                add(q0, d, low, high, &a0, &a1)
                if g > 1 { add(q1, d, low, high, &b0, &b1) }
                if g > 2 { add(q2, d, low, high, &c0, &c1) }
                if g > 3 { add(q3, d, low, high, &e0, &e1) }
                row += width
            }
            put(a0, a1, s0 + j)
            if g > 1 { put(b0, b1, s1 + j) }
            if g > 2 { put(c0, c1, s2 + j) }
            if g > 3 { put(e0, e1, s3 + j) }
            j += 16
        }
    }

    /// Turns `scores[0..<count]` into softmax weights in place: e_v = exp(s_v - max) by `exp`,
    /// summed over 8 lanes (v mod 8) in order and then by `SIMDSupport.sum`, and each e_v times
    /// 1 / sum. Uses (and overwrites) `scores` up to `count` rounded up to a multiple of 8.
    @inline(__always)
    static func softmax(_ scores: UnsafeMutablePointer<Float>, count: Int) {
        let padded = (count + 7) & ~7
        var v = count
        while v < padded {
            scores[v] = -.infinity  // exp gives 0: the padding adds nothing to the sum
            v += 1
        }
        var m = SIMD8<Float>(repeating: -.infinity)
        v = 0
        while v < padded {
            m = maximum(SIMDSupport.load8(scores + v), m)  // NaN scores are skipped, as Swift.max did
            v += 8
        }
        var largest = m[0]
        for lane in 1..<8 where m[lane] > largest { largest = m[lane] }
        var sum = SIMD8<Float>()
        v = 0
        while v < padded {
            let e = exp(SIMDSupport.load8(scores + v) - largest)
            UnsafeMutableRawPointer(scores + v).storeBytes(of: e, as: SIMD8<Float>.self)
            sum += e
            v += 8
        }
        let inverse = 1 / SIMDSupport.sum(sum)
        v = 0
        while v < padded {
            UnsafeMutableRawPointer(scores + v).storeBytes(of: SIMDSupport.load8(scores + v) * inverse, as: SIMD8<Float>.self)
            v += 8
        }
    }

    /// out0 = sum over v in 0..<shared of p0[v] * values[v], then over t in 0..<extra0 of
    /// p0[shared + t] * values[shared + steps0[t]] (likewise out1 with p1, extra1, steps1): one fused
    /// multiply-add per value and dimension, in that order, from zero. `values` rows are
    /// `headDimension` apart. The second query may repeat the first (same pointers).
    @inline(__always)
    static func weightedValues<E: KVElement>(
        values: UnsafePointer<E>, shared: Int, headDimension hd: Int,
        _ p0: UnsafePointer<Float>, steps steps0: UnsafePointer<Int32>, extra extra0: Int, out out0: UnsafeMutablePointer<Float>,
        _ p1: UnsafePointer<Float>, steps steps1: UnsafePointer<Int32>, extra extra1: Int, out out1: UnsafeMutablePointer<Float>
    ) {
        if p0 == p1 && out0 == out1 {
            weightedValues(values: values, shared: shared, headDimension: hd, p0, steps: steps0, extra: extra0, out: out0)
            return
        }
        var d = 0
        // 32 dimensions at a time: 4 x 8 lanes per query.
        while d + 32 <= hd {
            var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
            var b0 = SIMD8<Float>(), b1 = SIMD8<Float>(), b2 = SIMD8<Float>(), b3 = SIMD8<Float>()
            var row = values + d
            for v in 0..<shared {
                let x = SIMD8<Float>(repeating: p0[v]), y = SIMD8<Float>(repeating: p1[v])
                let v0 = E.load8(row)
                a0.addProduct(x, v0)
                b0.addProduct(y, v0)
                let v1 = E.load8(row + 8)
                a1.addProduct(x, v1)
                b1.addProduct(y, v1)
                let v2 = E.load8(row + 16)
                a2.addProduct(x, v2)
                b2.addProduct(y, v2)
                let v3 = E.load8(row + 24)
                a3.addProduct(x, v3)
                b3.addProduct(y, v3)
                row += hd
            }
            for t in 0..<extra0 {
                let x = SIMD8<Float>(repeating: p0[shared + t])
                let r = values + (shared + Int(steps0[t])) * hd + d
                a0.addProduct(x, E.load8(r))
                a1.addProduct(x, E.load8(r + 8))
                a2.addProduct(x, E.load8(r + 16))
                a3.addProduct(x, E.load8(r + 24))
            }
            for t in 0..<extra1 {
                let y = SIMD8<Float>(repeating: p1[shared + t])
                let r = values + (shared + Int(steps1[t])) * hd + d
                b0.addProduct(y, E.load8(r))
                b1.addProduct(y, E.load8(r + 8))
                b2.addProduct(y, E.load8(r + 16))
                b3.addProduct(y, E.load8(r + 24))
            }
            store(a0, out0 + d)
            store(a1, out0 + d + 8)
            store(a2, out0 + d + 16)
            store(a3, out0 + d + 24)
            store(b0, out1 + d)
            store(b1, out1 + d + 8)
            store(b2, out1 + d + 16)
            store(b3, out1 + d + 24)
            d += 32
        }
        // 8 dimensions at a time.
        while d + 8 <= hd {
            var a = SIMD8<Float>(), b = SIMD8<Float>()
            var row = values + d
            for v in 0..<shared {
                let w = E.load8(row)
                a.addProduct(SIMD8<Float>(repeating: p0[v]), w)
                b.addProduct(SIMD8<Float>(repeating: p1[v]), w)
                row += hd
            }
            for t in 0..<extra0 {
                a.addProduct(SIMD8<Float>(repeating: p0[shared + t]),
                             E.load8(values + (shared + Int(steps0[t])) * hd + d))
            }
            for t in 0..<extra1 {
                b.addProduct(SIMD8<Float>(repeating: p1[shared + t]),
                             E.load8(values + (shared + Int(steps1[t])) * hd + d))
            }
            store(a, out0 + d)
            store(b, out1 + d)
            d += 8
        }
        // Any last dimensions one at a time (the same fused multiply-adds as a lane above).
        while d < hd {
            var a: Float = 0, b: Float = 0
            for v in 0..<shared {
                a.addProduct(p0[v], E.float(values[v * hd + d]))
                b.addProduct(p1[v], E.float(values[v * hd + d]))
            }
            for t in 0..<extra0 { a.addProduct(p0[shared + t], E.float(values[(shared + Int(steps0[t])) * hd + d])) }
            for t in 0..<extra1 { b.addProduct(p1[shared + t], E.float(values[(shared + Int(steps1[t])) * hd + d])) }
            out0[d] = a
            out1[d] = b
            d += 1
        }
    }

    /// `weightedValues` for one query (the same fused multiply-adds in the same order).
    @inline(__always)
    static func weightedValues<E: KVElement>(
        values: UnsafePointer<E>, shared: Int, headDimension hd: Int,
        _ p0: UnsafePointer<Float>, steps steps0: UnsafePointer<Int32>, extra extra0: Int, out out0: UnsafeMutablePointer<Float>
    ) {
        var d = 0
        while d + 64 <= hd {
            var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
            var a4 = SIMD8<Float>(), a5 = SIMD8<Float>(), a6 = SIMD8<Float>(), a7 = SIMD8<Float>()
            @inline(__always) func add(_ p: Float, _ r: UnsafePointer<E>) {
                let x = SIMD8<Float>(repeating: p)
                a0.addProduct(x, E.load8(r))
                a1.addProduct(x, E.load8(r + 8))
                a2.addProduct(x, E.load8(r + 16))
                a3.addProduct(x, E.load8(r + 24))
                a4.addProduct(x, E.load8(r + 32))
                a5.addProduct(x, E.load8(r + 40))
                a6.addProduct(x, E.load8(r + 48))
                a7.addProduct(x, E.load8(r + 56))
            }
            var row = values + d
            for v in 0..<shared {
                add(p0[v], row)
                row += hd
            }
            for t in 0..<extra0 { add(p0[shared + t], values + (shared + Int(steps0[t])) * hd + d) }
            store(a0, out0 + d)
            store(a1, out0 + d + 8)
            store(a2, out0 + d + 16)
            store(a3, out0 + d + 24)
            store(a4, out0 + d + 32)
            store(a5, out0 + d + 40)
            store(a6, out0 + d + 48)
            store(a7, out0 + d + 56)
            d += 64
        }
        while d + 8 <= hd {
            var a = SIMD8<Float>()
            var row = values + d
            for v in 0..<shared {
                a.addProduct(SIMD8<Float>(repeating: p0[v]), E.load8(row))
                row += hd
            }
            for t in 0..<extra0 {
                a.addProduct(SIMD8<Float>(repeating: p0[shared + t]),
                             E.load8(values + (shared + Int(steps0[t])) * hd + d))
            }
            store(a, out0 + d)
            d += 8
        }
        while d < hd {
            var a: Float = 0
            for v in 0..<shared { a.addProduct(p0[v], E.float(values[v * hd + d])) }
            for t in 0..<extra0 { a.addProduct(p0[shared + t], E.float(values[(shared + Int(steps0[t])) * hd + d])) }
            out0[d] = a
            d += 1
        }
    }

    /// Lanewise a > b ? a : b (so b where either is NaN), one instruction on x86-64.
    @inline(__always)
    static func maximum(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
        #if arch(x86_64)
        return _mm256_max_ps(a, b)
        #else
        return b.replacing(with: a, where: a .> b)
        #endif
    }

    /// Lanewise a < b ? a : b (so b where either is NaN), one instruction on x86-64.
    @inline(__always)
    static func minimum(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
        #if arch(x86_64)
        return _mm256_min_ps(a, b)
        #else
        return b.replacing(with: a, where: a .< b)
        #endif
    }

    @inline(__always)
    private static func store(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
    }

    /// e^x for eight values, within 1.5e-7 relative of the exact result for normal results (the
    /// fast-path `expf` is within about 6e-8): 0 for x <= -104 and -infinity, +infinity above
    /// about 88.72, NaN for NaN. Subnormal results are rounded once. Each lane depends only on its
    /// own input.
    ///
    /// Cody-Waite reduction x = n ln2 + r with |r| <= ln2 / 2, Cephes' degree-5 minimax polynomial
    /// for (e^r - 1 - r) / r^2, and the scale 2^n applied as two exact powers of two.
    @inline(__always)
    static func exp(_ x: SIMD8<Float>) -> SIMD8<Float> {
        // Clamp to [-104, 89] (NaN passes through unchanged).
        let x = maximum(SIMD8(repeating: -104), minimum(SIMD8(repeating: 89), x))
        // n = round-to-nearest-even(x / ln2) through the 1.5 * 2^23 shifter; its low bits hold n.
        let shifter = SIMD8<Float>(repeating: 12582912)
        let shifted = x * SIMD8(repeating: 1.44269504088896341) + shifter
        let n = shifted - shifter
        var r = x.addingProduct(n, SIMD8(repeating: -0.693359375))
        r = r.addingProduct(n, SIMD8(repeating: 2.12194440e-4))
        var p = SIMD8<Float>(repeating: 1.9875691500e-4)
        p = SIMD8(repeating: 1.3981999507e-3).addingProduct(p, r)
        p = SIMD8(repeating: 8.3334519073e-3).addingProduct(p, r)
        p = SIMD8(repeating: 4.1665795894e-2).addingProduct(p, r)
        p = SIMD8(repeating: 1.6666665459e-1).addingProduct(p, r)
        p = SIMD8(repeating: 5.0000001201e-1).addingProduct(p, r)
        let y = r.addingProduct(p, r * r) + 1
        // 2^n as 2^h * 2^(n-h), h = n >> 1, both normal for every n the clamp allows (-150...129):
        // y * 2^h is exact, the second product rounds once (to a subnormal, or overflows to inf).
        let ni = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- unsafeBitCast(shifter, to: SIMD8<Int32>.self)
        let h = ni &>> 1
        let scale1 = unsafeBitCast((h &+ 127) &<< 23, to: SIMD8<Float>.self)
        let scale2 = unsafeBitCast((ni &- h &+ 127) &<< 23, to: SIMD8<Float>.self)
        return y * scale1 * scale2
    }
}
