/// llama.cpp's reference quantizers for the 5-bit and K-quant formats (`quantize_row_*_ref` in
/// `ggml-quants.c`, which `llama-quantize` runs when it has no importance matrix), step for step:
/// the same fp32 operations in the same order (Swift does not fuse a product into a sum), so the
/// bytes written are llama.cpp's (`KQuantizerTests` compares them with its output).
extension Quantizer {
    /// GGML's `nearest_int`: round to nearest (ties to even) through the fp32 magic-number trick,
    /// bit for bit, including what it does far outside its intended range.
    @inline(__always)
    static func nearestInt(_ value: Float) -> Int {
        let bits = Int32(bitPattern: (value + 12582912).bitPattern)
        return Int(bits & 0x007f_ffff) - 0x0040_0000
    }

    /// GGML's `GROUP_MAX_EPS`: a group whose largest magnitude is below it quantizes to zero.
    static let groupMaxEpsilon: Float = 1e-15

    /// Q5_0: d = (value of largest magnitude) / -16, q = min(31, trunc(x / d + 16.5)), the fifth
    /// bits gathered into a 32-bit word.
    static func q5_0Block(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        var amax: Float = 0, extreme: Float = 0
        for j in 0..<32 where amax < abs(x[j]) {
            amax = abs(x[j])
            extreme = x[j]
        }
        let d = extreme / -16
        let id: Float = d != 0 ? 1 / d : 0
        out.storeBytes(of: HalfPrecision.halfBits(from: d).littleEndian, as: UInt16.self)
        var qh: UInt32 = 0
        for j in 0..<16 {
            let q0 = min(31, truncatedInt8(x[j] * id + 16.5)), q1 = min(31, truncatedInt8(x[j + 16] * id + 16.5))
            out.storeBytes(of: UInt8(truncatingIfNeeded: (q0 & 15) | (q1 & 15) << 4), toByteOffset: 6 + j, as: UInt8.self)
            qh |= UInt32(truncatingIfNeeded: (q0 & 0x10) >> 4) << j | UInt32(truncatingIfNeeded: (q1 & 0x10) >> 4) << (j + 16)
        }
        out.storeBytes(of: qh.littleEndian, toByteOffset: 2, as: UInt32.self)
    }

    /// Q5_1: d = (max - min) / 31, m = min, q = trunc((x - min) / d + 0.5) as a byte (no cap, as in GGML).
    static func q5_1Block(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        var lo = Float.greatestFiniteMagnitude, hi = -Float.greatestFiniteMagnitude
        for j in 0..<32 {
            if x[j] < lo { lo = x[j] }
            if x[j] > hi { hi = x[j] }
        }
        let d = (hi - lo) / 31
        let id: Float = d != 0 ? 1 / d : 0
        out.storeBytes(of: HalfPrecision.halfBits(from: d).littleEndian, as: UInt16.self)
        out.storeBytes(of: HalfPrecision.halfBits(from: lo).littleEndian, toByteOffset: 2, as: UInt16.self)
        var qh: UInt32 = 0
        for j in 0..<16 {
            let q0 = truncatedUInt8((x[j] - lo) * id + 0.5), q1 = truncatedUInt8((x[j + 16] - lo) * id + 0.5)
            out.storeBytes(of: UInt8(truncatingIfNeeded: (q0 & 15) | (q1 & 15) << 4), toByteOffset: 8 + j, as: UInt8.self)
            qh |= UInt32(truncatingIfNeeded: (q0 & 0x10) >> 4) << j | UInt32(truncatingIfNeeded: (q1 & 0x10) >> 4) << (j + 16)
        }
        out.storeBytes(of: qh.littleEndian, toByteOffset: 4, as: UInt32.self)
    }

    /// C's conversion of a float to `int8_t`, as the x86 compilers do it for values in range (truncation).
    @inline(__always)
    private static func truncatedInt8(_ v: Float) -> Int {
        guard v.isFinite else { return 0 }
        return Int(Int8(truncatingIfNeeded: Int(max(-1e9, min(1e9, v.rounded(.towardZero))))))
    }

