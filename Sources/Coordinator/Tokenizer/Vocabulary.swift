import Worker

/// A problem with a tokenizer description that the file readers cannot see: an unknown tokenizer
/// or pre-tokenizer type, arrays that do not fit together (GGUF metadata), or a `tokenizer.json`
/// pipeline stage this project does not implement.
public struct TokenizerError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Problem: Sendable, Equatable {
        case unsupportedModel(String, supported: [String])
        case unsupportedPreTokenizer(String, supported: [String])
        case badValue(key: String, reason: String)
        /// A `tokenizer.json` / `tokenizer_config.json` setting with no equivalent here.
        case unsupportedSetting(key: String, reason: String)
    }

    public var path: String
    public var problem: Problem

    public init(path: String, problem: Problem) {
        self.path = path
        self.problem = problem
    }

    public var description: String {
        let what: String
        switch problem {
        case .unsupportedModel(let name, let supported):
            what = "tokenizer.ggml.model is \(name.quoted()), which is not supported (supported: \(supported.joined(separator: ", ")))"
        case .unsupportedPreTokenizer(let name, let supported):
            what = "tokenizer.ggml.pre is \(name.quoted()), which is not supported (supported: \(supported.joined(separator: ", ")))"
        case .badValue(let key, let reason):
            what = "\(path.hasSuffix(".json") ? "key" : "metadata key") \(key.quoted()): \(reason.oneLine())"
        case .unsupportedSetting(let key, let reason):
            what = "\(key.oneLine(limit: 80)): \(reason.oneLine())"
        }
        return "\(path.oneLine()): \(what)"
    }
}

/// Token attributes, as llama.cpp derives them from `tokenizer.ggml.token_type` (1 normal,
/// 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte; anything else is "undefined", no bit).
struct TokenAttributes: OptionSet, Sendable {
    let rawValue: UInt8
    static let normal = TokenAttributes(rawValue: 1 << 0)
    static let unknown = TokenAttributes(rawValue: 1 << 1)
    static let control = TokenAttributes(rawValue: 1 << 2)
    static let userDefined = TokenAttributes(rawValue: 1 << 3)
    static let unused = TokenAttributes(rawValue: 1 << 4)
    static let byte = TokenAttributes(rawValue: 1 << 5)

    init(rawValue: UInt8) { self.rawValue = rawValue }

    init(ggufType: Int) {
        switch ggufType {
        case 1: self = .normal
        case 2: self = .unknown
        case 3: self = .control
        case 4: self = .userDefined
        case 5: self = .unused
        case 6: self = .byte
        default: self = []
        }
    }
}

/// The tokens of a GGUF vocabulary and everything llama.cpp's `llama_vocab::impl::load` derives
/// from the `tokenizer.ggml.*` keys: special token ids, the add-BOS/EOS/space-prefix flags, the
/// end-of-generation set and the special-token list used to split text.
struct Vocabulary: Sendable {
    enum Model: Sendable, Equatable {
        /// `tokenizer.ggml.model = llama`: SentencePiece BPE with scores.
        case sentencePiece
        /// `tokenizer.ggml.model = gpt2`: byte-level BPE with merges.
        case byteLevelBPE(PreTokenizer.Configuration)
    }

    static let supportedModels = ["gpt2", "llama"]

    let path: String
    let model: Model
    /// Each token's text as stored in the file (UTF-8).
    let texts: [[UInt8]]
    let attributes: [TokenAttributes]
    let scores: [Float]
    /// Token text to id (a later duplicate wins, as in llama.cpp's `token_to_id`).
    let idOfText: ByteStringTable

    let bos: Int32?
    let eos: Int32?
    let unknown: Int32?
    let addBOS: Bool
    let addEOS: Bool
    let addSpacePrefix: Bool
    let endOfGeneration: Set<Int32>
    /// Control, user-defined and unknown tokens, longest text first (ties by id).
    let specialTokens: [Int32]

    var count: Int { texts.count }

    /// Reads the `tokenizer.ggml.*` keys of a GGUF file.
    init(gguf: GGUFFile) throws {
        try self.init(VocabularyDescription(gguf: gguf))
    }

