import Testing
@testable import Coordinator

/// The word splitting rules, on strings small enough to follow llama.cpp's splitters by hand.
@Suite struct PreTokenizerTests {
    func words(_ kind: PreTokenizer.Kind, _ text: String) -> [String] {
        let scalars = text.unicodeScalars.map(\.value)
        return PreTokenizer(kind: kind).split(scalars).map { range in
            String(String.UnicodeScalarView(range.map { Unicode.Scalar(scalars[$0]) ?? "?" }))
        }
    }

    @Test func gpt2() {
        #expect(words(.gpt2, "Hello world") == ["Hello", " world"])
        #expect(words(.gpt2, "I'm can't they'll 'RE") == ["I", "'m", " can", "'t", " they", "'ll", " '", "RE"])
        #expect(words(.gpt2, "  x") == [" ", " x"])
        #expect(words(.gpt2, "a  ") == ["a", "  "])
        #expect(words(.gpt2, "123abc $$ x") == ["123", "abc", " $$", " x"])
        #expect(words(.gpt2, "a\n\n b") == ["a", "\n\n", " b"])
        #expect(words(.gpt2, "") == [])
    }

    @Test func llama3() {
        #expect(words(.llama3, "1234567") == ["123", "456", "7"])
        #expect(words(.llama3, "\n\n  x") == ["\n\n", " ", " x"])
        #expect(words(.llama3, "IT'S we'Ll") == ["IT", "'S", " we", "'Ll"])
        #expect(words(.llama3, "hello!!\n\nnext") == ["hello", "!!\n\n", "next"])
        #expect(words(.llama3, "(x) 12ab") == ["(x", ")", " ", "12", "ab"])
    }

    @Test func starcoderIsolatesDigits() {
        #expect(words(.starcoder, "abc123") == ["abc", "1", "2", "3"])
        #expect(words(.starcoder, " 12") == [" ", "1", "2"])
        #expect(words(.starcoder, "x٣") == ["x", "٣"])  // Arabic-Indic digit three is \p{N}
    }

    @Test func defaultSplitsPunctuationNumbersAndTriples() {
        #expect(words(.default, "Hello, world!! 12345") == ["Hello", ",", " world", "!!", " ", "123", "45"])
        // "`" is a symbol outside the default's punctuation class; GPT-2's regex then splits it off.
        #expect(words(.default, "a+b=c`d") == ["a", "+", "b", "=", "c", "`", "d"])
    }

    /// llama.cpp's tables are Unicode 15.1; a letter added in Unicode 16 is unassigned to it.
    @Test func codePointsNewerThanUnicode15AreUnassigned() {
        #expect(CodepointFlags.of(0x1C88) == .letter)  // Unicode 9
        #expect(CodepointFlags.of(0x1C89) == .undefined)  // Unicode 16
        #expect(words(.gpt2, "a\u{1C89}b") == ["a", "\u{1C89}", "b"])
        #expect(CodepointFlags.of(0x1_0000) == .letter)
        #expect(CodepointFlags.of(0xE000) == .control)  // private use
    }

    @Test func whitespaceIsUnicodeWhiteSpace() {
        for cp: UInt32 in [0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x20, 0x85, 0xA0, 0x1680, 0x2000, 0x200A, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000] {
            #expect(CodepointFlags.of(cp).contains(.whitespace), "U+\(String(cp, radix: 16))")
        }
        for cp: UInt32 in [0x200B, 0x180E, 0xFEFF, 0x41] {
            #expect(!CodepointFlags.of(cp).contains(.whitespace), "U+\(String(cp, radix: 16))")
        }
        // Only U+0020 can be the optional space before a word.
        #expect(words(.gpt2, "a\u{A0}\u{A0}b") == ["a", "\u{A0}", "\u{A0}", "b"])
        #expect(words(.gpt2, "a  b") == ["a", " ", " b"])
    }

    @Test func supportedNames() {
        let table = PreTokenizer.configurations
        #expect(table["smollm"] == PreTokenizer.Configuration(kind: .starcoder))
        #expect(table["llama-bpe"] == PreTokenizer.Configuration(kind: .llama3, ignoreMerges: true, addBOS: true))
        #expect(table["gpt-2"]?.kind == .gpt2)
        #expect(table["default"]?.kind == .default)
        #expect(table["qwen2"] == nil)
    }
}
