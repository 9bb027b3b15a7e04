import COpenBLAS
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The forward and backward passes: each head's blocks over all N rows at once, then its LM head
/// over the rows with a target in chunks of `chunkRows` (so that the logits stay [chunkRows, V]),
/// the softmax cross-entropy, and back.
extension HeadTrainer {
    /// The rows of one LM-head product for a vocabulary of `v`: as many as keep its logits within
    /// 64 MiB. Large chunks matter: each product repacks the whole LM head.
    static func chunkRows(vocabulary v: Int) -> Int { max(1, (1 << 24) / v) }

    /// Scores `batch`; with `backward`, also leaves the loss's gradient in `gradients`.
    func pass(_ batch: TrainingBatch, backward: Bool) throws(HeadTrainerError) -> BatchStatistics {
        let rows = try check(batch)
        let c = configuration
        let h = c.hiddenSize, v = c.vocabularySize
        let chunkRows = min(self.chunkRows, rows)
        let buffers = PassBuffers(rows: rows, layers: c.layers, hidden: h, vocabulary: v, chunkRows: chunkRows)
        if backward { gradients.initialize(repeating: 0) }
        var statistics = BatchStatistics(
            loss: 0, headLoss: Array(repeating: 0, count: c.heads), top1Correct: Array(repeating: 0, count: c.heads),
            top5Correct: Array(repeating: 0, count: c.heads), targetCount: Array(repeating: 0, count: c.heads))

        batch.hidden.withUnsafeBufferPointer { hidden in
            baseLMHead.withUnsafeBufferPointer { base in
                for k in 0..<c.heads {
                    let final = forwardBlocks(k, hidden: hidden.baseAddress!, rows: rows, buffers)
                    let lmHead = c.ownLMHead ? UnsafePointer(parameters.baseAddress! + layout.lmHead(k)) : base.baseAddress!
                    let lmGradient = c.ownLMHead && backward ? gradients.baseAddress! + layout.lmHead(k) : nil
                    let targets = batch.targets[k]
                    let scored = (0..<rows).filter { targets[$0] >= 0 }
                    guard !scored.isEmpty else { continue }
                    let weight = c.lossWeight(head: k)
                    let gradientScale = weight / Float(scored.count)
                    if backward { buffers.stateGradient.initialize(repeating: 0) }
                    var lossSum = 0.0
                    for start in stride(from: 0, to: scored.count, by: chunkRows) {
                        let chunk = scored[start..<min(start + chunkRows, scored.count)]
                        let x = buffers.chunkStates.baseAddress!, logits = buffers.chunkLogits.baseAddress!
                        for (j, i) in chunk.enumerated() { (x + j * h).update(from: final + i * h, count: h) }
                        gemm(transposeB: true, m: chunk.count, n: v, k: h, a: x, lda: h, b: lmHead, ldb: h,
                             c: logits, ldc: v)
                        for (j, i) in chunk.enumerated() {
                            let score = Self.score(logits + j * v, count: v, target: Int(targets[i]),
                                                   gradientScale: backward ? gradientScale : nil)
                            lossSum += score.loss
                            if score.rank < 1 { statistics.top1Correct[k] += 1 }
                            if score.rank < 5 { statistics.top5Correct[k] += 1 }
                        }
                        guard backward else { continue }
                        // Through the LM head: dX = dLogits · LMHead; its own LM head's gradient is dLogitsᵀ · X.
                        let dx = buffers.chunkStateGradient.baseAddress!
                        gemm(m: chunk.count, n: h, k: v, a: logits, lda: v, b: lmHead, ldb: h, c: dx, ldc: h)
                        for (j, i) in chunk.enumerated() {
                            let g = buffers.stateGradient.baseAddress! + i * h, d = dx + j * h
                            for e in 0..<h { g[e] += d[e] }
                        }
                        if let lmGradient {
                            gemm(transposeA: true, m: v, n: h, k: chunk.count, a: logits, lda: v, b: x, ldb: h,
                                 beta: 1, c: lmGradient, ldc: h)
                        }
                    }
                    statistics.targetCount[k] = scored.count
                    statistics.headLoss[k] = lossSum / Double(scored.count)
                    statistics.loss += Double(weight) * statistics.headLoss[k]
                    if backward { backwardBlocks(k, hidden: hidden.baseAddress!, rows: rows, buffers) }
                }
            }
        }
        return statistics
    }

