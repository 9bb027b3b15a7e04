import Foundation
import Worker

/// Writes Hugging Face tokenizer files (tokenizer.json, tokenizer_config.json) from a GGUF
/// vocabulary, in the layout `transformers` saves for each family: byte-level BPE with the
/// pre-tokenizer of the GGUF's `tokenizer.ggml.pre` (GPT-2, Llama 3, StarCoder/SmolLM), or
/// SentencePiece-style BPE (Llama 2) with merges derived from the scores as `transformers`'
/// `SentencePieceExtractor` does.
public enum HuggingFaceTokenizerWriter {
    /// How SentencePiece-style files write spaces as "▁".
    public enum SpaceStyle: Sendable {
        /// normalizer Sequence[Prepend("▁"), Replace(" ", "▁")] (Llama 2, Mistral, Vicuna).
        case normalizer
        /// pre_tokenizer Metaspace(prepend_scheme: first) (newer conversions).
        case metaspace
    }

    public static let llama3Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

    /// Writes tokenizer.json and tokenizer_config.json for `gguf`'s vocabulary into `directory`.
    /// `mergesAsPairs` writes merges as [left, right] (newer files) instead of "left right".
    public static func write(
        from gguf: GGUFFile, to directory: String, mergesAsPairs: Bool = false, spaceStyle: SpaceStyle = .normalizer
    ) throws {
        let tokens = try gguf.stringArray("tokenizer.ggml.tokens")
        let types = gguf.metadata["tokenizer.ggml.token_type"] != nil
            ? try gguf.integerArray("tokenizer.ggml.token_type") : [Int](repeating: 1, count: tokens.count)
        let modelName = try gguf.string("tokenizer.ggml.model")
        func optionalID(_ key: String) throws -> Int? { gguf.metadata[key] != nil ? try gguf.integer(key) : nil }

        var vocab: [String: Int] = [:]
        var added: [[String: Any]] = []
        for (id, text) in tokens.enumerated() {
            vocab[text] = id
            // Unknown (2), control (3) and user-defined (4) tokens are added tokens.
            if [2, 3, 4].contains(types[id]) {
                added.append(["id": id, "content": text, "single_word": false, "lstrip": false, "rstrip": false,
                              "normalized": types[id] == 4, "special": types[id] != 4])
            }
        }
        var model: [String: Any] = [
            "type": "BPE", "dropout": NSNull(), "continuing_subword_prefix": NSNull(), "end_of_word_suffix": NSNull(),
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab,
        ]
        var root: [String: Any] = ["version": "1.0", "truncation": NSNull(), "padding": NSNull(), "added_tokens": added]
        let merges: [(String, String)]
        var defaultBOS: Int?, defaultEOS: Int?
        switch modelName {
        case "gpt2":
            merges = try gguf.stringArray("tokenizer.ggml.merges").map { m in
                let parts = m.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
                return (String(parts[0]), String(parts[1]))
            }
            let byteLevel: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true]
            let pre = gguf.metadata["tokenizer.ggml.pre"] != nil ? try gguf.string("tokenizer.ggml.pre") : "gpt-2"
            switch pre {
            case "llama-bpe", "llama3", "llama-v3":
                var noRegex = byteLevel
                noRegex["use_regex"] = false
                root["pre_tokenizer"] = ["type": "Sequence", "pretokenizers": [
                    ["type": "Split", "pattern": ["Regex": llama3Regex], "behavior": "Isolated", "invert": false], noRegex]]
                model["ignore_merges"] = true
            case "starcoder", "smollm", "refact", "command-r":
                root["pre_tokenizer"] = ["type": "Sequence", "pretokenizers": [["type": "Digits", "individual_digits": true], byteLevel]]
            default:
                root["pre_tokenizer"] = byteLevel
            }
            root["normalizer"] = NSNull()
            root["post_processor"] = ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true]
            root["decoder"] = ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true]
        case "llama":
            let scores = gguf.metadata["tokenizer.ggml.scores"] != nil
                ? try gguf.floatArray("tokenizer.ggml.scores") : [Float](repeating: 0, count: tokens.count)
            merges = sentencePieceMerges(tokens: tokens, scores: scores, types: types)
            let prefix = gguf.metadata["tokenizer.ggml.add_space_prefix"] != nil ? try gguf.bool("tokenizer.ggml.add_space_prefix") : true
            switch spaceStyle {
            case .normalizer:
                var normalizers: [[String: Any]] = [["type": "Replace", "pattern": ["String": " "], "content": "▁"]]
                if prefix { normalizers.insert(["type": "Prepend", "prepend": "▁"], at: 0) }
                root["normalizer"] = ["type": "Sequence", "normalizers": normalizers]
                root["pre_tokenizer"] = NSNull()
            case .metaspace:
                root["normalizer"] = NSNull()
                root["pre_tokenizer"] = ["type": "Metaspace", "replacement": "▁", "prepend_scheme": prefix ? "first" : "never", "split": false]
            }
            root["post_processor"] = NSNull()
            root["decoder"] = ["type": "Sequence", "decoders": [
                ["type": "Replace", "pattern": ["String": "▁"], "content": " "], ["type": "ByteFallback"], ["type": "Fuse"],
                ["type": "Strip", "content": " ", "start": 1, "stop": 0]]]
            model["byte_fallback"] = true
            model["fuse_unk"] = true
            model["unk_token"] = tokens[try optionalID("tokenizer.ggml.unknown_token_id") ?? 0]
            defaultBOS = 1
            defaultEOS = 2
        default:
            throw MissingTestData(description: "no Hugging Face layout for tokenizer.ggml.model \(modelName)")
        }
        model["merges"] = mergesAsPairs ? merges.map { [$0.0, $0.1] } : merges.map { $0.0 + " " + $0.1 }
        root["model"] = model

        var config: [String: Any] = ["model_max_length": 1_000_000, "clean_up_tokenization_spaces": false,
                                     "tokenizer_class": modelName == "llama" ? "LlamaTokenizer" : "PreTrainedTokenizerFast"]
        if let bos = try optionalID("tokenizer.ggml.bos_token_id") ?? defaultBOS { config["bos_token"] = tokens[bos] }
        // An object with "content", as older tokenizer_config.json files write it.
        if let eos = try optionalID("tokenizer.ggml.eos_token_id") ?? defaultEOS {
            config["eos_token"] = ["__type": "AddedToken", "content": tokens[eos], "lstrip": false, "normalized": false,
                                   "rstrip": false, "single_word": false]
        }
        if gguf.metadata["tokenizer.ggml.add_bos_token"] != nil { config["add_bos_token"] = try gguf.bool("tokenizer.ggml.add_bos_token") }
        if gguf.metadata["tokenizer.ggml.add_eos_token"] != nil { config["add_eos_token"] = try gguf.bool("tokenizer.ggml.add_eos_token") }
        if gguf.metadata["tokenizer.chat_template"] != nil { config["chat_template"] = try gguf.string("tokenizer.chat_template") }

        try writeJSON(root, to: (directory as NSString).appendingPathComponent("tokenizer.json"))
        try writeJSON(config, to: (directory as NSString).appendingPathComponent("tokenizer_config.json"))
    }

    /// `transformers`' SentencePieceExtractor: for each normal piece, highest score first, every
    /// split into two pieces that are both tokens, ordered by (left id, right id).
    static func sentencePieceMerges(tokens: [String], scores: [Float], types: [Int]) -> [(String, String)] {
        var id: [String: Int] = [:]
        for (i, t) in tokens.enumerated() { id[t] = i }
        var local: [(score: Float, piece: Int, left: Int, right: Int, pair: (String, String))] = []
        for (piece, text) in tokens.enumerated() where types[piece] == 1 {
            let scalars = Array(text.unicodeScalars)
            guard scalars.count > 1 else { continue }
            for cut in 1..<scalars.count {
                var l = String.UnicodeScalarView(), r = String.UnicodeScalarView()
                l.append(contentsOf: scalars[..<cut])
                r.append(contentsOf: scalars[cut...])
                let left = String(l), right = String(r)
                if let a = id[left], let b = id[right] { local.append((scores[piece], piece, a, b, (left, right))) }
            }
        }
        local.sort { x, y in
            x.score != y.score ? x.score > y.score : x.piece != y.piece ? x.piece < y.piece : (x.left, x.right) < (y.left, y.right)
        }
        return local.map(\.pair)
    }

    static func writeJSON(_ object: Any, to path: String) throws {
        try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]).write(to: URL(fileURLWithPath: path))
    }
}

