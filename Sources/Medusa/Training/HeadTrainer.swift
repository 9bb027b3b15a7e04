#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Trains Medusa heads on a frozen base model (Medusa-1, Cai et al., 2024): the heads of
/// `MedusaHeadWeights` (K heads of L residual blocks x <- x + SiLU(W x + b), then the base model's
/// LM head, frozen, or the head's own, trainable) over batches of the base model's final-normed
/// hidden states. Head k at a position predicts the token 2 + k places on; the loss is
/// sum_k lossDecay^k * (head k's mean cross-entropy over its rows with a target), minimised with
/// AdamW under linear warm-up then cosine decay, the gradient clipped to a global L2 norm.
///
/// The blocks start at W = 0, b = 0 (as FasterDecoding's do), so an untrained head is the identity
/// followed by its LM head; own LM heads start as copies of the base LM head. Nothing is random:
/// the same configuration and batches give bit-identical parameters (OpenBLAS computes the
/// products; keep its thread count fixed between runs that must agree).
public final class HeadTrainer {
    public struct Configuration: Sendable, Equatable {
        /// K.
        public var heads: Int
        /// L: residual blocks per head.
        public var layers: Int
        /// H: the base model's hidden size.
        public var hiddenSize: Int
        /// V: the base model's vocabulary.
        public var vocabularySize: Int
        /// Whether each head trains its own LM head rather than sharing the base model's.
        public var ownLMHead: Bool
        /// The peak learning rate.
        public var learningRate: Float
        /// AdamW's decoupled weight decay, applied to the matrices (blocks and own LM heads), not the biases.
        public var weightDecay: Float
        public var beta1: Float
        public var beta2: Float
        public var epsilon: Float
        /// Steps of linear warm-up to the peak learning rate.
        public var warmupSteps: Int
        /// The step at which the cosine decay after the warm-up reaches 0.
        public var totalSteps: Int
        /// The largest global L2 norm of the gradient; a larger one is scaled down to it. 0: no clipping.
        public var gradientClip: Float
        /// Head k's loss weighs lossDecay^k.
        public var lossDecay: Float
        /// The seed of the caller's data order, kept in checkpoints so that a resumed run can replay
        /// it; the trainer itself draws no random numbers.
        public var seed: UInt64

        public init(
            heads: Int, layers: Int, hiddenSize: Int, vocabularySize: Int, ownLMHead: Bool = false,
            learningRate: Float = 1e-3, weightDecay: Float = 0, beta1: Float = 0.9, beta2: Float = 0.999,
            epsilon: Float = 1e-8, warmupSteps: Int = 0, totalSteps: Int, gradientClip: Float = 1,
            lossDecay: Float = 0.8, seed: UInt64 = 0
        ) {
            self.heads = heads
            self.layers = layers
            self.hiddenSize = hiddenSize
            self.vocabularySize = vocabularySize
            self.ownLMHead = ownLMHead
            self.learningRate = learningRate
            self.weightDecay = weightDecay
            self.beta1 = beta1
            self.beta2 = beta2
            self.epsilon = epsilon
            self.warmupSteps = warmupSteps
            self.totalSteps = totalSteps
            self.gradientClip = gradientClip
            self.lossDecay = lossDecay
            self.seed = seed
        }

        /// The learning rate of update `step` (0 for the first): linear warm-up, lr * (step + 1) /
        /// warmupSteps, reaching the peak at the last warm-up step; then cosine decay from the peak
        /// at `warmupSteps` to 0 at `totalSteps`, and 0 after.
        public func learningRate(atStep step: Int) -> Float {
            if step < warmupSteps { return learningRate * Float(step + 1) / Float(warmupSteps) }
            guard step < totalSteps else { return 0 }
            let progress = Double(step - warmupSteps) / Double(totalSteps - warmupSteps)
            return Float(Double(learningRate) * 0.5 * (1 + cos(Double.pi * progress)))
        }

        /// Head k's weight in the loss: lossDecay^k.
        public func lossWeight(head k: Int) -> Float {
            Float(pow(Double(lossDecay), Double(k)))
        }