    /// Each head's logits [rows, V] for `hidden` [rows, H] (for comparing with inference).
    func logits(hidden: [Float]) -> [[Float]] {
        let c = configuration
        let h = c.hiddenSize, v = c.vocabularySize, rows = hidden.count / h
        precondition(rows * h == hidden.count && rows > 0, "hidden states are [rows, hidden]")
        let buffers = PassBuffers(rows: rows, layers: c.layers, hidden: h, vocabulary: v, chunkRows: 0)
        return hidden.withUnsafeBufferPointer { hidden in
            baseLMHead.withUnsafeBufferPointer { base in
                (0..<c.heads).map { k in
                    let final = forwardBlocks(k, hidden: hidden.baseAddress!, rows: rows, buffers)
                    let lmHead = c.ownLMHead ? UnsafePointer(parameters.baseAddress! + layout.lmHead(k)) : base.baseAddress!
                    var out = [Float](repeating: 0, count: rows * v)
                    out.withUnsafeMutableBufferPointer { out in
                        gemm(transposeB: true, m: rows, n: v, k: h, a: final, lda: h, b: lmHead, ldb: h,
                             c: out.baseAddress!, ldc: v)
                    }
                    return out
                }
            }
        }
    }

    /// The number of rows of `batch`, after checking that it fits the trainer.
    private func check(_ batch: TrainingBatch) throws(HeadTrainerError) -> Int {
        let c = configuration
        guard !batch.hidden.isEmpty, batch.hidden.count % c.hiddenSize == 0 else {
            throw .badBatch(reason: "\(batch.hidden.count) hidden values are not a positive number of rows of "
                + "\(c.hiddenSize)")
        }
        let rows = batch.hidden.count / c.hiddenSize
        guard batch.targets.count == c.heads else {
            throw .badBatch(reason: "targets for \(batch.targets.count) heads, expected \(c.heads)")
        }
        for (k, targets) in batch.targets.enumerated() {
            guard targets.count == rows else {
                throw .badBatch(reason: "head \(k) has \(targets.count) targets for \(rows) rows of hidden states")
            }
            if let i = targets.firstIndex(where: { $0 < -1 || Int($0) >= c.vocabularySize }) {
                throw .targetOutOfVocabulary(head: k, row: i, token: targets[i], vocabulary: c.vocabularySize)
            }
        }
        return rows
    }

    /// Head k's blocks over all rows of `hidden`, keeping each block's pre-activation Z = X Wᵀ + b
    /// and output X + SiLU(Z) in `buffers`; returns the last output.
    private func forwardBlocks(
        _ k: Int, hidden: UnsafePointer<Float>, rows: Int, _ buffers: PassBuffers
    ) -> UnsafePointer<Float> {
        let h = configuration.hiddenSize, size = rows * h
        var x = hidden
        for l in 0..<configuration.layers {
            let z = buffers.preactivations.baseAddress! + l * size, y = buffers.states.baseAddress! + l * size
            let bias = parameters.baseAddress! + layout.bias(k, l)
            for i in 0..<rows { (z + i * h).update(from: bias, count: h) }
            gemm(transposeB: true, m: rows, n: h, k: h, a: x, lda: h, b: parameters.baseAddress! + layout.weight(k, l),
                 ldb: h, beta: 1, c: z, ldc: h)
            for e in 0..<size { y[e] = x[e] + z[e] / (1 + expf(-z[e])) }
            x = UnsafePointer(y)
        }
        return x
    }

