import Foundation
import Testing
import Worker
@testable import Coordinator

/// Malformed or unsupported tokenizer metadata is an error naming the file and the key.
@Suite struct TokenizerErrorTests {
    typealias V = SyntheticVocabularies

    func metadata(_ base: [(String, GGUFValue)], removing key: String? = nil, setting: [(String, GGUFValue)] = []) -> [(String, GGUFValue)] {
        var m = base.filter { $0.0 != key }
        for (k, v) in setting {
            if let i = m.firstIndex(where: { $0.0 == k }) { m[i].1 = v } else { m.append((k, v)) }
        }
        return m
    }

    @Test func missingModelKey() throws {
        let file = try V.gguf(metadata(V.spmMetadata(), removing: "tokenizer.ggml.model"))
        #expect(throws: WeightFileError(path: file.path, problem: .missingKey("tokenizer.ggml.model"))) {
            try Tokenizer(gguf: file)
        }
    }

    @Test func unsupportedModel() throws {
        let file = try V.gguf(metadata(V.spmMetadata(), setting: [("tokenizer.ggml.model", .string("bert"))]))
        let error = try #require(throws: TokenizerError.self) { try Tokenizer(gguf: file) }
        #expect(error.problem == .unsupportedModel("bert", supported: ["gpt2", "llama"]))
        #expect(error.description.contains("tokenizer.ggml.model is 'bert'") && error.description.contains("gpt2, llama"))
        #expect(error.description.hasPrefix(file.path))
    }

    @Test func unsupportedPreTokenizerListsTheSupportedOnes() throws {
        let file = try V.gguf(V.bpeMetadata(pre: "qwen2"))
        let error = try #require(throws: TokenizerError.self) { try Tokenizer(gguf: file) }
        guard case .unsupportedPreTokenizer(let name, let supported) = error.problem else {
            Issue.record("unexpected \(error)")
            return
        }
        #expect(name == "qwen2")
        for required in ["default", "gpt-2", "llama-bpe", "smollm"] { #expect(supported.contains(required)) }
        #expect(error.description.contains("tokenizer.ggml.pre is 'qwen2'") && error.description.contains("smollm"))
    }

    @Test func byteLevelWithoutMerges() throws {
        let file = try V.gguf(metadata(V.bpeMetadata(pre: "gpt-2"), removing: "tokenizer.ggml.merges"))
        #expect(throws: WeightFileError(path: file.path, problem: .missingKey("tokenizer.ggml.merges"))) {
            try Tokenizer(gguf: file)
        }
    }

    @Test func wrongTypes() throws {
        let tokensAsNumbers = try V.gguf(metadata(V.spmMetadata(), setting: [("tokenizer.ggml.tokens", .array(.int32([1, 2])))]))
        let e1 = try #require(throws: WeightFileError.self) { try Tokenizer(gguf: tokensAsNumbers) }
        #expect(e1.problem == .wrongKeyType(key: "tokenizer.ggml.tokens", expected: "an array of strings", found: "array of int32"))

        let preAsNumber = try V.gguf(metadata(V.bpeMetadata(pre: nil), setting: [("tokenizer.ggml.pre", .uint32(3))]))
        let e2 = try #require(throws: WeightFileError.self) { try Tokenizer(gguf: preAsNumber) }
        #expect(e2.problem == .wrongKeyType(key: "tokenizer.ggml.pre", expected: "a string", found: "uint32"))

        let flagAsString = try V.gguf(metadata(V.spmMetadata(), setting: [("tokenizer.ggml.add_bos_token", .string("yes"))]))
        let e3 = try #require(throws: WeightFileError.self) { try Tokenizer(gguf: flagAsString) }
        #expect(e3.description.contains("tokenizer.ggml.add_bos_token"))
    }

    @Test func arraysThatDoNotFit() throws {
        let shortTypes = try V.gguf(metadata(V.spmMetadata(), setting: [("tokenizer.ggml.token_type", .array(.int32([1, 1])))]))
        let e1 = try #require(throws: TokenizerError.self) { try Tokenizer(gguf: shortTypes) }
        #expect(e1.problem == .badValue(key: "tokenizer.ggml.token_type", reason: "2 token types for \(V.spmPieces.count + 260) tokens"))

        let shortScores = try V.gguf(metadata(V.spmMetadata(), setting: [("tokenizer.ggml.scores", .array(.float32([0])))]))
        let e2 = try #require(throws: TokenizerError.self) { try Tokenizer(gguf: shortScores) }
        #expect(e2.description.contains("tokenizer.ggml.scores"))

        let empty = try V.gguf(metadata(V.spmMetadata(), setting: [("tokenizer.ggml.tokens", .array(.string([])))]))
        let e3 = try #require(throws: TokenizerError.self) { try Tokenizer(gguf: empty) }
        #expect(e3.problem == .badValue(key: "tokenizer.ggml.tokens", reason: "the vocabulary is empty"))
    }

    @Test func specialIDsOutsideTheVocabularyAreIgnored() throws {
        // llama.cpp keeps the default when a key names a token that does not exist.
        let file = try V.gguf(metadata(V.spmMetadata(), setting: [("tokenizer.ggml.bos_token_id", .uint32(1_000_000))]))
        let t = try Tokenizer(gguf: file)
        #expect(t.bosToken == 1)
    }
}
