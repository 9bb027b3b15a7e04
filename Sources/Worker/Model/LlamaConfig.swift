/// Hyper-parameters of a Llama-family decoder, read from GGUF `llama.*` keys or a Hugging Face
/// `config.json` (`HuggingFaceConfig`).
public struct LlamaConfig: Sendable, Equatable, Codable {
    public var layerCount: Int
    /// Width of the residual stream (llama.embedding_length).
    public var hiddenSize: Int
    /// Width of the SwiGLU MLP (llama.feed_forward_length).
    public var intermediateSize: Int
    public var headCount: Int
    /// Key/value heads (grouped-query attention); equals `headCount` for plain multi-head attention.
    public var kvHeadCount: Int
    public var headDimension: Int
    /// Leading dimensions of each head that RoPE rotates (llama.rope.dimension_count).
    public var ropeDimensionCount: Int
    public var ropeFrequencyBase: Float
    /// GGUF Llama checkpoints rotate adjacent pairs (x[2i], x[2i+1]); Hugging Face checkpoints
    /// rotate halves (x[i], x[i + d/2]).
    public var ropeStyle: RopeStyle
    public var rmsNormEpsilon: Float
    /// The context length the model was trained for.
    public var contextLength: Int
    public var vocabularySize: Int

    public enum RopeStyle: String, Sendable, Codable { case adjacentPairs, halves }

    public init(
        layerCount: Int, hiddenSize: Int, intermediateSize: Int, headCount: Int, kvHeadCount: Int,
        headDimension: Int? = nil, ropeDimensionCount: Int? = nil, ropeFrequencyBase: Float = 10000,
        ropeStyle: RopeStyle = .adjacentPairs, rmsNormEpsilon: Float = 1e-5, contextLength: Int,
        vocabularySize: Int
    ) {
        self.layerCount = layerCount
        self.hiddenSize = hiddenSize
        self.intermediateSize = intermediateSize
        self.headCount = headCount
        self.kvHeadCount = kvHeadCount
        let hd = headDimension ?? (headCount > 0 ? hiddenSize / headCount : 0)
        self.headDimension = hd
        self.ropeDimensionCount = ropeDimensionCount ?? hd
        self.ropeFrequencyBase = ropeFrequencyBase
        self.ropeStyle = ropeStyle
        self.rmsNormEpsilon = rmsNormEpsilon
        self.contextLength = contextLength
        self.vocabularySize = vocabularySize
    }

    /// Reads the `llama.*` keys. The vocabulary size falls back to the token list's length.
    public init(gguf: GGUFFile) throws(WeightFileError) {
        let arch = try gguf.string("general.architecture")
        guard arch == "llama" else {
            throw WeightFileError(path: gguf.path, problem: .unsupportedArchitecture(arch))
        }
        let heads = try gguf.integer("llama.attention.head_count")
        let hidden = try gguf.integer("llama.embedding_length")
        var vocab: Int
        if gguf.metadata["llama.vocab_size"] != nil {
            vocab = try gguf.integer("llama.vocab_size")
        } else if case .array(let tokens)? = gguf.metadata["tokenizer.ggml.tokens"] {
            vocab = tokens.count
        } else {
            vocab = try gguf.requireTensor("token_embd.weight").dimensions.last ?? 0
        }
        if let embedding = gguf.tensorInfo("token_embd.weight"), embedding.dimensions.count == 2 {
            vocab = embedding.dimensions[1]
        }
        let headDim = gguf.metadata["llama.attention.key_length"] != nil
            ? try gguf.integer("llama.attention.key_length") : (heads > 0 ? hidden / heads : 0)
        self.init(
            layerCount: try gguf.integer("llama.block_count"),
            hiddenSize: hidden,
            intermediateSize: try gguf.integer("llama.feed_forward_length"),
            headCount: heads,
            kvHeadCount: gguf.metadata["llama.attention.head_count_kv"] != nil
                ? try gguf.integer("llama.attention.head_count_kv") : heads,
            headDimension: headDim,
            ropeDimensionCount: gguf.metadata["llama.rope.dimension_count"] != nil
                ? try gguf.integer("llama.rope.dimension_count") : headDim,
            ropeFrequencyBase: gguf.metadata["llama.rope.freq_base"] != nil
                ? Float(try gguf.number("llama.rope.freq_base")) : 10000,
            ropeStyle: .adjacentPairs,
            rmsNormEpsilon: Float(try gguf.number("llama.attention.layer_norm_rms_epsilon")),
            contextLength: try gguf.integer("llama.context_length"),
            vocabularySize: vocab)
        if let reason = validationProblem() {
            throw WeightFileError(path: gguf.path, problem: .badValue(key: "llama.*", reason: reason))
        }
        if gguf.metadata["llama.rope.scaling.type"] != nil,
           case .string(let kind)? = gguf.metadata["llama.rope.scaling.type"], kind != "none" {
            throw WeightFileError(path: gguf.path, problem: .badValue(
                key: "llama.rope.scaling.type", reason: "RoPE scaling '\(kind)' is not supported"))
        }
    }

