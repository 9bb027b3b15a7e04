import Testing
@testable import Worker

/// `quoted` and `oneLine`: what file contents and client text look like inside error messages.
@Suite struct ErrorTextTests {
    @Test func plainTextIsUnchanged() {
        #expect("general.name".quoted() == "'general.name'")
        #expect("Ġhello wörld 中文".quoted() == "'Ġhello wörld 中文'")
        #expect("a reason, with 'quotes'".oneLine() == "a reason, with 'quotes'")
    }

    @Test func unprintableCharactersAreEscaped() {
        #expect("a\nb\r\tc\0".quoted() == #"'a\nb\r\tc\0'"#)
        #expect("\u{1B}[31mred".quoted() == #"'\x1b[31mred'"#)
        #expect("it's a\\b".quoted() == #"'it\'s a\\b'"#)
        #expect("\u{85}\u{7F}".quoted() == #"'\x85\x7f'"#)
        // Bidirectional override, zero-width space, line separator.
        #expect("a\u{202E}b\u{200B}c\u{2028}".quoted() == #"'a\u{202e}b\u{200b}c\u{2028}'"#)
        #expect("line one\nline two".oneLine() == #"line one\nline two"#)
        // Already-clean text passes through oneLine unchanged, quoted names included.
        let message = "key \("a\nb".quoted()) is bad"
        #expect(message.oneLine() == message)
    }

    @Test func longTextIsCutWithItsLength() {
        let long = String(repeating: "x", count: 10_000_000)
        #expect(long.quoted(limit: 8) == "'xxxxxxxx…' (10000000 bytes)")
        #expect(long.oneLine(limit: 5) == "xxxxx… (10000000 bytes)")
        #expect("12345678".quoted(limit: 8) == "'12345678'")
        // An escape is never cut in half.
        #expect("abcdefg\n".quoted(limit: 8) == "'abcdefg…' (8 bytes)")
    }
}
