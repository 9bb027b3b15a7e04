import Worker

/// Proposes each depth's guesses for the next candidate tree. The Medusa heads are the real source;
/// tests put a source that knows the true continuation behind the same interface.
public protocol CandidateSource: AnyObject {
    /// How many tokens ahead it can guess: the deepest tree it can fill.
    var depth: Int { get }

    /// For d in 1...topK.count, the topK[d - 1] tokens it expects d places after the root, best
    /// first. `hidden` is the base model's final-normed hidden state at the last committed token
    /// (the one whose logits chose the root); `sequence` is every token so far, prompt and output,
    /// ending with the root.
    func propose(hidden: UnsafePointer<Float>, sequence: [Int32], topK: [Int]) -> [[Int32]]
}

/// The Medusa heads on rank 0: K residual stacks over the base model's last hidden state, each
/// ending in an LM head; head d's top-k are the depth-d candidates.
public final class MedusaHeads: CandidateSource {
    public let weights: MedusaHeadWeights
    private let model: LlamaModel
    private let hiddenSize: Int
    /// The columns of `logits`: the vocabulary, or the candidate tokens' count.
    private let vocabularySize: Int
    /// With candidate tokens: the base LM head's rows of those tokens, scored instead of the whole.
    private let candidateLMHead: WeightMatrix?
    // Scratch, allocated once: head states [K, hidden], one block's product [hidden], logits [K, vocabulary].
    private var states: [Float]
    private var product: [Float]
    private var logits: [Float]

    /// Checks that the heads fit `model` (hidden size, vocabulary).
    public init(weights: MedusaHeadWeights, model: LlamaModel) throws(WeightFileError) {
        try weights.validate(hiddenSize: model.config.hiddenSize, vocabularySize: model.config.vocabularySize)
        self.weights = weights
        self.model = model
        hiddenSize = model.config.hiddenSize
        if let candidates = weights.candidateTokens {
            guard let last = candidates.last, Int(last) < model.config.vocabularySize else {
                throw WeightFileError(path: weights.path, problem: .badHeads(
                    reason: "candidate tokens outside the model's vocabulary of \(model.config.vocabularySize)"))
            }
            candidateLMHead = model.weights.output.gatheringRows(candidates.map(Int.init)).prepared(for: model.matmulInputs)
            vocabularySize = candidates.count
        } else {
            candidateLMHead = nil
            vocabularySize = model.config.vocabularySize
        }
        states = [Float](repeating: 0, count: weights.heads.count * hiddenSize)
        product = [Float](repeating: 0, count: hiddenSize)
        logits = [Float](repeating: 0, count: weights.heads.count * vocabularySize)
    }

    public var depth: Int { weights.heads.count }

    public func propose(hidden: UnsafePointer<Float>, sequence: [Int32], topK: [Int]) -> [[Int32]] {
        let used = topK.count
        precondition(used <= depth, "a tree of depth \(used) needs that many heads")
        guard used > 0 else { return [] }
        let h = hiddenSize, v = vocabularySize, pool = model.pool
        states.withUnsafeMutableBufferPointer { states in
            product.withUnsafeMutableBufferPointer { product in
                for k in 0..<used {
                    let x = states.baseAddress! + k * h
                    x.update(from: hidden, count: h)
                    for block in weights.heads[k].blocks {
                        MatMul.multiply(block.weight, x: x, xStride: h, n: 1, y: product.baseAddress!, yStride: h, pool: pool,
                                        inputs: model.matmulInputs)
                        for i in 0..<h {
                            let z = product[i] + block.bias[i]
                            x[i] += z / (1 + expf(-z))
                        }
                    }
                }
            }
            logits.withUnsafeMutableBufferPointer { out in
                if let candidateLMHead {
                    // The base LM head's rows, multiplied as `model.logits` multiplies the whole.
                    MatMul.multiply(candidateLMHead, x: states.baseAddress!, xStride: h, n: used,
                                    y: out.baseAddress!, yStride: v, pool: pool, inputs: model.matmulInputs)
                } else if weights.sharesLMHead {
                    // All heads' states through the base LM head as one matmul of `used` rows.
                    model.logits(hidden: states.baseAddress!, rows: used, into: out.baseAddress!)
                } else {
                    for k in 0..<used {
                        MatMul.multiply(weights.heads[k].lmHead!, x: states.baseAddress! + k * h, xStride: h, n: 1,
                                        y: out.baseAddress! + k * v, yStride: v, pool: pool, inputs: model.matmulInputs)
                    }
                }
            }
        }
        let candidates = weights.candidateTokens
        return logits.withUnsafeBufferPointer { all in
            (0..<used).map { k in
                let top = topTokens(UnsafeBufferPointer(rebasing: all[(k * v)..<((k + 1) * v)]), count: topK[k])
                return candidates.map { c in top.map { c[Int($0)] } } ?? top
            }
        }
    }
}

/// The `count` largest values' indices, largest first; ties go to the lower index; NaNs never count.
public func topTokens(_ values: UnsafeBufferPointer<Float>, count: Int) -> [Int32] {
    let k = min(count, values.count)
    guard k > 0 else { return [] }
    // A sorted list of the best k so far; most values fail the first comparison.
    var best: [(value: Float, index: Int32)] = []
    best.reserveCapacity(k + 1)
    for (i, x) in values.enumerated() {
        if x.isNaN || (best.count == k && !(x > best[k - 1].value)) { continue }
        var at = best.count
        while at > 0 && x > best[at - 1].value { at -= 1 }
        best.insert((x, Int32(i)), at: at)
        if best.count > k { best.removeLast() }
    }
    return best.map(\.index)
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