    /// Everything llama.cpp derives from a description: the text table, the tokens recognised by
    /// their text (end of turn, fill-in-the-middle), the end-of-generation set and the special
    /// tokens that split text.
    init(_ d: VocabularyDescription) {
        path = d.path
        model = d.model
        let n = d.tokens.count
        var attributes = d.attributes

        var texts: [[UInt8]] = []
        texts.reserveCapacity(n)
        var idOfText = ByteStringTable(expectedCount: n)
        for (i, s) in d.tokens.enumerated() {
            // llama.cpp renames empty tokens so that every text is distinct and non-empty.
            let bytes = s.isEmpty ? Array("[EMPTY_\(i)]".utf8) : Array(s.utf8)
            texts.append(bytes)
            idOfText.set(Int32(i), for: bytes)
        }
        self.texts = texts
        self.scores = d.scores
        self.idOfText = idOfText

        var eot = d.eot
        var eom = d.eom
        var fim = d.fim
        bos = d.bos
        eos = d.eos
        unknown = d.unknown
        // llama.cpp asserts these ids exist when the flags are set; here a missing id turns the flag off.
        addBOS = d.addBOS && d.bos != nil
        addEOS = d.addEOS && d.eos != nil
        addSpacePrefix = d.addSpacePrefix

        // Tokens found by their text when the file does not name them (llama.cpp's workaround
        // for converters that do not write the ids). Each one found becomes a control token.
        func firstToken(among names: [String]) -> Int32? {
            var best: Int32?
            for name in names {
                if let id = idOfText.value(for: Array(name.utf8)), id < (best ?? Int32.max) { best = id }
            }
            return best
        }
        var eog = Set<Int32>()
        func markControl(_ id: Int32?) { if let id { attributes[Int(id)].insert(.control) } }
        if eot == nil {
            eot = firstToken(among: SpecialTexts.endOfTurn)
            markControl(eot)
        }
        if eom == nil {
            eom = firstToken(among: ["<|eom_id|>"])
            markControl(eom)
        }
        for (i, names) in SpecialTexts.fillInTheMiddle.enumerated() where fim[i] == nil {
            fim[i] = firstToken(among: names)
            markControl(fim[i])
        }
        for id in fim[3...].compactMap({ $0 }) { eog.insert(id) }  // fim_pad, fim_rep, fim_sep
        for name in SpecialTexts.endOfGeneration {
            guard let id = idOfText.value(for: Array(name.utf8)) else { continue }
            eog.insert(id)
            markControl(id)
        }
        // gpt-oss: these structural tokens must always be rendered.
        for name in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let id = idOfText.value(for: Array(name.utf8)) { attributes[Int(id)] = .userDefined }
        }
        for id in [d.eos, eot, eom].compactMap({ $0 }) { eog.insert(id) }
        // o200k_harmony and solar-open: "<|end|>" ends a message, not the generation.
        func text(_ id: Int32) -> String { String(decoding: texts[Int(id)], as: UTF8.self) }
        let eogTexts = Set(eog.map(text))
        if eogTexts.contains("<|end|>"),
           (eogTexts.contains("<|return|>") && eogTexts.contains("<|call|>"))
            || (eogTexts.contains("<|calls|>") && eogTexts.contains("<|flush|>")),
           let end = eog.first(where: { text($0) == "<|end|>" }) {
            eog.remove(end)
            attributes[Int(end)] = .userDefined
        }
        // Gemma 4 and PLaMo: "</s>" is an ordinary token there.
        if eogTexts.contains("<|tool_response>") || eogTexts.contains("<|plamo:eos|>"),
           let s = eog.first(where: { text($0) == "</s>" }) {
            eog.remove(s)
            attributes[Int(s)] = .normal
        }
        endOfGeneration = eog
        self.attributes = attributes

        specialTokens = (0..<Int32(n))
            .filter { !attributes[Int($0)].isDisjoint(with: [.control, .userDefined, .unknown]) }
            .sorted { a, b in
                let la = texts[Int(a)].count, lb = texts[Int(b)].count
                return la != lb ? la > lb : a < b
            }
    }
}

/// What a tokenizer file says about its tokens, before llama.cpp's derivations: the token texts
/// with their scores and attributes, the special ids it names (already checked to be in range)
/// and the add-BOS/EOS/space-prefix flags. GGUF metadata (`init(gguf:)`) and Hugging Face
/// `tokenizer.json` (`HuggingFaceTokenizerFiles`) both map onto it.
struct VocabularyDescription {
    var path: String
    var model: Vocabulary.Model
    var tokens: [String]
    /// One per token (SentencePiece merge priority; unused by byte-level BPE).
    var scores: [Float]
    /// One per token.
    var attributes: [TokenAttributes]
    var bos: Int32?
    var eos: Int32?
    var unknown: Int32?
    var eot: Int32? = nil
    var eom: Int32? = nil
    /// fim_pre, fim_suf, fim_mid, fim_pad, fim_rep, fim_sep.
    var fim: [Int32?] = Array(repeating: nil, count: 6)
    var addBOS: Bool
    var addEOS: Bool
    var addSpacePrefix: Bool
}