    /// Back through head k's blocks from `buffers.stateGradient` (∂loss/∂ the last output), into
    /// the blocks' gradients. Consumes `stateGradient`.
    private func backwardBlocks(_ k: Int, hidden: UnsafePointer<Float>, rows: Int, _ buffers: PassBuffers) {
        let h = configuration.hiddenSize, size = rows * h
        let g = buffers.stateGradient.baseAddress!, dz = buffers.preactivationGradient.baseAddress!
        for l in (0..<configuration.layers).reversed() {
            let x = l == 0 ? hidden : UnsafePointer(buffers.states.baseAddress! + (l - 1) * size)
            let z = buffers.preactivations.baseAddress! + l * size
            // y = x + SiLU(z): dZ = dY ⊙ SiLU'(z), SiLU'(z) = s (1 + z (1 - s)) with s = sigmoid(z).
            for e in 0..<size {
                let s = 1 / (1 + expf(-z[e]))
                dz[e] = g[e] * s * (1 + z[e] * (1 - s))
            }
            // dW = dZᵀ X; db = the column sums of dZ.
            gemm(transposeA: true, m: h, n: h, k: rows, a: dz, lda: h, b: x, ldb: h,
                 c: gradients.baseAddress! + layout.weight(k, l), ldc: h)
            let db = gradients.baseAddress! + layout.bias(k, l)
            for i in 0..<rows {
                for e in 0..<h { db[e] += dz[i * h + e] }
            }
            // dX = dY + dZ W; the hidden states themselves are not trained.
            if l > 0 {
                gemm(m: rows, n: h, k: h, a: dz, lda: h, b: parameters.baseAddress! + layout.weight(k, l), ldb: h,
                     beta: 1, c: g, ldc: h)
            }
        }
    }

    /// One row's cross-entropy against `target` (softmax with the maximum subtracted, the
    /// exponentials summed in fp32 blocks and the blocks in Double) and the target's rank: how
    /// many tokens `topTokens` would put before it (larger logits, and equal ones at lower
    /// indices; all when the target's logit is NaN). With `gradientScale`, replaces the logits by
    /// gradientScale * (softmax - onehot(target)).
    static func score(
        _ logits: UnsafeMutablePointer<Float>, count v: Int, target t: Int, gradientScale: Float?
    ) -> (loss: Double, rank: Int) {
        let targetLogit = logits[t], target8 = SIMD8<Float>(repeating: targetLogit)
        let wide = v - v % 8
        var maxima = SIMD8<Float>(repeating: -.infinity)
        var greater = SIMD8<Int32>.zero
        for j in stride(from: 0, to: wide, by: 8) {
            let x = load8(logits + j)
            maxima = maxima.replacing(with: x, where: x .> maxima)
            greater &+= SIMD8<Int32>.zero.replacing(with: 1, where: x .> target8)
        }
        var maximum = maxima.max()
        var rank = Int(greater.wrappedSum())
        for j in wide..<v {
            maximum = max(maximum, logits[j])
            if logits[j] > targetLogit { rank += 1 }
        }
        // Ties before the target rank ahead of it too.
        let tiesWide = t - t % 8
        var ties = SIMD8<Int32>.zero
        for j in stride(from: 0, to: tiesWide, by: 8) {
            ties &+= SIMD8<Int32>.zero.replacing(with: 1, where: load8(logits + j) .== target8)
        }
        rank += Int(ties.wrappedSum())
        for j in tiesWide..<t where logits[j] == targetLogit { rank += 1 }
        if targetLogit.isNaN { rank = v }

        // The exponentials, summed 256 at a time in fp32 lanes, the blocks' sums in Double.
        let maximum8 = SIMD8<Float>(repeating: maximum)
        var sum = 0.0
        for block in stride(from: 0, to: wide, by: 256) {
            var sums = SIMD8<Float>.zero
            for j in stride(from: block, to: min(block + 256, wide), by: 8) {
                let e = exp8(load8(logits + j) - maximum8)
                store8(e, logits + j)
                sums += e
            }
            sum += Double(sums.sum())
        }
        for j in wide..<v {
            logits[j] = expf(logits[j] - maximum)
            sum += Double(logits[j])
        }
        let loss = Double(maximum) + log(sum) - Double(targetLogit)
        if let gradientScale {
            let factor = Float(Double(gradientScale) / sum)
            for j in 0..<v { logits[j] *= factor }
            logits[t] -= gradientScale
        }
        return (loss, rank)
    }

