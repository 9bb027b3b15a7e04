import Worker

/// The tokenizer of a GGUF model or a Hugging Face folder, matching llama.cpp token for token.
///
/// Pipeline (one file per stage): `Vocabulary` reads the `tokenizer.ggml.*` keys (or
/// `HuggingFaceTokenizerFiles` maps tokenizer.json onto the same description);
/// `SpecialTokenPartition` cuts special tokens out of the text; then either `PreTokenizer` +
/// `ByteLevelBPE` (`gpt2` models) or `SentencePieceBPE` (`llama` models) turn each stretch of
/// plain text into tokens; `TokenDecoder` turns tokens back into bytes.
public final class Tokenizer: Sendable {
    private enum Model: Sendable {
        case sentencePiece(SentencePieceBPE)
        case byteLevel(ByteLevelBPE)
    }

    private let vocabulary: Vocabulary
    private let model: Model
    private let decoder: TokenDecoder
    /// The model's chat template text: GGUF's `tokenizer.chat_template`, or tokenizer_config.json's
    /// `chat_template` (or chat_template.jinja) in a Hugging Face folder; nil when there is none.
    public let chatTemplateText: String?

    /// Reads the tokenizer from a GGUF file's metadata. Missing or mistyped keys throw
    /// `WeightFileError`; unknown tokenizer or pre-tokenizer types and inconsistent arrays throw
    /// `TokenizerError`. Both name the file and the key.
    public convenience init(gguf: GGUFFile) throws {
        let vocabulary = try Vocabulary(gguf: gguf)
        var merges: [String] = []
        if case .byteLevelBPE = vocabulary.model { merges = try gguf.stringArray("tokenizer.ggml.merges") }
        let template: String? = if case .string(let t)? = gguf.metadata["tokenizer.chat_template"] { t } else { nil }
        try self.init(vocabulary: vocabulary, mergeStrings: merges, chatTemplate: template)
    }

    /// Reads a Hugging Face tokenizer folder: `tokenizer.json` (BPE, byte-level or
    /// SentencePiece-style), `tokenizer_config.json` (special tokens, add_bos_token, chat
    /// template) and `config.json` (vocabulary size); see `HuggingFaceTokenizerFiles`. Malformed
    /// JSON throws `WeightFileError`, settings with no equivalent here `TokenizerError`, both
    /// naming the file.
    public convenience init(huggingFaceDirectory directory: String) throws {
        let files = try HuggingFaceTokenizerFiles(directory: directory)
        try self.init(vocabulary: Vocabulary(files.description), mergeStrings: files.merges, chatTemplate: files.chatTemplate)
    }

    private init(vocabulary: Vocabulary, mergeStrings: [String], chatTemplate: String?) throws {
        self.vocabulary = vocabulary
        chatTemplateText = chatTemplate
        switch vocabulary.model {
        case .sentencePiece:
            model = .sentencePiece(SentencePieceBPE(vocabulary: vocabulary))
        case .byteLevelBPE(let configuration):
            model = .byteLevel(try ByteLevelBPE(vocabulary: vocabulary, configuration: configuration, mergeStrings: mergeStrings))
        }
        decoder = TokenDecoder(vocabulary: vocabulary)
    }

    public var vocabularySize: Int { vocabulary.count }
    public var bosToken: Int32? { vocabulary.bos }
    public var eosToken: Int32? { vocabulary.eos }
    /// Whether `encode(_:addSpecial: true, ...)` starts with BOS: `tokenizer.ggml.add_bos_token`,
    /// or llama.cpp's default for the tokenizer type when the key is absent (true for `llama`
    /// and for the Llama-3 family of `gpt2` pre-tokenizers, false for other `gpt2` ones).
    public var addBOS: Bool { vocabulary.addBOS }
    /// Whether `encode(_:addSpecial: true, ...)` ends with EOS (`tokenizer.ggml.add_eos_token`).
    public var addEOS: Bool { vocabulary.addEOS }

    /// Whether generation stops at `token`, as llama.cpp's `llama_vocab_is_eog`: EOS, EOT, EOM,
    /// the FIM pad/repo/separator tokens and tokens with end-of-turn texts (`<|im_end|>`,
    /// `<|eot_id|>`, `<|endoftext|>`, `</s>`, ...).
    public func isEndOfGeneration(_ token: Int32) -> Bool {
        vocabulary.endOfGeneration.contains(token)
    }

    /// The token ids of `text`.
    ///
    /// - addSpecial: prepend BOS when `addBOS`, append EOS when `addEOS`.
    /// - parseSpecial: control tokens written in the text (e.g. "<|im_start|>") become single
    ///   tokens, as llama.cpp's `parse_special`. Without it they are tokenized as plain text;
    ///   user-defined tokens are recognised either way (as in llama.cpp).
    public func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [Int32] {
        var bytes = Array(text.utf8)
        return bytes.withUnsafeMutableBufferPointer { buffer in
            encode(UnsafeBufferPointer(buffer), addSpecial: addSpecial, parseSpecial: parseSpecial)
        }
    }

