import Foundation
import Testing
@testable import Worker

/// The attention kernels' vectorized exp against libm, and their independence of blocking.
@Suite struct AttentionKernelTests {
    static func exp8(_ xs: [Float]) -> [Float] {
        var out: [Float] = []
        var i = 0
        while i < xs.count {
            var v = SIMD8<Float>(repeating: 0)
            for l in 0..<8 where i + l < xs.count { v[l] = xs[i + l] }
            let e = AttentionKernels.exp(v)
            for l in 0..<8 where i + l < xs.count { out.append(e[l]) }
            i += 8
        }
        return out
    }

    @Test("SwiGLU through the vectorized exp: close to the libm formula, the tail computed as the body, extremes finite")
    func swiglu() {
        var rng = SplitMix64(seed: 0x5e1)
        for count in [8, 13, 1536 + 5] {
            var gate = (0..<count).map { _ in Float.random(in: -12...12, using: &rng) }
            gate[0] = -200
            gate[1] = 200
            let up = (0..<count).map { _ in Float.random(in: -3...3, using: &rng) }
            let expected = zip(gate, up).map { g, u in Double(g) / (1 + Foundation.exp(-Double(g))) * Double(u) }
            var out = gate
            out.withUnsafeMutableBufferPointer { o in
                up.withUnsafeBufferPointer { VectorOps.swiglu(o.baseAddress!, $0.baseAddress!, count: count) }
            }
            for i in 0..<count {
                #expect(abs(Double(out[i]) - expected[i]) <= 1e-6 * max(1, abs(expected[i])), "count \(count) element \(i)")
            }
            // An element in the tail equals the same element in a vector body.
            let k = count - 1
            var body = [Float](repeating: 0, count: 8), bodyUp = [Float](repeating: 0, count: 8)
            body[3] = gate[k]
            bodyUp[3] = up[k]
            body.withUnsafeMutableBufferPointer { o in
                bodyUp.withUnsafeBufferPointer { VectorOps.swiglu(o.baseAddress!, $0.baseAddress!, count: 8) }
            }
            #expect(body[3].bitPattern == out[k].bitPattern)
        }
    }

    @Test func expFollowsLibmOverTheWholeRange() {
        // Every 997th float from -120 to 90 (about 4 million values), with both signs near zero.
        var xs: [Float] = []
        var x: Float = -120
        while x < 0 {
            xs.append(x)
            x = Float(bitPattern: x.bitPattern &- 997)
        }
        x = 0
        while x < 90 {
            xs.append(x)
            x = Float(bitPattern: x.bitPattern &+ 997)
        }
        let ours = Self.exp8(xs)
        var worstRelative = 0.0, worstUlps = 0
        for (x, e) in zip(xs, ours) {
            let truth = Foundation.exp(Double(x))
            let libm = expf(x)
            if truth >= Double(Float.leastNormalMagnitude) && truth <= Double(Float.greatestFiniteMagnitude) {
                worstRelative = max(worstRelative, abs(Double(e) - truth) / truth)
                worstUlps = max(worstUlps, abs(Int(e.bitPattern) - Int(libm.bitPattern)))
            } else if truth < Double(Float.leastNormalMagnitude) {
                // Subnormal or zero: at most one step of the smallest subnormal from libm.
                #expect(abs(Int(e.bitPattern) - Int(libm.bitPattern)) <= 1, "exp(\(x)) = \(e), expf \(libm)")
            } else {
                #expect(e == .infinity && libm == .infinity, "exp(\(x)) = \(e), expf \(libm)")
            }
        }
        // Measured: 8.4e-8 relative, 1 ulp from expf.
        #expect(worstRelative < 1.5e-7, "worst relative error \(worstRelative)")
        #expect(worstUlps <= 1, "worst distance from expf \(worstUlps) ulps")
    }

    @Test func expSpecialValues() {
        let xs: [Float] = [-.infinity, .nan, 0, -0.0, .infinity, -104, -1000, -Float.greatestFiniteMagnitude,
                           -103.9, -87.4, -87.3, 88.7, 88.8, -Float.leastNonzeroMagnitude, 1e-30, -1e-7]
        let ours = Self.exp8(xs)
        for (x, e) in zip(xs, ours) {
            if x.isNaN {
                #expect(e.isNaN)
            } else {
                let libm = expf(x)
                #expect(abs(Int(e.bitPattern) - Int(libm.bitPattern)) <= 1, "exp(\(x)) = \(e), expf \(libm)")
            }
        }
        #expect(ours[0] == 0 && ours[5] == 0 && ours[6] == 0 && ours[2] == 1 && ours[3] == 1 && ours[4] == .infinity)
    }

    /// A lane's exp does not depend on its neighbours or its position.
    @Test func expIsLanewise() {
        let xs: [Float] = (0..<64).map { -Float($0) * 0.37 - 0.01 }
        let together = Self.exp8(xs)
        for (i, x) in xs.enumerated() {
            for lane in 0..<8 {
                var v = SIMD8<Float>(repeating: .nan)
                v[lane] = x
                #expect(AttentionKernels.exp(v)[lane].bitPattern == together[i].bitPattern)
            }
        }
    }

