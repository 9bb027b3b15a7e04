import Foundation
import Worker

/// A Hugging Face tokenizer folder mapped onto the same machinery as a GGUF vocabulary:
/// `tokenizer.json` (a BPE model with vocab and merges) plus `tokenizer_config.json` (special
/// tokens, add_bos_token, chat template) and `config.json` (vocabulary size, fallback ids).
///
/// Two families are recognised, as llama.cpp's converter sees them:
/// - byte-level BPE (Llama 3, SmolLM2, GPT-2): a `ByteLevel` pre-tokenizer, alone or after a
///   `Split` regex or `Digits`; the regex must be one `PreTokenizer` implements.
/// - SentencePiece-style BPE (Llama 2, Vicuna, Mistral): spaces written as "▁" by a `Metaspace`
///   pre-tokenizer or by the normalizers `Replace(" ", "▁")` (+ `Prepend("▁")`), usually with
///   `byte_fallback`. SentencePiece merges the pair whose result scores highest; a merge's rank
///   gives that score (the first merge producing a token wins).
///
/// As in llama.cpp, `Metaspace`'s `split` is not applied (words are not cut at "▁"), and added
/// tokens become control tokens (`special: true`) or user-defined ones.
struct HuggingFaceTokenizerFiles {
    static let tokenizerFileName = "tokenizer.json"
    static let configFileName = "tokenizer_config.json"

    var description: VocabularyDescription
    /// Byte-level merges as "left right" strings, in rank order (empty for SentencePiece).
    var merges: [String]
    /// `chat_template` of tokenizer_config.json (or chat_template.jinja), if any.
    var chatTemplate: String?