extension VocabularyDescription {
    /// Reads the `tokenizer.ggml.*` keys, with llama.cpp's defaults per tokenizer type.
    init(gguf: GGUFFile) throws {
        path = gguf.path
        let modelName = try gguf.string("tokenizer.ggml.model")
        let preName = gguf.metadata["tokenizer.ggml.pre"] == nil ? nil : try gguf.string("tokenizer.ggml.pre")

        // Defaults per tokenizer type (llama-vocab.cpp); keys read below override them.
        var bos: Int32?, eos: Int32?, unknown: Int32?
        var addBOS = false, addSpacePrefix = false
        switch modelName {
        case "llama":
            model = .sentencePiece
            bos = 1; eos = 2; unknown = 0
            addBOS = true; addSpacePrefix = true
        case "gpt2":
            let name = preName ?? "default"  // llama.cpp warns and falls back to "default"
            guard let configuration = PreTokenizer.configurations[name] else {
                throw TokenizerError(path: path, problem: .unsupportedPreTokenizer(
                    name, supported: PreTokenizer.configurations.keys.sorted()))
            }
            model = .byteLevelBPE(configuration)
            bos = 11; eos = 11; unknown = nil
            addBOS = configuration.addBOS
        default:
            throw TokenizerError(path: path, problem: .unsupportedModel(modelName, supported: Vocabulary.supportedModels))
        }
        if gguf.metadata["tokenizer.ggml.add_space_prefix"] != nil {
            addSpacePrefix = try gguf.bool("tokenizer.ggml.add_space_prefix")
        }

        let strings = try gguf.stringArray("tokenizer.ggml.tokens")
        guard !strings.isEmpty else {
            throw TokenizerError(path: path, problem: .badValue(key: "tokenizer.ggml.tokens", reason: "the vocabulary is empty"))
        }
        guard strings.count < Int(Int32.max) else {
            throw TokenizerError(path: path, problem: .badValue(key: "tokenizer.ggml.tokens", reason: "\(strings.count) tokens is too many"))
        }
        let n = strings.count
        tokens = strings

        scores = [Float](repeating: 0, count: n)
        if gguf.metadata["tokenizer.ggml.scores"] != nil {
            let values = try gguf.floatArray("tokenizer.ggml.scores")
            guard values.count >= n else {
                throw TokenizerError(path: path, problem: .badValue(
                    key: "tokenizer.ggml.scores", reason: "\(values.count) scores for \(n) tokens"))
            }
            scores = Array(values.prefix(n))
        }
        attributes = [TokenAttributes](repeating: .normal, count: n)
        if gguf.metadata["tokenizer.ggml.token_type"] != nil {
            let types = try gguf.integerArray("tokenizer.ggml.token_type")
            guard types.count >= n else {
                throw TokenizerError(path: path, problem: .badValue(
                    key: "tokenizer.ggml.token_type", reason: "\(types.count) token types for \(n) tokens"))
            }
            attributes = types.prefix(n).map(TokenAttributes.init(ggufType:))
        }

        // Special token ids: a default outside the vocabulary is dropped; a key outside it is
        // ignored (llama.cpp logs both and carries on).
        func specialID(_ key: String, default value: Int32?) throws -> Int32? {
            var id = value.flatMap { $0 >= 0 && Int($0) < n ? $0 : nil }
            if gguf.metadata[key] != nil {
                let v = try gguf.integer(key)
                if v >= 0 && v < n { id = Int32(v) }
            }
            return id
        }
        self.bos = try specialID("tokenizer.ggml.bos_token_id", default: bos)
        self.eos = try specialID("tokenizer.ggml.eos_token_id", default: eos)
        self.unknown = try specialID("tokenizer.ggml.unknown_token_id", default: unknown)
        eot = try specialID("tokenizer.ggml.eot_token_id", default: nil)
        eom = try specialID("tokenizer.ggml.eom_token_id", default: nil)
        for (i, (key, deprecated)) in [("fim_pre", "prefix"), ("fim_suf", "suffix"), ("fim_mid", "middle"),
                                       ("fim_pad", nil), ("fim_rep", nil), ("fim_sep", nil)].enumerated() {
            var id = try specialID("tokenizer.ggml.\(key)_token_id", default: nil)
            if let deprecated { id = try specialID("tokenizer.ggml.\(deprecated)_token_id", default: id) }
            fim[i] = id
        }

        var addEOS = false
        if gguf.metadata["tokenizer.ggml.add_bos_token"] != nil { addBOS = try gguf.bool("tokenizer.ggml.add_bos_token") }
        if gguf.metadata["tokenizer.ggml.add_eos_token"] != nil { addEOS = try gguf.bool("tokenizer.ggml.add_eos_token") }
        self.addBOS = addBOS
        self.addEOS = addEOS
        self.addSpacePrefix = addSpacePrefix
    }
}

/// Token texts llama.cpp recognises by name (llama-vocab.cpp, `load`).
enum SpecialTexts {
    static let endOfTurn = [
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
        "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>",
    ]
    /// fim_pre, fim_suf, fim_mid, fim_pad, fim_rep, fim_sep.
    static let fillInTheMiddle: [[String]] = [
        ["<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>", "<|code_prefix|>", "<|prefix|>"],
        ["<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>", "<|code_suffix|>", "<|suffix|>"],
        ["<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>", "<|code_middle|>", "<|middle|>"],
        ["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
        ["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"],
        ["<|file_sep|>"],
    ]
    static let endOfGeneration = [
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
        "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
        "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
        "<｜end▁of▁sentence｜>", "[e~[",
    ]
}