    /// C's conversion of a float to `uint8_t` for values in range (truncation).
    @inline(__always)
    private static func truncatedUInt8(_ v: Float) -> Int {
        guard v.isFinite else { return 0 }
        return Int(UInt8(truncatingIfNeeded: Int(max(-1e9, min(1e9, v.rounded(.towardZero))))))
    }

    // MARK: - K-quant helpers (ggml-quants.c)

    /// `make_qkx2_quants`: an affine fit x ~ scale * L - min with L in 0...nmax, searching
    /// `steps + 1` candidate scales around the range's, weighted by `weights`. Returns (scale, min).
    private static func affineFit(
        _ n: Int, _ nmax: Int, _ x: UnsafePointer<Float>, _ weights: UnsafePointer<Float>,
        _ L: UnsafeMutablePointer<UInt8>, _ aux: UnsafeMutablePointer<UInt8>,
        rmin: Float, rdelta: Float, steps: Int, absoluteError: Bool
    ) -> (scale: Float, min: Float) {
        var lo = x[0], hi = x[0]
        var sumW = weights[0]
        var sumX = sumW * x[0]
        for i in 1..<n {
            if x[i] < lo { lo = x[i] }
            if x[i] > hi { hi = x[i] }
            let w = weights[i]
            sumW += w
            sumX += w * x[i]
        }
        if lo > 0 { lo = 0 }
        if hi == lo {
            for i in 0..<n { L[i] = 0 }
            return (0, -lo)
        }
        var iscale = Float(nmax) / (hi - lo)
        var scale = 1 / iscale
        var bestError: Float = 0
        for i in 0..<n {
            let l = nearestInt(iscale * (x[i] - lo))
            L[i] = UInt8(max(0, min(nmax, l)))
            var diff = scale * Float(L[i]) + lo - x[i]
            diff = absoluteError ? abs(diff) : diff * diff
            bestError += weights[i] * diff
        }
        guard steps >= 1 else { return (scale, -lo) }
        for step in 0...steps {
            iscale = (rmin + rdelta * Float(step) + Float(nmax)) / (hi - lo)
            var sumL: Float = 0, sumL2: Float = 0, sumXL: Float = 0
            for i in 0..<n {
                let l = max(0, min(nmax, nearestInt(iscale * (x[i] - lo))))
                aux[i] = UInt8(l)
                let w = weights[i], fl = Float(l)
                sumL += w * fl
                sumL2 += w * fl * fl
                sumXL += w * fl * x[i]
            }
            let D = sumW * sumL2 - sumL * sumL
            guard D > 0 else { continue }
            var thisScale = (sumW * sumXL - sumX * sumL) / D
            var thisMin = (sumL2 * sumX - sumL * sumXL) / D
            if thisMin > 0 {
                thisMin = 0
                thisScale = sumXL / sumL2
            }
            var error: Float = 0
            for i in 0..<n {
                var diff = thisScale * Float(aux[i]) + thisMin - x[i]
                diff = absoluteError ? abs(diff) : diff * diff
                error += weights[i] * diff
            }
            if error < bestError {
                for i in 0..<n { L[i] = aux[i] }
                bestError = error
                scale = thisScale
                lo = thisMin
            }
        }
        return (scale, -lo)
    }