    init(directory: String) throws {
        let path = (directory as NSString).appendingPathComponent(Self.tokenizerFileName)
        let sentencePieceModel = (directory as NSString).appendingPathComponent("tokenizer.model")
        if !FileManager.default.fileExists(atPath: path) && FileManager.default.fileExists(atPath: sentencePieceModel) {
            throw WeightFileError(path: directory, problem: .notACheckpoint(reason: "there is no tokenizer.json, only "
                + "tokenizer.model (SentencePiece's own format, not read here; transformers' LlamaTokenizerFast "
                + "saves a tokenizer.json)"))
        }
        let json = try JSONValue.decode(TokenizerJSON.self, path: path, what: Self.tokenizerFileName)
        let configPath = (directory as NSString).appendingPathComponent(Self.configFileName)
        let config: JSONObjectReader? = FileManager.default.fileExists(atPath: configPath)
            ? try JSONObjectReader(JSONValue.read(path: configPath, what: Self.configFileName), path: configPath, what: Self.configFileName)
            : nil
        let modelConfigPath = (directory as NSString).appendingPathComponent(HuggingFaceConfig.fileName)
        let modelConfig: JSONObjectReader? = FileManager.default.fileExists(atPath: modelConfigPath)
            ? try JSONObjectReader(JSONValue.read(path: modelConfigPath, what: HuggingFaceConfig.fileName),
                                   path: modelConfigPath, what: HuggingFaceConfig.fileName)
            : nil
        func unsupported(_ key: String, _ reason: String) -> TokenizerError {
            TokenizerError(path: path, problem: .unsupportedSetting(key: key, reason: reason))
        }

        let model = json.model
        guard model.type == nil || model.type == "BPE" else {
            throw unsupported("model.type", "'\(model.type!)' is not supported (supported: BPE)")
        }
        guard let vocab = model.vocab else { throw unsupported("model.vocab", "missing") }

        // Which family: byte-level (a ByteLevel pre-tokenizer) or SentencePiece (spaces as "▁").
        let preTokenizers = Self.flatten(json.preTokenizer, sequenceKey: "pretokenizers")
        let normalizers = Self.flatten(json.normalizer, sequenceKey: "normalizers")
        let byteLevel = preTokenizers.contains { $0["type"]?.stringValue == "ByteLevel" }
        let spaceAsMeta = Self.sentencePieceSpaces(normalizers: normalizers, preTokenizers: preTokenizers)
        let vocabularyModel: Vocabulary.Model
        var addSpacePrefix = false
        var addBOS: Bool
        switch (byteLevel, spaceAsMeta) {
        case (true, nil):
            guard normalizers.isEmpty else {
                throw unsupported("normalizer", "\(Self.types(normalizers)) is not supported with a ByteLevel pre-tokenizer")
            }
            var configuration = try Self.byteLevelConfiguration(preTokenizers, unsupported: unsupported)
            if let ignore = model.ignoreMerges { configuration.ignoreMerges = ignore }
            vocabularyModel = .byteLevelBPE(configuration)
            addBOS = configuration.addBOS
        case (false, let prefix?):
            let known = normalizers.allSatisfy { ["Replace", "Prepend"].contains($0["type"]?.stringValue) }
                && preTokenizers.allSatisfy { $0["type"]?.stringValue == "Metaspace" }
            guard known else {
                throw unsupported("normalizer", "SentencePiece-style \(Self.types(normalizers)) with pre_tokenizer "
                    + "\(Self.types(preTokenizers)) is not supported (only Replace(\" \", \"▁\"), Prepend(\"▁\") and Metaspace)")
            }
            vocabularyModel = .sentencePiece
            addSpacePrefix = prefix
            addBOS = true
        case (true, _?):
            throw unsupported("pre_tokenizer", "both a ByteLevel pre-tokenizer and SentencePiece-style \"▁\" spaces")
        case (false, nil):
            throw unsupported("pre_tokenizer", "neither a ByteLevel pre-tokenizer nor SentencePiece-style \"▁\" spaces "
                + "(pre_tokenizer \(Self.types(preTokenizers)), normalizer \(Self.types(normalizers)))")
        }

        // Token texts by id: the vocab, then the added tokens, padded to config.json's vocab_size
        // (ids nobody names become unused "[PAD<id>]" tokens, as llama.cpp's converter writes them).
        let added = json.addedTokens ?? []
        var count = max((vocab.values.max() ?? -1) + 1, (added.map(\.id).max() ?? -1) + 1)
        if let modelConfig, modelConfig.has("vocab_size") { count = max(count, try modelConfig.integer("vocab_size")) }
        guard count > 0 else { throw TokenizerError(path: path, problem: .badValue(key: "model.vocab", reason: "the vocabulary is empty")) }
        guard count < 1 << 24, vocab.values.allSatisfy({ $0 >= 0 }), added.allSatisfy({ $0.id >= 0 }) else {
            throw TokenizerError(path: path, problem: .badValue(key: "model.vocab", reason: "token ids must be in 0..<2^24"))
        }
        var tokens = [String?](repeating: nil, count: count)
        for (text, id) in vocab { tokens[id] = text }
        var attributes = [TokenAttributes](repeating: .normal, count: count)
        for token in added {
            tokens[token.id] = token.content
            attributes[token.id] = (token.special ?? false) ? .control : .userDefined
        }
        for i in 0..<count where tokens[i] == nil {
            tokens[i] = "[PAD\(i)]"
            attributes[i] = .unused
        }
        let texts = tokens.map { $0! }
        var idOfText: [String: Int32] = [:]
        idOfText.reserveCapacity(count)
        for (i, t) in texts.enumerated() where attributes[i] != .unused { idOfText[t] = Int32(i) }

        var scores = [Float](repeating: 0, count: count)
        var mergeStrings: [String] = []
        switch vocabularyModel {
        case .sentencePiece:
            // SentencePiece byte tokens, and scores from merge ranks: the pair whose result comes
            // from the earliest merge goes first. Tokens no merge produces never win a tie.
            for (i, t) in texts.enumerated() where attributes[i] == .normal && Self.isByteToken(t) { attributes[i] = .byte }
            scores = [Float](repeating: -Float.greatestFiniteMagnitude, count: count)
            for (rank, merge) in (model.merges?.pairs ?? []).enumerated() {
                if let id = idOfText[merge.0 + merge.1], scores[Int(id)] == -Float.greatestFiniteMagnitude {
                    scores[Int(id)] = -Float(rank)
                }
            }
        case .byteLevelBPE:
            mergeStrings = (model.merges?.pairs ?? []).map { $0.0 + " " + $0.1 }
        }

        // Special tokens: tokenizer_config.json names them by text, config.json by id.
        func id(ofSpecial key: String) throws -> Int32? {
            guard let config, let value = config.object[key], !value.isNull else { return nil }
            let text: String
            if let s = value.stringValue {
                text = s
            } else if let s = value["content"]?.stringValue {
                text = s
            } else {
                throw WeightFileError(path: config.path, problem: .wrongKeyType(
                    key: key, expected: "a string or an object with \"content\"", found: value.typeName))
            }
            guard let id = idOfText[text] else {
                throw TokenizerError(path: config.path, problem: .badValue(key: key, reason: "'\(text)' is not a token"))
            }
            return id
        }
        func configID(_ key: String) -> Int32? {
            let value = modelConfig?.object[key]
            let id = value?.integerValue ?? value?.arrayValue?.first?.integerValue
            return id.flatMap { $0 >= 0 && $0 < count ? Int32($0) : nil }
        }
        let sentencePiece = vocabularyModel == .sentencePiece
        var bos = try id(ofSpecial: "bos_token") ?? configID("bos_token_id") ?? (sentencePiece && count > 1 ? 1 : nil)
        var eos = try id(ofSpecial: "eos_token") ?? configID("eos_token_id") ?? (sentencePiece && count > 2 ? 2 : nil)
        var unknown: Int32? = sentencePiece ? 0 : nil
        if let unk = model.unkToken {
            guard let id = idOfText[unk] else {
                throw TokenizerError(path: path, problem: .badValue(key: "model.unk_token", reason: "'\(unk)' is not a token"))
            }
            unknown = id
        }
        if sentencePiece, let unknown, attributes[Int(unknown)] != .unused { attributes[Int(unknown)] = .unknown }

        // add_bos/add_eos: tokenizer_config.json, else the post-processor's template.
        var addEOS = false
        // Llama 3 wraps it in a Sequence after ByteLevel.
        let processors = Self.flatten(json.postProcessor, sequenceKey: "processors")
        if let template = processors.first(where: { $0["type"]?.stringValue == "TemplateProcessing" }),
           let single = template["single"]?.arrayValue {
            let first = single.first?["SpecialToken"]?["id"]?.stringValue
            let last = single.count > 1 ? single.last?["SpecialToken"]?["id"]?.stringValue : nil
            addBOS = first != nil
            addEOS = last != nil
            if let first, bos == nil { bos = idOfText[first] }
            if let last, eos == nil { eos = idOfText[last] }
        }
        if let config {
            addBOS = try config.bool("add_bos_token", default: addBOS)
            addEOS = try config.bool("add_eos_token", default: addEOS)
        }

        description = VocabularyDescription(
            path: path, model: vocabularyModel, tokens: texts, scores: scores, attributes: attributes,
            bos: bos, eos: eos, unknown: unknown, addBOS: addBOS, addEOS: addEOS, addSpacePrefix: addSpacePrefix)
        merges = mergeStrings
        chatTemplate = try Self.chatTemplate(config: config, directory: directory)
    }