        /// Checks every field's range; the error names the first one out of range.
        public func validate() throws(HeadTrainerError) {
            func check(_ ok: Bool, _ field: String, _ reason: String) throws(HeadTrainerError) {
                guard ok else { throw .badConfiguration(field: field, reason: reason) }
            }
            let int32 = Int(Int32.max)
            try check(heads >= 1, "heads", "is \(heads), must be at least 1")
            try check(layers >= 1, "layers", "is \(layers), must be at least 1")
            try check((1...int32).contains(hiddenSize), "hiddenSize", "is \(hiddenSize), must be in 1...\(int32)")
            try check((1...int32).contains(vocabularySize), "vocabularySize",
                      "is \(vocabularySize), must be in 1...\(int32)")
            try check(ParameterLayout.count(of: self) != nil, "heads", "is \(heads): \(heads) heads of \(layers) "
                + "blocks of hidden size \(hiddenSize)\(ownLMHead ? " with their own LM heads" : "") are too many parameters")
            try check(learningRate.isFinite && learningRate >= 0, "learningRate", "is \(learningRate), must be >= 0")
            try check(weightDecay.isFinite && weightDecay >= 0, "weightDecay", "is \(weightDecay), must be >= 0")
            try check(beta1 >= 0 && beta1 < 1, "beta1", "is \(beta1), must be in [0, 1)")
            try check(beta2 >= 0 && beta2 < 1, "beta2", "is \(beta2), must be in [0, 1)")
            try check(epsilon.isFinite && epsilon > 0, "epsilon", "is \(epsilon), must be > 0")
            try check(warmupSteps >= 0, "warmupSteps", "is \(warmupSteps), must be >= 0")
            try check(totalSteps >= 1, "totalSteps", "is \(totalSteps), must be at least 1")
            try check(warmupSteps <= totalSteps, "warmupSteps", "is \(warmupSteps), more than totalSteps \(totalSteps)")
            try check(gradientClip.isFinite && gradientClip >= 0, "gradientClip",
                      "is \(gradientClip), must be >= 0 (0: no clipping)")
            try check(lossDecay.isFinite && lossDecay > 0, "lossDecay", "is \(lossDecay), must be > 0")
        }
    }

    public let configuration: Configuration
    /// Updates made so far.
    public internal(set) var step = 0

    /// Rows per LM-head product (see `chunkRows(vocabulary:)`; tests set fewer).
    var chunkRows: Int
    /// The base model's LM head [V, H], frozen.
    let baseLMHead: [Float]
    /// `checksum(baseLMHead)`, recorded in checkpoints.
    let baseLMHeadChecksum: UInt64
    let layout: ParameterLayout
    // Flat vectors of `layout.count`, owned: the parameters, their gradient, and AdamW's moments.
    let parameters: UnsafeMutableBufferPointer<Float>
    let gradients: UnsafeMutableBufferPointer<Float>
    let firstMoments: UnsafeMutableBufferPointer<Float>
    let secondMoments: UnsafeMutableBufferPointer<Float>