    /// e^x for x <= 0 within about 2 ulp, and e^-87 (near the smallest normal fp32) for x below
    /// -87: x = n ln 2 + r with |r| <= ln 2 / 2, e^r by its Taylor series to r^7 (the next term is
    /// below 3e-9), times 2^n built in the exponent bits.
    @inline(__always)
    static func exp8(_ x: SIMD8<Float>) -> SIMD8<Float> {
        // (A select of this form compiles to one max instruction; a mask kept in a variable does not.)
        let floor = SIMD8<Float>(repeating: -87)
        let clamped = x.replacing(with: floor, where: floor .> x)
        // Adding 1.5 * 2^23 rounds x log2(e) to the nearest integer n, which then sits in the low
        // bits of the sum's mantissa.
        let shifter = SIMD8<Float>(repeating: 12_582_912)
        let shifted = clamped * SIMD8(repeating: 1.442_695_04) + shifter
        let n = shifted - shifter
        // ln 2 in two parts, the first with few enough bits that n times it is exact.
        let r = clamped - n * SIMD8(repeating: 0.693_145_751_953_125) - n * SIMD8(repeating: 1.428_606_765_330_187e-6)
        var p = SIMD8<Float>(repeating: 1.0 / 5040) * r + SIMD8(repeating: 1.0 / 720)
        p = p * r + SIMD8(repeating: 1.0 / 120)
        p = p * r + SIMD8(repeating: 1.0 / 24)
        p = p * r + SIMD8(repeating: 1.0 / 6)
        p = p * r + SIMD8(repeating: 0.5)
        p = p * r + SIMD8(repeating: 1)
        p = p * r + SIMD8(repeating: 1)
        let exponent = unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- unsafeBitCast(shifter, to: SIMD8<Int32>.self)
        let scale = unsafeBitCast((exponent &+ 127) &<< 23, to: SIMD8<Float>.self)
        return p * scale
    }

    @inline(__always)
    private static func load8(_ p: UnsafeMutablePointer<Float>) -> SIMD8<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
    }

    @inline(__always)
    private static func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
    }
}

/// C = alpha op(A) op(B) + beta C, row-major fp32, op(A) [m, k], op(B) [k, n].
private func gemm(
    transposeA: Bool = false, transposeB: Bool = false, m: Int, n: Int, k: Int,
    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int, beta: Float = 0,
    c: UnsafeMutablePointer<Float>, ldc: Int
) {
    cblas_sgemm(CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
                Int32(m), Int32(n), Int32(k), 1, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// Scratch for one pass over `rows` rows, freed with it.
private final class PassBuffers {
    /// [L, rows, H]: each block's pre-activation and output.
    let preactivations: UnsafeMutableBufferPointer<Float>
    let states: UnsafeMutableBufferPointer<Float>
    /// [rows, H]: ∂loss/∂ a block's output, and ∂loss/∂ its pre-activation.
    let stateGradient: UnsafeMutableBufferPointer<Float>
    let preactivationGradient: UnsafeMutableBufferPointer<Float>
    /// One LM-head chunk: its rows' states [chunkRows, H], logits [chunkRows, V], ∂loss/∂ states [chunkRows, H].
    let chunkStates: UnsafeMutableBufferPointer<Float>
    let chunkLogits: UnsafeMutableBufferPointer<Float>
    let chunkStateGradient: UnsafeMutableBufferPointer<Float>

    init(rows: Int, layers: Int, hidden: Int, vocabulary: Int, chunkRows chunk: Int) {
        preactivations = .allocate(capacity: layers * rows * hidden)
        states = .allocate(capacity: layers * rows * hidden)
        stateGradient = .allocate(capacity: rows * hidden)
        preactivationGradient = .allocate(capacity: rows * hidden)
        chunkStates = .allocate(capacity: chunk * hidden)
        chunkLogits = .allocate(capacity: chunk * vocabulary)
        chunkStateGradient = .allocate(capacity: chunk * hidden)
    }

    deinit {
        for buffer in [preactivations, states, stateGradient, preactivationGradient, chunkStates, chunkLogits,
                       chunkStateGradient] {
            buffer.deallocate()
        }
    }
}