    /// Scores, softmax and weighted values of one query alone equal its results grouped with other
    /// queries (in any position), and scores follow the documented arithmetic.
    @Test(arguments: [8, 12, 16, 20, 40, 64])
    func kernelsAreIndependentOfPairing(headDimension hd: Int) {
        var rng = SystemRandomNumberGenerator()
        let keyCount = 37
        let tile = KVCache.keyTile
        // One key tile (random past keyCount too: those lanes must not matter) and the keys it holds.
        let tileKeys = (0..<(tile * hd)).map { _ in Float.random(in: -2...2, using: &rng) }
        func key(_ j: Int, _ d: Int) -> Float { tileKeys[KVCache.keyOffset(slot: j, dimension: d, headDimension: hd)] }
        let values = (0..<(keyCount * hd)).map { _ in Float.random(in: -2...2, using: &rng) }
        let q = (0..<(4 * hd)).map { _ in Float.random(in: -2...2, using: &rng) }
        let stride = 64
        var alone = [Float](repeating: 0, count: 4 * stride), grouped = alone, shuffled = alone
        tileKeys.withUnsafeBufferPointer { k in
            q.withUnsafeBufferPointer { q in
                let kp = k.baseAddress!
                let qs = (0..<4).map { q.baseAddress! + $0 * hd }
                alone.withUnsafeMutableBufferPointer { s in
                    for g in 0..<4 {
                        let o = s.baseAddress! + g * stride
                        AttentionKernels.scores(qs[g], qs[g], qs[g], qs[g], keyTile: kp, count: keyCount, headDimension: hd,
                                                scale: 0.3, into: o, o, o, o)
                    }
                }
                grouped.withUnsafeMutableBufferPointer { s in
                    let o = (0..<4).map { s.baseAddress! + $0 * stride }
                    AttentionKernels.scores(qs[0], qs[1], qs[2], qs[3], keyTile: kp, count: keyCount, headDimension: hd,
                                            scale: 0.3, into: o[0], o[1], o[2], o[3])
                }
                shuffled.withUnsafeMutableBufferPointer { s in
                    // Three queries (the last repeated), then one and a pair; shorter counts.
                    let o = (0..<4).map { s.baseAddress! + $0 * stride }
                    AttentionKernels.scores(qs[3], qs[1], qs[2], qs[2], keyTile: kp, count: keyCount, headDimension: hd,
                                            scale: 0.3, into: o[3], o[1], o[2], o[2])
                    AttentionKernels.scores(qs[0], qs[0], qs[0], qs[0], keyTile: kp, count: 20, headDimension: hd,
                                            scale: 0.3, into: o[0], o[0], o[0], o[0])
                    AttentionKernels.scores(qs[0], qs[0], qs[0], qs[0], keyTile: kp + 16, count: keyCount - 16,
                                            headDimension: hd, scale: 0.3, into: o[0] + 16, o[0] + 16, o[0] + 16, o[0] + 16)
                }
            }
        }
        for i in 0..<keyCount {
            for r in 0..<4 {
                // The documented arithmetic: one fused multiply-add chain over the dimensions, then the scale.
                var dot: Float = 0
                for d in 0..<hd { dot.addProduct(q[r * hd + d], key(i, d)) }
                #expect(alone[r * stride + i].bitPattern == (dot * 0.3).bitPattern)
                #expect(alone[r * stride + i].bitPattern == grouped[r * stride + i].bitPattern)
                #expect(alone[r * stride + i].bitPattern == shuffled[r * stride + i].bitPattern)
            }
        }
        // Softmax over 30 scores then values: 25 shared rows plus steps {1, 4, 9} past them for query 0,
        // {2} for query 1 (so 28 and 26 weights), alone and paired.
        var p = alone
        p.withUnsafeMutableBufferPointer { s in
            AttentionKernels.softmax(s.baseAddress!, count: 28)
            AttentionKernels.softmax(s.baseAddress! + stride, count: 26)
        }
        let steps0: [Int32] = [1, 4, 9], steps1: [Int32] = [2]
        var outAlone = [Float](repeating: 0, count: 2 * hd), outPair = outAlone
        values.withUnsafeBufferPointer { v in
            p.withUnsafeBufferPointer { p in
                steps0.withUnsafeBufferPointer { s0 in
                    steps1.withUnsafeBufferPointer { s1 in
                        outAlone.withUnsafeMutableBufferPointer { o in
                            let o0 = o.baseAddress!, o1 = o0 + hd, p0 = p.baseAddress!, p1 = p0 + stride
                            AttentionKernels.weightedValues(values: v.baseAddress!, shared: 25, headDimension: hd,
                                                            p0, steps: s0.baseAddress!, extra: 3, out: o0,
                                                            p0, steps: s0.baseAddress!, extra: 3, out: o0)
                            AttentionKernels.weightedValues(values: v.baseAddress!, shared: 25, headDimension: hd,
                                                            p1, steps: s1.baseAddress!, extra: 1, out: o1,
                                                            p1, steps: s1.baseAddress!, extra: 1, out: o1)
                        }
                        outPair.withUnsafeMutableBufferPointer { o in
                            let o0 = o.baseAddress!, o1 = o0 + hd, p0 = p.baseAddress!, p1 = p0 + stride
                            AttentionKernels.weightedValues(values: v.baseAddress!, shared: 25, headDimension: hd,
                                                            p1, steps: s1.baseAddress!, extra: 1, out: o1,
                                                            p0, steps: s0.baseAddress!, extra: 3, out: o0)
                        }
                    }
                }
            }
        }
        #expect(outAlone.map(\.bitPattern) == outPair.map(\.bitPattern))
        // And against a softmax-weighted sum in Double (weights from the first scores, values of `visible`).
        for (r, visible) in [[Int](0..<25) + [26, 29, 34], [Int](0..<25) + [27]].enumerated() {
            let s = visible.indices.map { Double(alone[r * stride + $0]) }  // the weights' scores, as softmax took them
            let m = s.max()!
            let e = s.map { Foundation.exp($0 - m) }
            let total = e.reduce(0, +)
            for d in 0..<hd {
                var expected = 0.0
                for (t, v) in visible.enumerated() { expected += e[t] / total * Double(values[v * hd + d]) }
                #expect(abs(Double(outAlone[r * hd + d]) - expected) < 1e-5)
            }
        }
    }