extension SyntheticLlama {
    /// Writes the model as a Hugging Face folder in `directory`: config.json, the weights as F32
    /// safetensors (one file, or `shardCount` shards with model.safetensors.index.json), and the
    /// tokenizer files of the GGUF at `ggufPath`, which `write(to:)` must have written first (its
    /// weights are the ones stored).
    ///
    /// Q and K rows are stored un-permuted: llama.cpp's converter permutes Hugging Face's rows so
    /// that adjacent pairs rotate together, `w.reshape(heads, 2, d/2, in).swapaxes(1, 2)`; within
    /// each head, GGUF row 2i + j is Hugging Face row j * d/2 + i.
    public func writeHuggingFace(
        to directory: String, ggufPath: String, tiedEmbeddings: Bool = true, shardCount: Int = 1,
        mergesAsPairs: Bool = false
    ) throws {
        precondition(!tensors.isEmpty, "write the GGUF first: it draws the weights")
        precondition(config.ropeDimensionCount == config.headDimension, "Hugging Face Llama rotates whole heads")
        let c = config
        let fm = FileManager.default
        try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
        func path(_ name: String) -> String { (directory as NSString).appendingPathComponent(name) }

        var configJSON: [String: Any] = [
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": c.hiddenSize,
            "intermediate_size": c.intermediateSize, "num_hidden_layers": c.layerCount, "num_attention_heads": c.headCount,
            "num_key_value_heads": c.kvHeadCount, "rope_theta": Double(c.ropeFrequencyBase), "rms_norm_eps": Double(c.rmsNormEpsilon),
            "max_position_embeddings": c.contextLength, "vocab_size": c.vocabularySize, "tie_word_embeddings": tiedEmbeddings,
            "hidden_act": "silu", "rope_scaling": NSNull(), "attention_bias": false, "torch_dtype": "float32",
            "bos_token_id": 256, "eos_token_id": 257,
        ]
        if c.headDimension != c.hiddenSize / c.headCount { configJSON["head_dim"] = c.headDimension }
        try HuggingFaceTokenizerWriter.writeJSON(configJSON, to: path("config.json"))

        func unpermuted(_ values: [Float], rows: Int, columns: Int) -> [Float] {
            let d = c.headDimension, half = d / 2
            var out = [Float](repeating: 0, count: values.count)
            for r in 0..<rows {
                let head = r / d, within = r % d
                let source = head * d + 2 * (within % half) + within / half
                out[(r * columns)..<((r + 1) * columns)] = values[(source * columns)..<((source + 1) * columns)]
            }
            return out
        }
        var named: [(String, [Int], [Float])] = []
        func add(_ hf: String, _ gguf: String, permuted: Bool = false) {
            let t = tensors[gguf]!
            let shape = gguf.hasSuffix("norm.weight") ? [t.columns] : [t.rows, t.columns]
            named.append((hf, shape, permuted ? unpermuted(t.values, rows: t.rows, columns: t.columns) : t.values))
        }
        add("model.embed_tokens.weight", "token_embd.weight")
        for l in 0..<c.layerCount {
            let hf = "model.layers.\(l).", gg = "blk.\(l)."
            add(hf + "input_layernorm.weight", gg + "attn_norm.weight")
            add(hf + "self_attn.q_proj.weight", gg + "attn_q.weight", permuted: true)
            add(hf + "self_attn.k_proj.weight", gg + "attn_k.weight", permuted: true)
            add(hf + "self_attn.v_proj.weight", gg + "attn_v.weight")
            add(hf + "self_attn.o_proj.weight", gg + "attn_output.weight")
            add(hf + "post_attention_layernorm.weight", gg + "ffn_norm.weight")
            add(hf + "mlp.gate_proj.weight", gg + "ffn_gate.weight")
            add(hf + "mlp.up_proj.weight", gg + "ffn_up.weight")
            add(hf + "mlp.down_proj.weight", gg + "ffn_down.weight")
        }
        add("model.norm.weight", "output_norm.weight")
        if !tiedEmbeddings { add("lm_head.weight", "output.weight") }

        if shardCount <= 1 {
            var w = SafetensorsWriter()
            w.metadata = ["format": "pt"]
            for (name, shape, values) in named { w.add(name, shape: shape, values: values) }
            try w.write(to: path("model.safetensors"))
        } else {
            var weightMap: [String: String] = [:]
            let perShard = (named.count + shardCount - 1) / shardCount
            for s in 0..<shardCount {
                let file = String(format: "model-%05d-of-%05d.safetensors", s + 1, shardCount)
                var w = SafetensorsWriter()
                w.metadata = ["format": "pt"]
                for (name, shape, values) in named.dropFirst(s * perShard).prefix(perShard) {
                    w.add(name, shape: shape, values: values)
                    weightMap[name] = file
                }
                try w.write(to: path(file))
            }
            let total = named.reduce(0) { $0 + 4 * $1.2.count }
            try HuggingFaceTokenizerWriter.writeJSON(["metadata": ["total_size": total], "weight_map": weightMap],
                                                     to: path("model.safetensors.index.json"))
        }
        try HuggingFaceTokenizerWriter.write(from: GGUFFile(path: ggufPath), to: directory, mergesAsPairs: mergesAsPairs)
    }
}