    /// Heads with zero blocks and, with `ownLMHead`, LM heads copied from `baseLMHead` ([V, H],
    /// row-major, fp32; kept, never changed). A configuration out of range or an LM head of the
    /// wrong size is an error.
    public init(configuration: Configuration, baseLMHead: [Float]) throws(HeadTrainerError) {
        try configuration.validate()
        let expected = configuration.vocabularySize * configuration.hiddenSize
        guard baseLMHead.count == expected else { throw .badLMHead(expected: expected, found: baseLMHead.count) }
        self.configuration = configuration
        self.baseLMHead = baseLMHead
        baseLMHeadChecksum = Self.checksum(baseLMHead)
        chunkRows = Self.chunkRows(vocabulary: configuration.vocabularySize)
        let layout = ParameterLayout(configuration)
        self.layout = layout
        func zeros() -> UnsafeMutableBufferPointer<Float> {
            let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: layout.count)
            buffer.initialize(repeating: 0)
            return buffer
        }
        parameters = zeros()
        gradients = zeros()
        firstMoments = zeros()
        secondMoments = zeros()
        if configuration.ownLMHead {
            baseLMHead.withUnsafeBufferPointer { base in
                for k in 0..<configuration.heads {
                    (parameters.baseAddress! + layout.lmHead(k)).update(from: base.baseAddress!, count: expected)
                }
            }
        }
    }

    deinit {
        parameters.deallocate()
        gradients.deallocate()
        firstMoments.deallocate()
        secondMoments.deallocate()
    }

    /// Scores the heads on `batch` without changing anything.
    public func evaluate(_ batch: TrainingBatch) throws(HeadTrainerError) -> BatchStatistics {
        try pass(batch, backward: false)
    }

    /// One step: the loss and its gradient on `batch`, the gradient clipped, then an AdamW update
    /// at `learningRate(atStep: step)`. Returns the batch's statistics before the update, with the
    /// gradient norm and learning rate. A bad batch or a non-finite gradient is an error, and
    /// leaves the trainer as it was.
    public func train(_ batch: TrainingBatch) throws(HeadTrainerError) -> BatchStatistics {
        var statistics = try pass(batch, backward: true)
        let norm = gradientNorm()
        guard norm.isFinite else { throw .nonFiniteGradient(step: step) }
        let clip = Double(configuration.gradientClip)
        if clip > 0 && norm > clip {
            let scale = Float(clip / norm)
            for i in gradients.indices { gradients[i] *= scale }
        }
        let rate = configuration.learningRate(atStep: step)
        update(learningRate: rate)
        step += 1
        statistics.gradientNorm = norm
        statistics.learningRate = rate
        return statistics
    }

    /// The heads' parameters in the shapes `MedusaHeadWeights.write` takes: per head, per block,
    /// the weight [H, H] (row-major, out x in) and bias [H]; the own LM heads [V, H], or nil when
    /// the heads share the base model's.
    public func export() -> (blocks: [[(weight: [Float], bias: [Float])]], lmHeads: [[Float]]?) {
        let c = configuration, h = c.hiddenSize
        func values(_ offset: Int, _ count: Int) -> [Float] {
            Array(UnsafeBufferPointer(rebasing: parameters[offset..<(offset + count)]))
        }
        let blocks = (0..<c.heads).map { k in
            (0..<c.layers).map { l in (weight: values(layout.weight(k, l), h * h), bias: values(layout.bias(k, l), h)) }
        }
        let lmHeads = c.ownLMHead ? (0..<c.heads).map { values(layout.lmHead($0), c.vocabularySize * h) } : nil
        return (blocks, lmHeads)
    }

    /// The same heads scoring against another LM head of the same hidden size, for heads that share
    /// the base model's: training over a subset of the vocabulary (the LM head's rows of the tokens
    /// the data holds) is cheaper, and this scores the result over the whole vocabulary. The copy
    /// starts at this trainer's step with fresh optimizer moments.
    public func rescored(baseLMHead: [Float]) throws(HeadTrainerError) -> HeadTrainer {
        precondition(!configuration.ownLMHead, "heads with their own LM heads cannot change vocabulary")
        var c = configuration
        c.vocabularySize = baseLMHead.count / c.hiddenSize
        guard c.vocabularySize * c.hiddenSize == baseLMHead.count, c.vocabularySize > 0 else {
            throw .badLMHead(expected: c.vocabularySize * c.hiddenSize, found: baseLMHead.count)
        }
        let copy = try HeadTrainer(configuration: c, baseLMHead: baseLMHead)
        copy.parameters.baseAddress!.update(from: parameters.baseAddress!, count: layout.count)
        copy.step = step
        return copy
    }

    /// The global L2 norm of `gradients`, accumulated in Double.
    func gradientNorm() -> Double {
        var sum = 0.0
        for g in gradients { sum += Double(g) * Double(g) }
        return sum.squareRoot()
    }

    /// AdamW (decoupled weight decay, bias-corrected moments, as PyTorch's) on every parameter.
    private func update(learningRate rate: Float) {
        let c = configuration
        let t = Double(step + 1)
        let stepSize = Float(Double(rate) / (1 - pow(Double(c.beta1), t)))
        let rootCorrection = Float((1 - pow(Double(c.beta2), t)).squareRoot())
        let (beta1, beta2, epsilon) = (c.beta1, c.beta2, c.epsilon)
        let p = parameters.baseAddress!, g = gradients.baseAddress!
        let m = firstMoments.baseAddress!, v = secondMoments.baseAddress!
        for tensor in layout.tensors {
            let decay: Float = tensor.decays ? 1 - rate * c.weightDecay : 1
            for i in tensor.offset..<(tensor.offset + tensor.count) {
                m[i] = beta1 * m[i] + (1 - beta1) * g[i]
                v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i]
                p[i] = p[i] * decay - stepSize * m[i] / (v[i].squareRoot() / rootCorrection + epsilon)
            }
        }
    }

    /// FNV-1a over the values' bit patterns: tells one base LM head from another.
    static func checksum(_ values: [Float]) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for x in values { hash = (hash ^ UInt64(x.bitPattern)) &* 0x0000_0100_0000_01b3 }
        return hash
    }
}

