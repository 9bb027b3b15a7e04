import Foundation
import Testing
@testable import Coordinator

/// Comparisons with outputs recorded from llama.cpp (see LlamaCppExpectations.swift for how).
@Suite struct LlamaCppParityTests {
    static let vocabularies = ["smollm2", "gpt-2", "llama-spm", "llama-bpe", "aquila", "gpt-neox"]

    @Test func smolLM2ChatPromptMatchesLlamaCpp() throws {
        let tokenizer = try TestData.requireTokenizer("smollm2")
        let prompt = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            + "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        let expected: [Int32] = [
            1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712, 8182, 2,
            198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198,
        ]
        #expect(tokenizer.encode(prompt, addSpecial: true, parseSpecial: true) == expected)
        #expect(tokenizer.decode(expected) == prompt)
    }

    @Test(arguments: vocabularies)
    func sampleTextsMatchLlamaCpp(vocab: String) throws {
        let tokenizer = try TestData.requireTokenizer(vocab)
        let cases = try #require(LlamaCppExpectations.encodings[vocab])
        var passed = 0
        for c in cases {
            let got = tokenizer.encode(c.text, addSpecial: c.addSpecial, parseSpecial: c.parseSpecial)
            if got == c.ids {
                passed += 1
            } else {
                Issue.record("\(vocab): \(c.testDescription): expected \(c.ids), got \(got)")
            }
        }
        #expect(passed == cases.count, "\(vocab): \(passed)/\(cases.count) match llama.cpp")
    }

    @Test(arguments: vocabularies)
    func tenKilobytesMatchLlamaCpp(vocab: String) throws {
        let tokenizer = try TestData.requireTokenizer(vocab)
        let expected = try #require(LlamaCppExpectations.longTextIDs[vocab])
        let got = tokenizer.encode(LlamaCppExpectations.longText, addSpecial: false, parseSpecial: false)
        #expect(got == expected)
        if got != expected, let i = (0..<min(got.count, expected.count)).first(where: { got[$0] != expected[$0] }) {
            Issue.record("first difference at token \(i): got \(got[i...].prefix(8)), expected \(expected[i...].prefix(8))")
        }
    }

    /// Text without special tokens comes back from its tokens unchanged.
    @Test(arguments: vocabularies)
    func sampleTextsRoundTrip(vocab: String) throws {
        let tokenizer = try TestData.requireTokenizer(vocab)
        for c in try #require(LlamaCppExpectations.encodings[vocab]) where !c.addSpecial {
            let tokens = tokenizer.encode(c.text, addSpecial: false, parseSpecial: c.parseSpecial)
            let decoded = tokenizer.decode(tokens)
            if c.parseSpecial && vocab == "llama-spm" {
                // After a special token SentencePiece inserts a space prefix, which stays.
                continue
            }
            #expect(Array(decoded.utf8) == Array(c.text.utf8), "\(vocab): \(c.testDescription) -> \(decoded.debugDescription)")
        }
    }

    @Test(arguments: vocabularies)
    func specialTokensAndFlagsMatchLlamaCpp(vocab: String) throws {
        let tokenizer = try TestData.requireTokenizer(vocab)
        let facts = try #require(LlamaCppExpectations.facts[vocab])
        #expect(tokenizer.vocabularySize == facts.size)
        #expect(tokenizer.bosToken == facts.bos)
        #expect(tokenizer.eosToken == facts.eos)
        #expect(tokenizer.addBOS == facts.addBOS)
        #expect(tokenizer.addEOS == facts.addEOS)
        let eog = (0..<Int32(facts.size)).filter(tokenizer.isEndOfGeneration)
        #expect(eog == facts.endOfGeneration)
    }

    @Test(arguments: vocabularies)
    func piecesMatchLlamaCpp(vocab: String) throws {
        let tokenizer = try TestData.requireTokenizer(vocab)
        let facts = try #require(LlamaCppExpectations.facts[vocab])
        for p in facts.pieces {
            #expect(tokenizer.pieceBytes(p.token) == p.bytes, "\(vocab): token \(p.token) \(tokenizer.tokenText(p.token) ?? "?")")
        }
    }
}