    /// The token ids of a chat prompt: special tokens are parsed in the template's markup, not in
    /// the messages' contents, which are tokenised as text (as OpenAI's API does: a user cannot
    /// close their turn and open a system one). The parts are one text for the tokenizer, so
    /// contents without special-token strings give exactly `encode(joined, parseSpecial: true)`.
    public func encode(_ parts: [ChatPromptPart], addSpecial: Bool) -> [Int32] {
        var bytes: [UInt8] = []
        var plainText: [Range<Int>] = []
        for part in parts {
            let start = bytes.count
            bytes += part.text.utf8
            if part.isContent && bytes.count > start { plainText.append(start..<bytes.count) }
        }
        return bytes.withUnsafeBufferPointer { encode($0, addSpecial: addSpecial, parseSpecial: true, plainText: plainText) }
    }

    private func encode(
        _ bytes: UnsafeBufferPointer<UInt8>, addSpecial: Bool, parseSpecial: Bool, plainText: [Range<Int>] = []
    ) -> [Int32] {
        let fragments = SpecialTokenPartition.partition(bytes, vocabulary: vocabulary, parseSpecial: parseSpecial, plainText: plainText)
        var out: [Int32] = []
        out.reserveCapacity(bytes.count / 3 + 2)
        if addSpecial && vocabulary.addBOS, let bos = vocabulary.bos { out.append(bos) }
        switch model {
        case .byteLevel(let bpe):
            for fragment in fragments {
                switch fragment {
                case .token(let id): out.append(id)
                case .text(let range): bpe.encode(bytes, range, into: &out)
                }
            }
        case .sentencePiece(let spm):
            // The space prefix goes before the text at the start and after every special token.
            var afterSpecial = true
            for fragment in fragments {
                switch fragment {
                case .token(let id):
                    out.append(id)
                    afterSpecial = true
                case .text(let range):
                    var escaped = Self.escapeWhitespace(bytes[range], prefixSpace: vocabulary.addSpacePrefix && afterSpecial)
                    escaped.withUnsafeMutableBufferPointer { spm.encode(UnsafeBufferPointer($0), into: &out) }
                    afterSpecial = false
                }
            }
        }
        if addSpecial && vocabulary.addEOS, let eos = vocabulary.eos { out.append(eos) }
        return out
    }

    /// SentencePiece's view of text: every space written as "▁" (U+2581).
    private static func escapeWhitespace(_ text: Slice<UnsafeBufferPointer<UInt8>>, prefixSpace: Bool) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(text.count + 3)
        if prefixSpace { out.append(contentsOf: [0xE2, 0x96, 0x81]) }
        for b in text {
            if b == 0x20 { out.append(contentsOf: [0xE2, 0x96, 0x81]) } else { out.append(b) }
        }
        return out
    }

    /// The text of `tokens`. Control tokens are rendered as their text (llama.cpp's
    /// `common_detokenize` does the same by default), so prompts with special tokens round-trip.
    /// When the vocabulary adds a space prefix (SentencePiece), the first token's leading space
    /// is dropped. No clean-up of spaces before punctuation is done (llama.cpp does it for some
    /// `gpt2` vocabularies; it loses information). Invalid UTF-8 becomes U+FFFD.
    public func decode(_ tokens: [Int32]) -> String {
        decode(tokens, renderSpecialTokens: true)
    }

    /// The text of `tokens`; with `renderSpecialTokens` false, control and unknown tokens are
    /// left out (llama.cpp's `special = false`).
    public func decode(_ tokens: [Int32], renderSpecialTokens: Bool) -> String {
        String(decoding: decoder.decode(tokens, renderSpecialTokens: renderSpecialTokens), as: UTF8.self)
    }

    /// The raw bytes of one token: byte-level text decoded for `gpt2` vocabularies, "▁" as a
    /// space and `<0xXX>` as its byte for SentencePiece ones, control tokens as their text, and
    /// nothing for unused tokens or ids outside the vocabulary.
    public func pieceBytes(_ token: Int32) -> [UInt8] {
        decoder.piece(token)
    }

    /// The token's text as stored in the vocabulary (e.g. "Ġthe", "▁the", "<|im_end|>"), or nil
    /// for an id outside it.
    public func tokenText(_ token: Int32) -> String? {
        guard token >= 0 && Int(token) < vocabulary.count else { return nil }
        return String(decoding: vocabulary.texts[Int(token)], as: UTF8.self)
    }

    /// The id of the token whose vocabulary text is exactly `text`, or nil.
    public func tokenID(forText text: String) -> Int32? {
        vocabulary.idOfText.value(for: Array(text.utf8))
    }
}