    /// fp16 keys and values (an fp16 cache) give bit for bit what the kernels give on fp32 copies of
    /// the same values, for head sizes with and without a ragged end (the scalar tails widen too).
    @Test(arguments: [8, 20, 64])
    func halfKeysAndValuesReadAsTheirFloatValues(headDimension hd: Int) {
        var rng = SystemRandomNumberGenerator()
        let keyCount = 19
        let halfKeys = (0..<(KVCache.keyTile * hd)).map { _ in Float16(Float.random(in: -3...3, using: &rng)) }
        let halfValues = (0..<(keyCount * hd)).map { _ in Float16(Float.random(in: -3...3, using: &rng)) }
        let keys = halfKeys.map { Float($0) }, values = halfValues.map { Float($0) }
        let q = (0..<(2 * hd)).map { _ in Float.random(in: -2...2, using: &rng) }
        let stride = 32
        var fromHalf = [Float](repeating: 0, count: 2 * stride), fromFloat = fromHalf
        q.withUnsafeBufferPointer { q in
            let q0 = q.baseAddress!, q1 = q0 + hd
            fromHalf.withUnsafeMutableBufferPointer { s in
                halfKeys.withUnsafeBufferPointer { k in
                    let s0 = s.baseAddress!, s1 = s0 + stride
                    AttentionKernels.scores(q0, q1, q1, q1, keyTile: k.baseAddress!, count: keyCount, headDimension: hd,
                                            scale: 0.25, into: s0, s1, s1, s1)
                }
            }
            fromFloat.withUnsafeMutableBufferPointer { s in
                keys.withUnsafeBufferPointer { k in
                    let s0 = s.baseAddress!, s1 = s0 + stride
                    AttentionKernels.scores(q0, q1, q1, q1, keyTile: k.baseAddress!, count: keyCount, headDimension: hd,
                                            scale: 0.25, into: s0, s1, s1, s1)
                }
            }
        }
        #expect(fromHalf.map(\.bitPattern) == fromFloat.map(\.bitPattern))
        #expect(fromHalf[0] != 0 && fromHalf[stride + keyCount - 1] != 0)
        var p = fromFloat
        p.withUnsafeMutableBufferPointer { s in
            AttentionKernels.softmax(s.baseAddress!, count: 17)
            AttentionKernels.softmax(s.baseAddress! + stride, count: 16)
        }
        let steps: [Int32] = [0, 2]
        func weighted<E: KVElement>(_ v: [E]) -> [Float] {
            var out = [Float](repeating: 0, count: 3 * hd)
            v.withUnsafeBufferPointer { v in
                p.withUnsafeBufferPointer { p in
                    steps.withUnsafeBufferPointer { st in
                        out.withUnsafeMutableBufferPointer { o in
                            let o0 = o.baseAddress!, p0 = p.baseAddress!, p1 = p0 + stride
                            // A pair, then one query alone (the single-query kernel).
                            AttentionKernels.weightedValues(values: v.baseAddress!, shared: 15, headDimension: hd,
                                                            p0, steps: st.baseAddress!, extra: 2, out: o0,
                                                            p1, steps: st.baseAddress!, extra: 1, out: o0 + hd)
                            AttentionKernels.weightedValues(values: v.baseAddress!, shared: 15, headDimension: hd,
                                                            p0, steps: st.baseAddress!, extra: 2, out: o0 + 2 * hd)
                        }
                    }
                }
            }
            return out
        }
        let half = weighted(halfValues), float = weighted(values)
        #expect(half.map(\.bitPattern) == float.map(\.bitPattern))
        #expect(half.contains { $0 != 0 })
    }
}