    /// The stages of a pipeline step: the step itself, or the members of a `Sequence`.
    static func flatten(_ value: JSONValue?, sequenceKey: String) -> [JSONValue] {
        guard let value, !value.isNull else { return [] }
        if value["type"]?.stringValue == "Sequence" {
            return (value[sequenceKey]?.arrayValue ?? []).flatMap { flatten($0, sequenceKey: sequenceKey) }
        }
        return [value]
    }

    static func types(_ stages: [JSONValue]) -> String {
        stages.isEmpty ? "none" : "[" + stages.map { $0["type"]?.stringValue ?? "?" }.joined(separator: ", ") + "]"
    }

    /// When spaces become "▁" (SentencePiece style): whether a "▁" is prepended too. Nil when
    /// spaces stay spaces.
    static func sentencePieceSpaces(normalizers: [JSONValue], preTokenizers: [JSONValue]) -> Bool? {
        if let meta = preTokenizers.first(where: { $0["type"]?.stringValue == "Metaspace" }) {
            if let scheme = meta["prepend_scheme"]?.stringValue { return scheme != "never" }
            return meta["add_prefix_space"]?.boolValue ?? true
        }
        let replacesSpaces = normalizers.contains {
            $0["type"]?.stringValue == "Replace" && $0["pattern"]?["String"]?.stringValue == " " && $0["content"]?.stringValue == "▁"
        }
        guard replacesSpaces else { return nil }
        return normalizers.contains { $0["type"]?.stringValue == "Prepend" && $0["prepend"]?.stringValue == "▁" }
    }

