import Foundation
import Testing
@testable import Coordinator

@Suite struct StreamingDecoderTests {
    typealias V = SyntheticVocabularies

    @Test func holdsBackUnfinishedCharacters() throws {
        let t = try Tokenizer(gguf: V.gguf(V.spmMetadata()))
        var stream = StreamingDecoder(tokenizer: t)
        #expect(stream.append(V.spm("▁hello")) == " hello")
        #expect(stream.append(V.spmByte(0xE2)) == "")
        #expect(stream.append(V.spmByte(0x82)) == "")
        #expect(stream.append(V.spmByte(0xAC)) == "€")
        #expect(stream.append(V.spmByte(0xF0)) == "")
        #expect(stream.append(V.spmByte(0x9F)) == "")
        // The stream ends inside a character: flush gives the replacement character.
        #expect(stream.flush() == "\u{FFFD}")
        #expect(stream.flush() == "")
        // An invalid byte is not held back for ever.
        #expect(stream.append(V.spmByte(0x80)) == "\u{FFFD}")
        #expect(stream.append(2) == "</s>")
    }

    @Test func completePrefixLength() {
        #expect(StreamingDecoder.completePrefixLength([]) == 0)
        #expect(StreamingDecoder.completePrefixLength([0x41]) == 1)
        #expect(StreamingDecoder.completePrefixLength([0x41, 0xE4]) == 1)
        #expect(StreamingDecoder.completePrefixLength([0x41, 0xE4, 0xB8]) == 1)
        #expect(StreamingDecoder.completePrefixLength([0x41, 0xE4, 0xB8, 0xAD]) == 4)
        #expect(StreamingDecoder.completePrefixLength([0xF0, 0x9F, 0x98]) == 0)
        #expect(StreamingDecoder.completePrefixLength([0x80, 0x80]) == 2)
        #expect(StreamingDecoder.completePrefixLength([0xC3]) == 0)
    }

    /// Byte-level tokens split multi-byte characters; streaming gives the text back exactly,
    /// and never a partial character.
    @Test(arguments: ["smollm2", "llama-spm", "llama-bpe"])
    func streamsRealTokensBackToTheText(vocab: String) throws {
        let t = try TestData.requireTokenizer(vocab)
        let text = "Ünïcödé 日本語のテキスト 👨‍👩‍👧‍👦 🇫🇷 and 😁 ?我想在apple工作 \u{1F999}.cpp"
        let tokens = t.encode(text, addSpecial: false, parseSpecial: false)
        var stream = StreamingDecoder(tokenizer: t)
        var out = ""
        var heldBack = 0
        for token in tokens {
            let chunk = stream.append(token)
            #expect(!chunk.unicodeScalars.contains("\u{FFFD}"))
            if chunk.isEmpty { heldBack += 1 }
            out += chunk
        }
        out += stream.flush()
        // SentencePiece's first token carries the inserted space prefix; streaming keeps it.
        let expected = vocab == "llama-spm" ? " " + text : text
        #expect(Array(out.utf8) == Array(expected.utf8))
        #expect(heldBack > 0, "the text should make some token end inside a character")
    }
}