    /// `make_qx_quants` with `rmse_type` 1 and no importance weights: a symmetric fit x ~ scale *
    /// (L - nmax), L in 0 ..< 2 nmax, weighted by x^2, trying 18 scales around max / -nmax.
    private static func symmetricFit(_ n: Int, _ nmax: Int, _ x: UnsafePointer<Float>, _ L: UnsafeMutablePointer<Int8>) -> Float {
        var amax: Float = 0, extreme: Float = 0
        for i in 0..<n where abs(x[i]) > amax {
            amax = abs(x[i])
            extreme = x[i]
        }
        if amax < groupMaxEpsilon {
            for i in 0..<n { L[i] = 0 }
            return 0
        }
        var iscale = Float(-nmax) / extreme
        var sumLX: Float = 0, sumL2: Float = 0
        for i in 0..<n {
            let l = max(-nmax, min(nmax - 1, nearestInt(iscale * x[i])))
            L[i] = Int8(l + nmax)
            let w = x[i] * x[i], fl = Float(l)
            sumLX += w * x[i] * fl
            sumL2 += w * fl * fl
        }
        var scale: Float = sumL2 != 0 ? sumLX / sumL2 : 0
        var best = scale * sumLX
        for step in -9...9 where step != 0 {
            iscale = -(Float(nmax) + 0.1 * Float(step)) / extreme
            sumLX = 0
            sumL2 = 0
            for i in 0..<n {
                let l = max(-nmax, min(nmax - 1, nearestInt(iscale * x[i])))
                let w = x[i] * x[i], fl = Float(l)
                sumLX += w * x[i] * fl
                sumL2 += w * fl * fl
            }
            if sumL2 > 0 && sumLX * sumLX > best * sumL2 {
                for i in 0..<n { L[i] = Int8(nmax + max(-nmax, min(nmax - 1, nearestInt(iscale * x[i])))) }
                scale = sumLX / sumL2
                best = scale * sumLX
            }
        }
        return scale
    }

    /// `make_q3_quants` with `do_rmse`: a symmetric fit with L in -nmax ..< nmax, refined by up to
    /// five passes that move one L at a time when that lowers the x^2-weighted error. L is returned
    /// shifted by nmax (0 for an all-zero group).
    private static func symmetricRefinedFit(_ n: Int, _ nmax: Int, _ x: UnsafePointer<Float>, _ L: UnsafeMutablePointer<Int8>) -> Float {
        var amax: Float = 0, extreme: Float = 0
        for i in 0..<n where abs(x[i]) > amax {
            amax = abs(x[i])
            extreme = x[i]
        }
        if amax < groupMaxEpsilon {
            for i in 0..<n { L[i] = 0 }
            return 0
        }
        let iscale = Float(-nmax) / extreme
        var sumLX: Float = 0, sumL2: Float = 0
        for i in 0..<n {
            let l = max(-nmax, min(nmax - 1, nearestInt(iscale * x[i])))
            L[i] = Int8(l)
            let w = x[i] * x[i], fl = Float(l)
            sumLX += w * x[i] * fl
            sumL2 += w * fl * fl
        }
        for _ in 0..<5 {
            var changed = 0
            for i in 0..<n {
                let w = x[i] * x[i], old = Float(L[i])
                var slx = sumLX - w * x[i] * old
                guard slx > 0 else { continue }
                var sl2 = sumL2 - w * old * old
                let l = max(-nmax, min(nmax - 1, nearestInt(x[i] * sl2 / slx)))
                guard l != Int(L[i]) else { continue }
                let fl = Float(l)
                slx += w * x[i] * fl
                sl2 += w * fl * fl
                if sl2 > 0 && slx * slx * sumL2 > sumLX * sumLX * sl2 {
                    L[i] = Int8(l)
                    sumLX = slx
                    sumL2 = sl2
                    changed += 1
                }
            }
            if changed == 0 { break }
        }
        for i in 0..<n { L[i] = Int8(Int(L[i]) + nmax) }
        return sumL2 > 0 ? sumLX / sumL2 : 0
    }

    /// Packs 256 two-bit values as Q2_K and Q3_K store them: byte 32h + l holds values
    /// 128h + l, +32, +64, +96 in bits 0-1, 2-3, 4-5, 6-7.
    private static func packTwoBits(_ L: UnsafePointer<UInt8>, _ out: UnsafeMutableRawPointer) {
        for h in 0..<2 {
            for l in 0..<32 {
                let j = 128 * h + l
                let byte = L[j] | L[j + 32] << 2 | L[j + 64] << 4 | L[j + 96] << 6
                out.storeBytes(of: byte, toByteOffset: 32 * h + l, as: UInt8.self)
            }
        }
    }

    // MARK: - K-quant blocks (256 values each)