/// Where each trainable tensor lives in the flat parameter vector: head after head, each head's
/// blocks in order (weight [H, H] then bias [H]); then, when the heads have their own, the LM
/// heads [V, H]. Tensors are named as in this project's heads files.
struct ParameterLayout {
    struct Tensor {
        var name: String
        var shape: [Int]
        var offset: Int
        var count: Int
        /// Whether weight decay applies (matrices, not biases).
        var decays: Bool
    }

    let tensors: [Tensor]
    /// The parameter count.
    let count: Int
    private let layers: Int
    private let hidden: Int
    private let vocabulary: Int
    private let blocksEnd: Int

    /// The parameter count of `configuration`, or nil when it overflows.
    static func count(of c: HeadTrainer.Configuration) -> Int? {
        let (block, o1) = c.hiddenSize.multipliedReportingOverflow(by: c.hiddenSize + 1)
        let (perHead, o2) = block.multipliedReportingOverflow(by: c.layers)
        let (blocks, o3) = perHead.multipliedReportingOverflow(by: c.heads)
        let (lmHead, o4) = c.vocabularySize.multipliedReportingOverflow(by: c.hiddenSize)
        let (lmHeads, o5) = lmHead.multipliedReportingOverflow(by: c.ownLMHead ? c.heads : 0)
        let (total, o6) = blocks.addingReportingOverflow(lmHeads)
        // Headroom for the offsets' arithmetic and for a file of three such vectors.
        return o1 || o2 || o3 || o4 || o5 || o6 || total > 1 << 40 ? nil : total
    }

    init(_ c: HeadTrainer.Configuration) {
        layers = c.layers
        hidden = c.hiddenSize
        vocabulary = c.vocabularySize
        blocksEnd = c.heads * c.layers * (hidden * hidden + hidden)
        count = Self.count(of: c)!
        var tensors: [Tensor] = []
        for k in 0..<c.heads {
            for l in 0..<c.layers {
                let w = (k * layers + l) * (hidden * hidden + hidden)
                tensors.append(Tensor(name: "medusa.\(k).\(l).weight", shape: [hidden, hidden], offset: w,
                                      count: hidden * hidden, decays: true))
                tensors.append(Tensor(name: "medusa.\(k).\(l).bias", shape: [hidden], offset: w + hidden * hidden,
                                      count: hidden, decays: false))
            }
        }
        if c.ownLMHead {
            for k in 0..<c.heads {
                tensors.append(Tensor(name: "medusa.\(k).lm_head.weight", shape: [vocabulary, hidden],
                                      offset: blocksEnd + k * vocabulary * hidden, count: vocabulary * hidden,
                                      decays: true))
            }
        }
        self.tensors = tensors
    }

    /// Head k block l's weight [H, H].
    func weight(_ k: Int, _ l: Int) -> Int { (k * layers + l) * (hidden * hidden + hidden) }
    /// Head k block l's bias [H].
    func bias(_ k: Int, _ l: Int) -> Int { weight(k, l) + hidden * hidden }
    /// Head k's own LM head [V, H].
    func lmHead(_ k: Int) -> Int { blocksEnd + k * vocabulary * hidden }
}
