/// One batch for `HeadTrainer`: N final-normed hidden states of the base model and each head's
/// target token for every row.
public struct TrainingBatch: Sendable {
    /// [N, hidden], row-major: the base model's last hidden state (after the final RMSNorm) at N
    /// positions.
    public var hidden: [Float]
    /// `targets[k][i]`: the token head k should predict at row i (the token 2 + k places after the
    /// row's position), or -1 when there is none (the sequence ends first). K arrays of N.
    public var targets: [[Int32]]

    public init(hidden: [Float], targets: [[Int32]]) {
        self.hidden = hidden
        self.targets = targets
    }
}

/// How the heads did on one batch: the loss `HeadTrainer` minimises and each head's accuracy.
/// `train` scores the parameters it started from, before its update.
public struct BatchStatistics: Sendable, Equatable {
    /// sum over heads of lossWeight(k) * headLoss[k].
    public var loss: Double
    /// Each head's mean cross-entropy (natural log) over its rows with a target; 0 for a head with none.
    public var headLoss: [Double]
    /// Per head: rows whose target is the head's most likely token.
    public var top1Correct: [Int]
    /// Per head: rows whose target is among the head's 5 most likely tokens.
    public var top5Correct: [Int]
    /// Per head: rows with a target.
    public var targetCount: [Int]
    /// The global L2 norm of the gradient before clipping; nil from `evaluate`.
    public var gradientNorm: Double?
    /// The learning rate of the update; nil from `evaluate`.
    public var learningRate: Float?

    public init(loss: Double, headLoss: [Double], top1Correct: [Int], top5Correct: [Int], targetCount: [Int],
                gradientNorm: Double? = nil, learningRate: Float? = nil) {
        self.loss = loss
        self.headLoss = headLoss
        self.top1Correct = top1Correct
        self.top5Correct = top5Correct
        self.targetCount = targetCount
        self.gradientNorm = gradientNorm
        self.learningRate = learningRate
    }
}

/// A configuration, batch or step `HeadTrainer` cannot work with, or a checkpoint it cannot write.
public enum HeadTrainerError: Error, CustomStringConvertible, Sendable, Equatable {
    /// A configuration field out of range.
    case badConfiguration(field: String, reason: String)
    /// The base LM head does not have vocabulary x hidden values.
    case badLMHead(expected: Int, found: Int)
    /// A batch whose shapes do not fit the trainer.
    case badBatch(reason: String)
    /// A target that is neither -1 nor a token of the vocabulary.
    case targetOutOfVocabulary(head: Int, row: Int, token: Int32, vocabulary: Int)
    /// The gradient holds an infinity or a NaN (from the batch's hidden states or a diverging run);
    /// nothing was updated.
    case nonFiniteGradient(step: Int)
    /// A checkpoint could not be written; any previous file at `path` is untouched.
    case cannotWrite(path: String, reason: String)

    public var description: String {
        switch self {
        case .badConfiguration(let field, let reason): "head trainer configuration: \(field) \(reason)"
        case .badLMHead(let expected, let found):
            "the base LM head has \(found) values, expected vocabulary x hidden = \(expected)"
        case .badBatch(let reason): "training batch: \(reason)"
        case .targetOutOfVocabulary(let head, let row, let token, let vocabulary):
            "training batch: head \(head)'s target at row \(row) is \(token), which is neither -1 nor a token "
                + "of the vocabulary of \(vocabulary)"
        case .nonFiniteGradient(let step):
            "step \(step): the gradient is not finite (infinite or NaN hidden states, or a diverging run); "
                + "the parameters were not updated"
        case .cannotWrite(let path, let reason): "\(path): cannot write the checkpoint: \(reason)"
        }
    }
}
