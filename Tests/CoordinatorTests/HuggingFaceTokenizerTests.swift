import Foundation
import Testing
import TestSupport
import Worker
@testable import Coordinator

/// tokenizer.json + tokenizer_config.json mapped onto the GGUF tokenizer machinery: llama.cpp's
/// conformance files through Hugging Face files written from the same vocabularies, the settings
/// read from the files, and a clear error for every setting with no equivalent here.
@Suite struct HuggingFaceTokenizerTests {
    static func folder() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("medusa-hftok-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.path
    }

    /// The Hugging Face files of a GGUF vocabulary, in a fresh folder.
    static func converted(_ ggufPath: String, mergesAsPairs: Bool = false,
                          spaceStyle: HuggingFaceTokenizerWriter.SpaceStyle = .normalizer) throws -> String {
        let dir = try folder()
        try HuggingFaceTokenizerWriter.write(from: GGUFFile(path: ggufPath), to: dir, mergesAsPairs: mergesAsPairs, spaceStyle: spaceStyle)
        return dir
    }

    @Test(arguments: ["gpt-2", "llama-spm", "llama-bpe", "mpt", "starcoder", "refact", "command-r", "phi-3"])
    func matchesLlamaCppThroughTokenizerJSON(vocab: String) throws {
        let path = try TestData.requireVocab(vocab)
        // Alternate the file variants: merge strings or pairs, spaces by normalizer or Metaspace.
        let variant = ["gpt-2", "llama-spm", "starcoder", "command-r"].contains(vocab)
        let dir = try Self.converted(path, mergesAsPairs: variant, spaceStyle: variant ? .metaspace : .normalizer)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let hf = try Tokenizer(huggingFaceDirectory: dir)
        let gguf = try TestData.tokenizer(path: path)
        #expect(hf.vocabularySize == gguf.vocabularySize)
        #expect(hf.bosToken == gguf.bosToken && hf.eosToken == gguf.eosToken)
        #expect(hf.addBOS == gguf.addBOS && hf.addEOS == gguf.addEOS)
        var passed = 0
        let cases = try VocabConformanceTests.cases(vocabPath: path)
        #expect(cases.count > 30)
        for c in cases {
            let got = hf.encode(c.input, addSpecial: false, parseSpecial: false)
            if got == c.expected {
                passed += 1
            } else {
                Issue.record("\(vocab): \(c.input.debugDescription): expected \(c.expected), got \(got)")
            }
            #expect(hf.decode(got) == gguf.decode(got))
            #expect(hf.encode(c.input, addSpecial: true, parseSpecial: true) == gguf.encode(c.input, addSpecial: true, parseSpecial: true))
        }
        #expect(passed == cases.count, "\(vocab): \(passed)/\(cases.count) inputs match llama.cpp")
        for id in Int32(0)..<Int32(gguf.vocabularySize) where gguf.isEndOfGeneration(id) != hf.isEndOfGeneration(id) {
            Issue.record("\(vocab): token \(id) end of generation: GGUF \(gguf.isEndOfGeneration(id)), HF \(hf.isEndOfGeneration(id))")
        }
    }

    @Test func smolLM2ThroughTokenizerJSON() throws {
        let path = try TestData.requireModel()
        let dir = try Self.converted(path)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let hf = try Tokenizer(huggingFaceDirectory: dir)
        let gguf = try TestData.tokenizer(path: path)
        for text in ["Hello world", "<|im_start|>user\nWhat is 12345 + 678?<|im_end|>\n<|im_start|>assistant\n",
                     "  spaces\tand\ttabs\n\n", "naïve café, 東京, emoji 🤖", "don't you'LL see", ""] {
            #expect(hf.encode(text, addSpecial: true, parseSpecial: true) == gguf.encode(text, addSpecial: true, parseSpecial: true))
            #expect(hf.encode(text, addSpecial: true, parseSpecial: false) == gguf.encode(text, addSpecial: true, parseSpecial: false))
        }
        #expect(hf.chatTemplateText == gguf.chatTemplateText)
        #expect(hf.chatTemplateText.flatMap(ChatTemplate.detect(from:)) == .chatml)
        #expect(hf.bosToken == gguf.bosToken && hf.eosToken == gguf.eosToken && hf.addBOS == gguf.addBOS)
    }

