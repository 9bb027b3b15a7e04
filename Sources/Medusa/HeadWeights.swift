import Worker

/// The weights of K Medusa heads (Cai et al., 2024). Head k maps the base model's last hidden
/// state h (after the final norm) through L residual blocks, h <- h + SiLU(W h + b), each with its
/// own W [hidden, hidden] and b [hidden], then through an LM head: its own [vocabulary, hidden]
/// matrix, or the base model's (shared).
///
/// Loaded from the layouts `MedusaHeadsLayout` names (see `MedusaHeadWeights.init(path:)`).
public struct MedusaHeadWeights: @unchecked Sendable {
    // Immutable; the matrices are read-only views kept alive by their owners.
    public struct Block: @unchecked Sendable {
        /// [hidden, hidden]: output features by input features.
        public let weight: WeightMatrix
        /// [hidden].
        public let bias: [Float]

        public init(weight: WeightMatrix, bias: [Float]) {
            precondition(weight.rows == weight.columns && bias.count == weight.rows, "a residual block is square")
            self.weight = weight
            self.bias = bias
        }
    }

    public struct Head: @unchecked Sendable {
        public let blocks: [Block]
        /// [vocabulary, hidden], or nil when the head uses the base model's LM head.
        public let lmHead: WeightMatrix?

        public init(blocks: [Block], lmHead: WeightMatrix?) {
            self.blocks = blocks
            self.lmHead = lmHead
        }
    }

    public let heads: [Head]
    public let hiddenSize: Int
    /// The vocabulary the heads were made for, when the files say (own LM heads, metadata, config).
    public let vocabularySize: Int?
    public let layout: MedusaHeadsLayout
    /// The base model the heads were trained on, when the files record it.
    public let baseModel: String?
    /// The file the weights came from.
    public let path: String
    /// The only tokens the heads propose, ascending, when the file names them (heads sharing the
    /// base LM head, trained over the tokens of their data): only those rows of the LM head are
    /// scored, which makes each head several times cheaper. Nil: the whole vocabulary.
    public let candidateTokens: [Int32]?

    public init(heads: [Head], hiddenSize: Int, vocabularySize: Int?, layout: MedusaHeadsLayout,
                baseModel: String? = nil, path: String = "", candidateTokens: [Int32]? = nil) {
        precondition(!heads.isEmpty, "at least one head")
        precondition(candidateTokens == nil || heads[0].lmHead == nil, "candidate tokens are for a shared LM head")
        self.candidateTokens = candidateTokens
        self.heads = heads
        self.hiddenSize = hiddenSize
        self.vocabularySize = vocabularySize
        self.layout = layout
        self.baseModel = baseModel
        self.path = path
    }

    /// Whether the heads use the base model's LM head (all of them do, or none).
    public var sharesLMHead: Bool { heads[0].lmHead == nil }
}

/// Where a heads file comes from.
public enum MedusaHeadsLayout: String, Sendable, Equatable {
    /// FasterDecoding's Medusa v1: `{h}.{l}.linear.weight`, `{h}.{l}.linear.bias`, `{h}.{L}.weight`.
    case fasterDecoding
    /// FasterDecoding's names without the per-head LM heads (`{h}.{L}.weight`): the base LM head is shared.
    case fasterDecodingSharedLMHead
    /// vLLM's Medusa model: `blocks.{h}.layers.{l}.weight`/`.bias`, `lm_heads.{h}.weight`.
    case vllm
    /// This project's format (see `MedusaHeadWeights.write`).
    case medusaTP
}