    /// The largest size any dimension may have: far above every real model (Llama 3 405B: hidden
    /// 16384, FFN 53248, vocabulary 128256, 126 layers), small enough that no product the loader
    /// and the step buffers form from these numbers can overflow.
    public static let maxDimension = 1 << 24

    /// Why these numbers cannot describe a working model, or nil when they can.
    public func validationProblem() -> String? {
        let sizes = [("block_count", layerCount), ("embedding_length", hiddenSize), ("feed_forward_length", intermediateSize),
                     ("head_count", headCount), ("head_count_kv", kvHeadCount), ("head dimension", headDimension),
                     ("rope dimension_count", ropeDimensionCount), ("vocabulary size", vocabularySize)]
        for (name, value) in sizes where value > Self.maxDimension {
            return "\(name) \(value) is beyond any model this program can load (at most \(Self.maxDimension))"
        }
        // Each factor is at most 2^24 here, so the products cannot overflow.
        if headCount * headDimension > Self.maxDimension {
            return "head_count \(headCount) x head dimension \(headDimension) is beyond any model this program can load (at most \(Self.maxDimension))"
        }
        if contextLength > 1 << 40 { return "context_length \(contextLength) is beyond any model (at most 2^40)" }
        if layerCount <= 0 { return "block_count must be positive, got \(layerCount)" }
        if hiddenSize <= 0 { return "embedding_length must be positive, got \(hiddenSize)" }
        if intermediateSize <= 0 { return "feed_forward_length must be positive, got \(intermediateSize)" }
        if headCount <= 0 { return "head_count must be positive, got \(headCount)" }
        if kvHeadCount <= 0 || headCount % kvHeadCount != 0 {
            return "head_count_kv \(kvHeadCount) must divide head_count \(headCount)"
        }
        if headDimension <= 0 || headDimension % 2 != 0 { return "head dimension \(headDimension) must be even and positive" }
        if ropeDimensionCount <= 0 || ropeDimensionCount > headDimension || ropeDimensionCount % 2 != 0 {
            return "rope dimension_count \(ropeDimensionCount) must be even and at most the head dimension \(headDimension)"
        }
        if !(ropeFrequencyBase > 0 && ropeFrequencyBase.isFinite) { return "rope freq_base must be positive and finite, got \(ropeFrequencyBase)" }
        if !(rmsNormEpsilon > 0 && rmsNormEpsilon.isFinite) {
            return "layer_norm_rms_epsilon must be positive and finite, got \(rmsNormEpsilon)"
        }
        if contextLength <= 0 { return "context_length must be positive, got \(contextLength)" }
        if vocabularySize <= 0 { return "vocabulary size must be positive, got \(vocabularySize)" }
        return nil
    }

    /// Query heads that share one key/value head.
    public var groupSize: Int { headCount / kvHeadCount }
}