    /// `<0xXX>`: SentencePiece's byte-fallback tokens.
    static func isByteToken(_ text: String) -> Bool {
        let b = Array(text.utf8)
        func hex(_ c: UInt8) -> Bool { (48...57).contains(c) || (65...70).contains(c) || (97...102).contains(c) }
        return b.count == 6 && b[0] == 60 && b[1] == 48 && b[2] == 120 && hex(b[3]) && hex(b[4]) && b[5] == 62
    }

    /// The split regexes of known models, each with the `tokenizer.ggml.pre` name it maps to.
    static let knownSplitPatterns: [(pattern: String, pre: String, models: String)] = [
        (#"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#,
         "llama3", "Llama 3"),
        (#"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#, "gpt-2", "GPT-2"),
        (#"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"#, "gpt-2", "GPT-2"),
    ]

    /// Maps a byte-level pre-tokenizer pipeline onto the `PreTokenizer` configurations:
    /// `ByteLevel(use_regex)` is GPT-2's regex; `Digits(individual) + ByteLevel(use_regex)` is
    /// StarCoder/SmolLM's; `Split(regex) + ByteLevel(no regex)` is the regex's model.
    static func byteLevelConfiguration(
        _ stages: [JSONValue], unsupported: (String, String) -> TokenizerError
    ) throws -> PreTokenizer.Configuration {
        let byteLevel = stages.last!
        guard byteLevel["type"]?.stringValue == "ByteLevel" else {
            throw unsupported("pre_tokenizer", "\(types(stages)) is not supported (ByteLevel must come last)")
        }
        if byteLevel["add_prefix_space"]?.boolValue == true {
            throw unsupported("pre_tokenizer", "ByteLevel with add_prefix_space is not supported")
        }
        let usesRegex = byteLevel["use_regex"]?.boolValue ?? true
        let before = Array(stages.dropLast())
        let name: String
        switch (before.count, before.first?["type"]?.stringValue, usesRegex) {
        case (0, _, true):
            name = "gpt-2"
        case (1, "Digits", true) where before[0]["individual_digits"]?.boolValue == true:
            name = "smollm"
        case (1, "Split", false):
            let split = before[0]
            guard let regex = split["pattern"]?["Regex"]?.stringValue else {
                throw unsupported("pre_tokenizer", "a Split on \(split["pattern"]?["String"]?.stringValue.map { "the string '\($0)'" } ?? "no pattern") is not supported (only known regexes)")
            }
            guard let known = knownSplitPatterns.first(where: { $0.pattern == regex }) else {
                throw unsupported("pre_tokenizer", "the Split regex '\(regex)' is not one this project implements (known: "
                    + Set(knownSplitPatterns.map(\.models)).sorted().joined(separator: ", ") + ")")
            }
            let behavior = split["behavior"]?.stringValue ?? "Isolated"
            guard behavior == "Isolated", split["invert"]?.boolValue != true else {
                throw unsupported("pre_tokenizer", "a Split with behavior \(behavior)\(split["invert"]?.boolValue == true ? " inverted" : "") is not supported (only Isolated)")
            }
            name = known.pre
        default:
            throw unsupported("pre_tokenizer", "\(types(stages))\(usesRegex ? "" : " (ByteLevel without its regex)") is not a supported combination "
                + "(ByteLevel; Digits + ByteLevel; Split with a known regex + ByteLevel)")
        }
        return PreTokenizer.configurations[name]!
    }

    /// `chat_template` of tokenizer_config.json: a string, or a list of named templates (the one
    /// named "default"); else the folder's `chat_template.jinja`.
    static func chatTemplate(config: JSONObjectReader?, directory: String) throws -> String? {
        if let config, let value = config.object["chat_template"], !value.isNull {
            if let text = value.stringValue { return text }
            if let list = value.arrayValue {
                let named = list.first { $0["name"]?.stringValue == "default" } ?? list.first
                if let text = named?["template"]?.stringValue { return text }
            }
            throw WeightFileError(path: config.path, problem: .wrongKeyType(
                key: "chat_template", expected: "a string or a list of {name, template}", found: value.typeName))
        }
        let jinja = (directory as NSString).appendingPathComponent("chat_template.jinja")
        return FileManager.default.contents(atPath: jinja).map { String(decoding: $0, as: UTF8.self) }
    }
}

/// The parts of tokenizer.json read here. Pipeline stages stay generic JSON; the vocabulary and
/// merges (hundreds of thousands of entries) are decoded straight into their types.
struct TokenizerJSON: Decodable {
    struct AddedToken: Decodable {
        var id: Int
        var content: String
        var special: Bool?
    }

    struct Model: Decodable {
        var type: String?
        var vocab: [String: Int]?
        var merges: Merges?
        var unkToken: String?
        var ignoreMerges: Bool?

        enum CodingKeys: String, CodingKey {
            case type, vocab, merges
            case unkToken = "unk_token"
            case ignoreMerges = "ignore_merges"
        }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            type = try c.decodeIfPresent(String.self, forKey: .type)
            // Other model types (Unigram, WordPiece) lay out their vocab differently: read it
            // only for BPE, so the error names the model type.
            guard type == nil || type == "BPE" else { return }
            vocab = try c.decodeIfPresent([String: Int].self, forKey: .vocab)
            merges = try c.decodeIfPresent(Merges.self, forKey: .merges)
            unkToken = try c.decodeIfPresent(String.self, forKey: .unkToken)
            ignoreMerges = try c.decodeIfPresent(Bool.self, forKey: .ignoreMerges)
        }
    }

    /// Merges as "left right" strings (older files) or [left, right] pairs (newer ones).
    struct Merges: Decodable {
        var pairs: [(String, String)]

        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let strings = try? c.decode([String].self) {
                pairs = try strings.map { s in
                    // Split at the first space after the first character, as llama.cpp does.
                    let scalars = s.unicodeScalars
                    guard !scalars.isEmpty,
                          let space = scalars[scalars.index(after: scalars.startIndex)...].firstIndex(of: " ")
                    else {
                        throw DecodingError.dataCorruptedError(in: c, debugDescription: "merge '\(s)' is not \"left right\"")
                    }
                    return (String(scalars[..<space]), String(scalars[scalars.index(after: space)...]))
                }
            } else {
                let lists = try c.decode([[String]].self)
                pairs = try lists.map { p in
                    guard p.count == 2 else {
                        throw DecodingError.dataCorruptedError(in: c, debugDescription: "merge \(p) is not a pair")
                    }
                    return (p[0], p[1])
                }
            }
        }
    }

    var addedTokens: [AddedToken]?
    var normalizer: JSONValue?
    var preTokenizer: JSONValue?
    var postProcessor: JSONValue?
    var model: Model

    enum CodingKeys: String, CodingKey {
        case model, normalizer
        case addedTokens = "added_tokens"
        case preTokenizer = "pre_tokenizer"
        case postProcessor = "post_processor"
    }
}