    /// Q2_K: 16 groups of 16, each an affine fit with L in 0...3 (weights |x|), their scales and
    /// minimums quantized to 4 bits against the block's largest (d = max scale / 15, dmin = max min / 15).
    static func q2_KBlock(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 16 + 16 + 16) { f in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 256 + 16) { u in
                let weights = f.baseAddress!, scales = weights + 16, mins = scales + 16
                let L = u.baseAddress!, aux = L + 256
                var maxScale: Float = 0, maxMin: Float = 0
                for j in 0..<16 {
                    for l in 0..<16 { weights[l] = abs(x[16 * j + l]) }
                    (scales[j], mins[j]) = affineFit(16, 3, x + 16 * j, weights, L + 16 * j, aux,
                                                     rmin: -0.5, rdelta: 0.1, steps: 15, absoluteError: true)
                    if scales[j] > maxScale { maxScale = scales[j] }
                    if mins[j] > maxMin { maxMin = mins[j] }
                }
                var packed = [UInt8](repeating: 0, count: 16)
                var d: Float = 0, dmin: Float = 0
                if maxScale > 0 {
                    let iscale = 15 / maxScale
                    for j in 0..<16 { packed[j] = UInt8(truncatingIfNeeded: nearestInt(iscale * scales[j])) }
                    d = maxScale / 15
                }
                if maxMin > 0 {
                    let iscale = 15 / maxMin
                    for j in 0..<16 {
                        packed[j] = UInt8(truncatingIfNeeded: Int(packed[j]) | nearestInt(iscale * mins[j]) << 4)
                    }
                    dmin = maxMin / 15
                }
                let dBits = HalfPrecision.halfBits(from: d), dminBits = HalfPrecision.halfBits(from: dmin)
                let dStored = HalfPrecision.float(fromHalfBits: dBits), dminStored = HalfPrecision.float(fromHalfBits: dminBits)
                for j in 0..<16 {
                    let dl = dStored * Float(packed[j] & 15)
                    if dl == 0 { continue }
                    let ml = dminStored * Float(packed[j] >> 4)
                    for i in 0..<16 { L[16 * j + i] = UInt8(max(0, min(3, nearestInt((x[16 * j + i] + ml) / dl)))) }
                }
                for j in 0..<16 { out.storeBytes(of: packed[j], toByteOffset: j, as: UInt8.self) }
                packTwoBits(L, out + 16)
                out.storeBytes(of: dBits.littleEndian, toByteOffset: 80, as: UInt16.self)
                out.storeBytes(of: dminBits.littleEndian, toByteOffset: 82, as: UInt16.self)
            }
        }
    }

    /// Q3_K: 16 groups of 16, each a refined symmetric fit with L in -4...3, their scales quantized
    /// to 6 signed bits against the block's largest (d = max / -32); the third bits go to `hmask`.
    static func q3_KBlock(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        withUnsafeTemporaryAllocation(of: Int8.self, capacity: 256) { l8 in
            let L = l8.baseAddress!
            var scales = [Float](repeating: 0, count: 16)
            var maxScale: Float = 0, amax: Float = 0
            for j in 0..<16 {
                scales[j] = symmetricRefinedFit(16, 4, x + 16 * j, L + 16 * j)
                if abs(scales[j]) > amax {
                    amax = abs(scales[j])
                    maxScale = scales[j]
                }
            }
            var packed = [UInt8](repeating: 0, count: 12)
            var dBits: UInt16 = HalfPrecision.halfBits(from: 0)
            if maxScale != 0 {
                let iscale = -32 / maxScale
                for j in 0..<16 {
                    let l = max(-32, min(31, Int(Int8(truncatingIfNeeded: nearestInt(iscale * scales[j]))))) + 32
                    if j < 8 {
                        packed[j] = UInt8(l & 15)
                    } else {
                        packed[j - 8] |= UInt8((l & 15) << 4)
                    }
                    packed[j % 4 + 8] |= UInt8((l >> 4) << (2 * (j / 4)))
                }
                dBits = HalfPrecision.halfBits(from: 1 / iscale)
            }
            let dStored = HalfPrecision.float(fromHalfBits: dBits)
            for j in 0..<16 {
                let low = j < 8 ? Int(packed[j] & 15) : Int(packed[j - 8] >> 4)
                let sc = (low | (Int(packed[8 + j % 4] >> (2 * (j / 4))) & 3) << 4) - 32
                let dl = dStored * Float(sc)
                if dl == 0 { continue }
                for i in 0..<16 { L[16 * j + i] = Int8(max(-4, min(3, nearestInt(x[16 * j + i] / dl))) + 4) }
            }
            var hmask = [UInt8](repeating: 0, count: 32)
            var twoBits = [UInt8](repeating: 0, count: 256)
            for j in 0..<256 {
                var l = Int(L[j])
                if l > 3 {
                    hmask[j % 32] |= UInt8(1 << (j / 32))
                    l -= 4
                }
                twoBits[j] = UInt8(truncatingIfNeeded: l)
            }
            for j in 0..<32 { out.storeBytes(of: hmask[j], toByteOffset: j, as: UInt8.self) }
            twoBits.withUnsafeBufferPointer { packTwoBits($0.baseAddress!, out + 32) }
            for j in 0..<12 { out.storeBytes(of: packed[j], toByteOffset: 96 + j, as: UInt8.self) }
            out.storeBytes(of: dBits.littleEndian, toByteOffset: 108, as: UInt16.self)
        }
    }

    /// Q4_K and Q5_K: 8 groups of 32, each an affine fit (weights sqrt(mean x^2) + |x|) with L in
    /// 0...15 (0...31), their scales and minimums quantized to 6 bits against the block's largest
    /// (d = max scale / 63, dmin = max min / 63).
    static func q45_KBlock(_ type: TensorType, _ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        let five = type == .q5_K
        let nmax = five ? 31 : 15
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 32 + 8 + 8) { f in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 256 + 32) { u in
                let weights = f.baseAddress!, scales = weights + 32, mins = scales + 8
                let L = u.baseAddress!, aux = L + 256
                var maxScale: Float = 0, maxMin: Float = 0
                for j in 0..<8 {
                    var sumX2: Float = 0
                    for l in 0..<32 { sumX2 += x[32 * j + l] * x[32 * j + l] }
                    let average = (sumX2 / 32).squareRoot()
                    for l in 0..<32 { weights[l] = average + abs(x[32 * j + l]) }
                    (scales[j], mins[j]) = affineFit(32, nmax, x + 32 * j, weights, L + 32 * j, aux,
                                                     rmin: five ? -0.5 : -1, rdelta: 0.1, steps: five ? 15 : 20,
                                                     absoluteError: false)
                    if scales[j] > maxScale { maxScale = scales[j] }
                    if mins[j] > maxMin { maxMin = mins[j] }
                }
                let inverseScale: Float = maxScale > 0 ? 63 / maxScale : 0
                let inverseMin: Float = maxMin > 0 ? 63 / maxMin : 0
                var packed = [UInt8](repeating: 0, count: 12)
                for j in 0..<8 {
                    let ls = min(63, UInt8(truncatingIfNeeded: nearestInt(inverseScale * scales[j])))
                    let lm = min(63, UInt8(truncatingIfNeeded: nearestInt(inverseMin * mins[j])))
                    if j < 4 {
                        packed[j] = ls
                        packed[j + 4] = lm
                    } else {
                        packed[j + 4] = (ls & 15) | (lm & 15) << 4
                        packed[j - 4] |= (ls >> 4) << 6
                        packed[j] |= (lm >> 4) << 6
                    }
                }
                let dBits = HalfPrecision.halfBits(from: maxScale / 63), dminBits = HalfPrecision.halfBits(from: maxMin / 63)
                let dStored = HalfPrecision.float(fromHalfBits: dBits), dminStored = HalfPrecision.float(fromHalfBits: dminBits)
                for j in 0..<8 {
                    let (sc, m) = j < 4
                        ? (packed[j] & 63, packed[j + 4] & 63)
                        : ((packed[j + 4] & 15) | (packed[j - 4] >> 6) << 4, (packed[j + 4] >> 4) | (packed[j] >> 6) << 4)
                    let dl = dStored * Float(sc)
                    if dl == 0 { continue }
                    let ml = dminStored * Float(m)
                    for i in 0..<32 { L[32 * j + i] = UInt8(max(0, min(nmax, nearestInt((x[32 * j + i] + ml) / dl)))) }
                }
                out.storeBytes(of: dBits.littleEndian, as: UInt16.self)
                out.storeBytes(of: dminBits.littleEndian, toByteOffset: 2, as: UInt16.self)
                for j in 0..<12 { out.storeBytes(of: packed[j], toByteOffset: 4 + j, as: UInt8.self) }
                let qs = five ? 48 : 16
                if five { for j in 0..<32 { out.storeBytes(of: UInt8(0), toByteOffset: 16 + j, as: UInt8.self) } }
                for p in 0..<4 {
                    for j in 0..<32 {
                        var l1 = L[64 * p + j], l2 = L[64 * p + j + 32]
                        if five {
                            var high = out.load(fromByteOffset: 16 + j, as: UInt8.self)
                            if l1 > 15 {
                                l1 -= 16
                                high |= 1 << (2 * p)
                            }
                            if l2 > 15 {
                                l2 -= 16
                                high |= 2 << (2 * p)
                            }
                            out.storeBytes(of: high, toByteOffset: 16 + j, as: UInt8.self)
                        }
                        out.storeBytes(of: l1 | l2 << 4, toByteOffset: qs + 32 * p + j, as: UInt8.self)
                    }
                }
            }
        }
    }

    /// Q6_K: 16 groups of 16, each a symmetric fit with L in -32...31, their scales quantized to
    /// int8 against the block's largest (d = max / -128).
    static func q6_KBlock(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        withUnsafeTemporaryAllocation(of: Int8.self, capacity: 256) { l8 in
            let L = l8.baseAddress!
            var scales = [Float](repeating: 0, count: 16)
            var maxScale: Float = 0, maxAbsScale: Float = 0
            for j in 0..<16 {
                scales[j] = symmetricFit(16, 32, x + 16 * j, L + 16 * j)
                if abs(scales[j]) > maxAbsScale {
                    maxAbsScale = abs(scales[j])
                    maxScale = scales[j]
                }
            }
            if maxAbsScale < groupMaxEpsilon {
                out.initializeMemory(as: UInt8.self, repeating: 0, count: 210)
                out.storeBytes(of: HalfPrecision.halfBits(from: 0).littleEndian, toByteOffset: 208, as: UInt16.self)
                return
            }
            let iscale = -128 / maxScale
            let dBits = HalfPrecision.halfBits(from: 1 / iscale)
            var packed = [Int8](repeating: 0, count: 16)
            for j in 0..<16 { packed[j] = Int8(truncatingIfNeeded: min(127, nearestInt(iscale * scales[j]))) }
            let dStored = HalfPrecision.float(fromHalfBits: dBits)
            for j in 0..<16 {
                let dl = dStored * Float(packed[j])
                if dl == 0 { continue }
                for i in 0..<16 { L[16 * j + i] = Int8(max(-32, min(31, nearestInt(x[16 * j + i] / dl))) + 32) }
            }
            for h in 0..<2 {
                for l in 0..<32 {
                    let j = 128 * h + l
                    let q = (0..<4).map { UInt8(truncatingIfNeeded: Int(L[j + 32 * $0])) }
                    out.storeBytes(of: (q[0] & 15) | (q[2] & 15) << 4, toByteOffset: 64 * h + l, as: UInt8.self)
                    out.storeBytes(of: (q[1] & 15) | (q[3] & 15) << 4, toByteOffset: 64 * h + l + 32, as: UInt8.self)
                    let high = (q[0] >> 4) | (q[1] >> 4) << 2 | (q[2] >> 4) << 4 | (q[3] >> 4) << 6
                    out.storeBytes(of: high, toByteOffset: 128 + 32 * h + l, as: UInt8.self)
                }
            }
            for j in 0..<16 { out.storeBytes(of: UInt8(bitPattern: packed[j]), toByteOffset: 192 + j, as: UInt8.self) }
            out.storeBytes(of: dBits.littleEndian, toByteOffset: 208, as: UInt16.self)
        }
    }
}
