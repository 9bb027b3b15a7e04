/// A Hugging Face `config.json` for a Llama-family decoder (`LlamaForCausalLM`,
/// `MistralForCausalLM`), read into a `LlamaConfig` plus what the weights and tokenizer need.
///
/// Defaults are `transformers`' own (`LlamaConfig`): key/value heads = heads, head_dim =
/// hidden_size / heads, rope_theta 10000, rms_norm_eps 1e-6, max_position_embeddings 2048,
/// tie_word_embeddings false. Hugging Face checkpoints rotate halves of each head (`.halves`).
public struct HuggingFaceConfig: Sendable, Equatable {
    public static let supportedArchitectures = ["LlamaForCausalLM", "MistralForCausalLM"]
    public static let fileName = "config.json"

    public var architecture: String
    public var llama: LlamaConfig
    /// The LM head is the token embedding (no `lm_head.weight`).
    public var tiedEmbeddings: Bool
    public var bosTokenID: Int?
    /// `eos_token_id`: one id or a list of them.
    public var eosTokenIDs: [Int]

    public init(path: String) throws(WeightFileError) {
        let root = try JSONObjectReader(JSONValue.read(path: path, what: "config.json"), path: path, what: "config.json")
        try self.init(root)
    }

    public init(_ c: JSONObjectReader) throws(WeightFileError) {
        let path = c.path
        func bad(_ key: String, _ reason: String) -> WeightFileError {
            WeightFileError(path: path, problem: .badValue(key: key, reason: reason))
        }
        let supported = Self.supportedArchitectures.joined(separator: ", ")
        if c.has("architectures") {
            let names = try c.array("architectures").compactMap(\.stringValue)
            guard let name = names.first(where: Self.supportedArchitectures.contains) else {
                throw bad("architectures", "\(names) is not supported (supported: \(supported))")
            }
            architecture = name
        } else {
            let type = try c.string("model_type", default: nil)
            switch type {
            case "llama": architecture = "LlamaForCausalLM"
            case "mistral": architecture = "MistralForCausalLM"
            default: throw bad("architectures", "missing, and model_type is \(type.map { "'\($0)'" } ?? "missing") (supported: \(supported))")
            }
        }

        func positive(_ key: String) throws(WeightFileError) -> Int {
            let v = try c.integer(key)
            guard v > 0 else { throw bad(key, "must be positive, got \(v)") }
            return v
        }
        let hidden = try positive("hidden_size")
        let heads = try positive("num_attention_heads")
        let kvHeads = c.has("num_key_value_heads") ? try positive("num_key_value_heads") : heads
        guard heads % kvHeads == 0 else {
            throw bad("num_key_value_heads", "\(kvHeads) does not divide num_attention_heads \(heads)")
        }
        let headDim: Int
        if c.has("head_dim") {
            headDim = try positive("head_dim")
        } else {
            guard hidden % heads == 0 else {
                throw bad("hidden_size", "\(hidden) is not a multiple of num_attention_heads \(heads) (and there is no head_dim)")
            }
            headDim = hidden / heads
        }
        guard headDim % 2 == 0 else { throw bad("head_dim", "the head dimension \(headDim) must be even for RoPE") }

        // Newer files nest the RoPE settings in `rope_parameters`; older ones use `rope_theta`
        // and `rope_scaling`.
        var theta = try c.number("rope_theta", default: 10000)
        var scaling: JSONObjectReader?
        if c.has("rope_parameters") {
            let p = try c.object("rope_parameters")
            theta = try p.number("rope_theta", default: theta)
            scaling = p
        } else if c.has("rope_scaling") {
            scaling = try c.object("rope_scaling")
        }
        if let scaling {
            var named = try scaling.string("rope_type", default: nil)
            if named == nil { named = try scaling.string("type", default: nil) }
            let kind = named ?? "default"
            guard kind == "default" else {
                throw bad(String(scaling.context.dropLast()), "RoPE scaling '\(kind)' is not supported (only unscaled RoPE)")
            }
        }
        guard theta > 0 else { throw bad("rope_theta", "must be positive, got \(theta)") }
        let eps = try c.number("rms_norm_eps", default: 1e-6)
        guard eps > 0 else { throw bad("rms_norm_eps", "must be positive, got \(eps)") }

        let activation = try c.string("hidden_act", default: "silu") ?? "silu"
        guard activation == "silu" else { throw bad("hidden_act", "'\(activation)' is not supported (only silu)") }
        for key in ["attention_bias", "mlp_bias"] {
            if try c.bool(key, default: false) { throw bad(key, "biases are not supported") }
        }

        var context = c.has("max_position_embeddings") ? try positive("max_position_embeddings") : 2048
        // Mistral 7B v0.1 attends within a sliding window; the cache never holds more than that
        // here, so the answers stay exact.
        if c.has("sliding_window") {
            let window = try positive("sliding_window")
            context = min(context, window)
        }

        llama = LlamaConfig(
            layerCount: try positive("num_hidden_layers"), hiddenSize: hidden,
            intermediateSize: try positive("intermediate_size"), headCount: heads, kvHeadCount: kvHeads,
            headDimension: headDim, ropeDimensionCount: headDim, ropeFrequencyBase: Float(theta),
            ropeStyle: .halves, rmsNormEpsilon: Float(eps), contextLength: context,
            vocabularySize: try positive("vocab_size"))
        if let reason = llama.validationProblem() { throw bad("config.json", reason) }
        tiedEmbeddings = try c.bool("tie_word_embeddings", default: false)

        bosTokenID = c.has("bos_token_id") ? try c.integer("bos_token_id") : nil
        if !c.has("eos_token_id") {
            eosTokenIDs = []
        } else if let list = c.object["eos_token_id"]?.arrayValue {
            eosTokenIDs = list.compactMap(\.integerValue)
        } else {
            eosTokenIDs = [try c.integer("eos_token_id")]
        }
    }
}

extension LlamaConfig {
    /// Reads a Hugging Face `config.json` (see `HuggingFaceConfig`).
    public init(huggingFaceConfig path: String) throws(WeightFileError) {
        self = try HuggingFaceConfig(path: path).llama
    }
}