    // MARK: Settings read from the files

    /// A small byte-level tokenizer.json: the 256 byte stand-ins, "he", "hel", "hello", then
    /// `extra` added tokens.
    static func byteLevelJSON(preTokenizer: String = #"{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}"#,
                              postProcessor: String = "null", normalizer: String = "null",
                              merges: String = #"["h e", "he l", "hel l", "hell o"]"#, modelType: String = "BPE") -> String {
        var vocab: [String] = []
        for b in 0..<256 { vocab.append("\"\(escape(String(SyntheticLlama.byteLevelCharacter(UInt8(b)))))\": \(b)") }
        vocab += [#""he": 256"#, #""hel": 257"#, #""hell": 258"#, #""hello": 259"#, #""<|s|>": 260"#, #""<|e|>": 261"#, #""<tool>": 262"#]
        return """
            {"version": "1.0", "added_tokens": [
              {"id": 260, "content": "<|s|>", "special": true}, {"id": 261, "content": "<|e|>", "special": true},
              {"id": 262, "content": "<tool>", "special": false}],
             "normalizer": \(normalizer), "pre_tokenizer": \(preTokenizer), "post_processor": \(postProcessor),
             "model": {"type": "\(modelType)", "vocab": {\(vocab.joined(separator: ", "))}, "merges": \(merges)}}
            """
    }

    static func escape(_ s: String) -> String {
        s.unicodeScalars.map { c -> String in
            switch c {
            case "\"": return "\\\""
            case "\\": return "\\\\"
            default: return c.value < 0x20 || c.value == 0x7F ? String(format: "\\u%04x", c.value) : String(c)
            }
        }.joined()
    }

    static func write(_ files: [String: String]) throws -> String {
        let dir = try folder()
        for (name, text) in files {
            try Data(text.utf8).write(to: URL(fileURLWithPath: (dir as NSString).appendingPathComponent(name)))
        }
        return dir
    }

    @Test func specialTokensAndFlagsFromTheConfigFiles() throws {
        let dir = try Self.write([
            "tokenizer.json": Self.byteLevelJSON(),
            "tokenizer_config.json": #"{"bos_token": {"content": "<|s|>", "__type": "AddedToken"}, "eos_token": "<|e|>", "add_bos_token": true, "chat_template": [{"name": "tool_use", "template": "x"}, {"name": "default", "template": "{{ '<|im_start|>' }}"}]}"#,
            "config.json": #"{"vocab_size": 300}"#,
        ])
        let t = try Tokenizer(huggingFaceDirectory: dir)
        #expect(t.vocabularySize == 300)
        #expect(t.bosToken == 260 && t.eosToken == 261 && t.addBOS && !t.addEOS)
        #expect(t.isEndOfGeneration(261))
        #expect(t.encode("hello<|e|> <tool>x", addSpecial: true, parseSpecial: true) == [260, 259, 261, 32, 262, 120])
        #expect(t.encode("<|e|>", addSpecial: false, parseSpecial: false) == [60, 124, 101, 124, 62])
        #expect(t.tokenText(299) == "[PAD299]")
        #expect(t.decode([260, 259, 299]) == "<|s|>hello")
        #expect(t.chatTemplateText == "{{ '<|im_start|>' }}")
    }

    @Test func addBOSFromThePostProcessorAndIdsFromConfigJSON() throws {
        let template = #"{"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|s|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "<|e|>", "type_id": 0}}]}"#
        let dir = try Self.write(["tokenizer.json": Self.byteLevelJSON(postProcessor: template)])
        let t = try Tokenizer(huggingFaceDirectory: dir)
        #expect(t.addBOS && t.addEOS && t.bosToken == 260 && t.eosToken == 261)
        #expect(t.encode("he", addSpecial: true, parseSpecial: false) == [260, 256, 261])
        #expect(t.chatTemplateText == nil)

        // Llama 3 puts the template after a ByteLevel processor.
        let sequence = #"{"type": "Sequence", "processors": [{"type": "ByteLevel"}, \#(template)]}"#
        let llama3 = try Tokenizer(huggingFaceDirectory: Self.write(["tokenizer.json": Self.byteLevelJSON(postProcessor: sequence)]))
        #expect(llama3.encode("he", addSpecial: true, parseSpecial: false) == [260, 256, 261])

        let ids = try Self.write(["tokenizer.json": Self.byteLevelJSON(), "config.json": #"{"bos_token_id": 261, "eos_token_id": [260, 261]}"#,
                                  "chat_template.jinja": "{% for m in messages %}USER: x ASSISTANT: {% endfor %}"])
        let u = try Tokenizer(huggingFaceDirectory: ids)
        #expect(u.bosToken == 261 && u.eosToken == 260 && !u.addBOS)
        #expect(u.chatTemplateText.flatMap(ChatTemplate.detect(from:)) == .vicuna)
    }

    @Test func preTokenizersMapToTheKnownConfigurations() throws {
        let digits = #"{"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, {"type": "ByteLevel", "use_regex": true}]}"#
        let split = #"{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\#(Self.escape(HuggingFaceTokenizerWriter.llama3Regex))"}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "use_regex": false}]}"#
        let gpt2 = #"{"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}"#
        let gpt2Split = #"{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "use_regex": false}]}"#
        for (json, expected, digitsSplit) in [(digits, PreTokenizer.Kind.starcoder, [49, 50, 51]), (split, .llama3, [49, 50, 51]),
                                              (gpt2, .gpt2, [49, 50, 51]), (gpt2Split, .gpt2, [49, 50, 51])] {
            let dir = try Self.write(["tokenizer.json": Self.byteLevelJSON(preTokenizer: json)])
            let files = try HuggingFaceTokenizerFiles(directory: dir)
            guard case .byteLevelBPE(let configuration) = files.description.model else {
                Issue.record("not byte-level")
                continue
            }
            #expect(configuration.kind == expected)
            let t = try Tokenizer(huggingFaceDirectory: dir)
            #expect(t.encode("123", addSpecial: false, parseSpecial: false) == digitsSplit.map(Int32.init))
        }
    }

    @Test func sentencePieceStyleFromMerges() throws {
        // <unk> <s> </s>, byte tokens, then pieces; merges make "▁hello" via ▁h, he... .
        var vocab = [#""<unk>": 0"#, #""<s>": 1"#, #""</s>": 2"#]
        for b in 0..<256 { vocab.append("\"\(String(format: "<0x%02X>", b))\": \(3 + b)") }
        let pieces = ["▁", "h", "e", "l", "o", "▁h", "ll", "▁he", "llo", "▁hello"]
        for (i, p) in pieces.enumerated() { vocab.append("\"\(p)\": \(259 + i)") }
        let json = """
            {"added_tokens": [{"id": 0, "content": "<unk>", "special": true}, {"id": 1, "content": "<s>", "special": true},
                              {"id": 2, "content": "</s>", "special": true}],
             "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
             "pre_tokenizer": null, "post_processor": null,
             "model": {"type": "BPE", "unk_token": "<unk>", "byte_fallback": true, "vocab": {\(vocab.joined(separator: ", "))},
                       "merges": [["▁", "h"], ["l", "l"], ["▁h", "e"], ["ll", "o"], ["▁he", "llo"]]}}
            """
        let dir = try Self.write(["tokenizer.json": json, "tokenizer_config.json": #"{"add_bos_token": true, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}"#])
        let t = try Tokenizer(huggingFaceDirectory: dir)
        let id = { (p: String) in Int32(259 + pieces.firstIndex(of: p)!) }
        #expect(t.addBOS && t.bosToken == 1 && t.eosToken == 2)
        let byte = { (b: Int32) in 3 + b }
        let hello: [Int32] = [1, id("▁hello"), id("▁hello"), byte(0x21)]
        #expect(t.encode("hello hello!", addSpecial: true, parseSpecial: false) == hello)
        #expect(t.decode(t.encode("hello hello!", addSpecial: false, parseSpecial: false)) == "hello hello!")
        let accent: [Int32] = [id("▁"), byte(0xC3), byte(0xA9)]
        #expect(t.encode("é", addSpecial: false, parseSpecial: false) == accent)
    }

    // MARK: Errors

    func failure(_ files: [String: String]) throws -> String {
        let dir = try Self.write(files)
        do {
            _ = try Tokenizer(huggingFaceDirectory: dir)
            Issue.record("loaded; expected an error")
            return ""
        } catch {
            let text = "\(error)"
            #expect(!text.contains("\n"), "one line: \(text)")
            return text
        }
    }

    @Test func unsupportedSettingsAreNamed() throws {
        let unknownRegex = #"{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\p{N}|[a-z]+"}, "behavior": "Isolated"}, {"type": "ByteLevel", "use_regex": false}]}"#
        #expect(try failure(["tokenizer.json": Self.byteLevelJSON(preTokenizer: unknownRegex)])
            .contains(#"tokenizer.json: pre_tokenizer: the Split regex '\p{N}|[a-z]+' is not one this project implements (known: GPT-2, Llama 3)"#))
        let removed = #"{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\#(Self.escape(HuggingFaceTokenizerWriter.llama3Regex))"}, "behavior": "Removed"}, {"type": "ByteLevel", "use_regex": false}]}"#
        #expect(try failure(["tokenizer.json": Self.byteLevelJSON(preTokenizer: removed)]).contains("behavior Removed"))
        #expect(try failure(["tokenizer.json": Self.byteLevelJSON(modelType: "Unigram")])
            .contains("tokenizer.json: model.type: 'Unigram' is not supported (supported: BPE)"))
        #expect(try failure(["tokenizer.json": Self.byteLevelJSON(preTokenizer: #"{"type": "Whitespace"}"#)])
            .contains("neither a ByteLevel pre-tokenizer nor SentencePiece-style"))
        #expect(try failure(["tokenizer.json": Self.byteLevelJSON(normalizer: #"{"type": "NFC"}"#)])
            .contains("normalizer: [NFC] is not supported"))
        #expect(try failure(["tokenizer.json": Self.byteLevelJSON(preTokenizer: #"{"type": "ByteLevel", "add_prefix_space": true}"#)])
            .contains("add_prefix_space"))
        #expect(try failure(["tokenizer.json": Self.byteLevelJSON(), "tokenizer_config.json": #"{"eos_token": "<nope>"}"#])
            .contains("tokenizer_config.json: key 'eos_token': '<nope>' is not a token"))
        #expect(try failure(["tokenizer.json": Self.byteLevelJSON(), "tokenizer_config.json": #"{"add_bos_token": "yes"}"#])
            .contains("tokenizer_config.json: key 'add_bos_token' should be a boolean, found a string"))
    }

    @Test func malformedFilesAreNamed() throws {
        #expect(try failure(["tokenizer_config.json": "{}"]).contains("tokenizer.json: cannot open: no such file"))
        #expect(try failure(["tokenizer.model": "\u{0}"]).contains("there is no tokenizer.json, only tokenizer.model"))
        #expect(try failure(["tokenizer.json": #"{"model": {"type": "BPE", "vocab": {"a": 0}"#])
            .contains("tokenizer.json: tokenizer.json is not valid JSON"))
        #expect(try failure(["tokenizer.json": #"{"model": {"type": "BPE", "vocab": {"a": "zero"}}}"#])
            .contains("tokenizer.json: tokenizer.json is not valid JSON: model.vocab.a should be Int"))
        #expect(try failure(["tokenizer.json": #"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["ab"]}, "pre_tokenizer": {"type": "ByteLevel"}}"#])
            .contains("merge 'ab' is not \"left right\""))
        #expect(try failure(["tokenizer.json": #"{"added_tokens": []}"#]).contains("model is missing"))
        #expect(try failure(["tokenizer.json": Self.byteLevelJSON(), "tokenizer_config.json": "{"]).contains("tokenizer_config.json: tokenizer_config.json is not valid JSON"))
    }
}
