import Foundation
import Testing
import Worker
@testable import Coordinator

/// The tokenizer algorithms on small vocabularies, with the results worked out by hand from
/// llama.cpp's algorithms (llama-vocab.cpp). These need no downloaded files.
@Suite struct SyntheticTokenizerTests {
    typealias V = SyntheticVocabularies

    @Test func sentencePieceMergesByScore() throws {
        let t = try Tokenizer(gguf: V.gguf(V.spmMetadata()))
        #expect(t.vocabularySize == 259 + V.spmPieces.count + 1)
        // "ll" (-1), "llo" (-2), "he" (-3), "hello" (-4), "▁hello" (-5): the better-scored "he"
        // wins over "▁h" (-6), which is stale by the time it is popped.
        #expect(t.encode("hello", addSpecial: false, parseSpecial: false) == [V.spm("▁hello")])
        #expect(t.encode("hello world", addSpecial: false, parseSpecial: false) == [V.spm("▁hello"), V.spm("▁world")])
        // "i" is no piece: byte fallback.
        #expect(t.encode("hi", addSpecial: false, parseSpecial: false) == [V.spm("▁h"), V.spmByte(0x69)])
        #expect(t.encode("€", addSpecial: false, parseSpecial: false) == [V.spm("▁"), V.spmByte(0xE2), V.spmByte(0x82), V.spmByte(0xAC)])
        #expect(t.encode("", addSpecial: false, parseSpecial: false) == [])
    }

    @Test func sentencePieceSpecialTokensAndFlags() throws {
        let t = try Tokenizer(gguf: V.gguf(V.spmMetadata()))
        #expect(t.addBOS && !t.addEOS)  // llama.cpp's defaults for SentencePiece
        #expect(t.bosToken == 1 && t.eosToken == 2)
        #expect(t.encode("hello", addSpecial: true, parseSpecial: false) == [1, V.spm("▁hello")])
        #expect(t.encode("", addSpecial: true, parseSpecial: false) == [1])
        // A special token is followed by a space prefix, like the start of the text.
        #expect(t.encode("<s>hello</s>", addSpecial: false, parseSpecial: true) == [1, V.spm("▁hello"), 2])
        // Without parseSpecial the control texts are plain text...
        let asText: [Int32] = [V.spm("▁"), V.spmByte(0x3C), V.spmByte(0x73), V.spmByte(0x3E), V.spm("hello"),
                               V.spmByte(0x3C), V.spmByte(0x2F), V.spmByte(0x73), V.spmByte(0x3E)]
        #expect(t.encode("<s>hello</s>", addSpecial: false, parseSpecial: false) == asText)
        // ...but user-defined tokens are always recognised.
        #expect(t.encode("hello<tool>", addSpecial: false, parseSpecial: false) == [V.spm("▁hello"), V.spmTool])
        #expect(t.isEndOfGeneration(2) && !t.isEndOfGeneration(1) && !t.isEndOfGeneration(V.spm("▁hello")))
    }

    @Test func sentencePieceDecoding() throws {
        let t = try Tokenizer(gguf: V.gguf(V.spmMetadata()))
        #expect(t.pieceBytes(V.spm("▁hello")) == Array(" hello".utf8))
        #expect(t.pieceBytes(V.spmByte(0xE2)) == [0xE2])
        #expect(t.pieceBytes(1) == Array("<s>".utf8))
        #expect(t.pieceBytes(-1) == [] && t.pieceBytes(100_000) == [])
        for text in ["hello world", "hi", "€ hello  world ", " leading"] {
            #expect(t.decode(t.encode(text, addSpecial: false, parseSpecial: false)) == text)
        }
        // The first token's space is the inserted prefix; after BOS, llama.cpp keeps it.
        #expect(t.decode([1, V.spm("▁hello")]) == "<s> hello")
        #expect(t.decode([1, V.spm("▁hello")], renderSpecialTokens: false) == " hello")
        #expect(t.tokenText(V.spm("▁hello")) == "▁hello" && t.tokenID(forText: "▁world") == V.spm("▁world"))
    }

    @Test func byteLevelMergesLowestRankLeftmostFirst() throws {
        let t = try Tokenizer(gguf: V.gguf(V.bpeMetadata(pre: "gpt-2")))
        // Two "a a" candidates: the leftmost merges; "aa"+"a" has no merge.
        #expect(t.encode("aaa", addSpecial: false, parseSpecial: false) == [V.bpe("aa"), 97])
        #expect(t.encode("abc", addSpecial: false, parseSpecial: false) == [V.bpe("ab"), 99])
        // " x" merges into a symbol that is no token: llama.cpp looks up each byte of its text
        // "Ġx" as a one-byte token, so the space's two UTF-8 bytes are dropped and "x" is kept.
        #expect(t.encode("a x", addSpecial: false, parseSpecial: false) == [97, 120])
        #expect(t.encode(" y", addSpecial: false, parseSpecial: false) == [32, 121].map { Int32($0) })
        #expect(t.decode([V.bpe("aa"), 32, 121]) == "aa y")
        #expect(t.pieceBytes(10) == [0x0A] && t.tokenText(10) == "Ċ")
    }

    @Test func byteLevelIgnoreMergesForLlama3() throws {
        // The Llama-3 family looks whole words up first; "abc" has no merge path but is a token.
        let t = try Tokenizer(gguf: V.gguf(V.bpeMetadata(pre: "llama-bpe")))
        #expect(t.encode("abc", addSpecial: false, parseSpecial: false) == [V.bpe("abc")])
        #expect(t.addBOS)  // llama.cpp's default for llama-bpe
    }

    @Test func byteLevelDefaults() throws {
        // No tokenizer.ggml.pre: llama.cpp's "default" pre-tokenizer; no BOS/EOS keys: llama.cpp's
        // gpt2 defaults (token 11 for both).
        let t = try Tokenizer(gguf: V.gguf(V.bpeMetadata(pre: nil)))
        #expect(t.bosToken == 11 && t.eosToken == 11 && !t.addBOS)
        #expect(t.encode("aa, 12345", addSpecial: false, parseSpecial: false)
            == [V.bpe("aa"), 44, 32, 49, 50, 51, 52, 53])
    }

    @Test func byteLevelSpecialTokens() throws {
        let t = try Tokenizer(gguf: V.gguf(V.bpeMetadata(pre: "smollm")))
        let end = V.bpe("<|end|>"), tool = V.bpe("<|tool|>")
        #expect(t.encode("ab<|end|>aa", addSpecial: false, parseSpecial: true) == [V.bpe("ab"), end, V.bpe("aa")])
        #expect(t.encode("<|end|>", addSpecial: false, parseSpecial: false) == Array("<|end|>".utf8).map { Int32($0) })
        #expect(t.encode("aa<|tool|>", addSpecial: false, parseSpecial: false) == [V.bpe("aa"), tool])
        // "<|end|>" has an end-of-turn text: llama.cpp makes it an end-of-generation token.
        #expect(t.isEndOfGeneration(end) && !t.isEndOfGeneration(tool))
        #expect(t.decode([end, V.bpe("aa")]) == "<|end|>aa")
        #expect(t.decode([end, V.bpe("aa")], renderSpecialTokens: false) == "aa")
        // smollm isolates every digit.
        #expect(t.encode("a12", addSpecial: false, parseSpecial: false) == [97, 49, 50])
    }
}
