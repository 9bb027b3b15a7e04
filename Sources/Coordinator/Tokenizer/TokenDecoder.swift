/// Token ids back to bytes, as llama.cpp's `token_to_piece` and `detokenize`.
struct TokenDecoder: Sendable {
    /// The bytes of every token, computed once (llama.cpp keeps the same cache).
    let pieces: [[UInt8]]
    /// Whether each token is a control or unknown token (hidden when special tokens are not rendered).
    private let hiddenUnlessSpecial: [Bool]
    private let stripsLeadingSpace: Bool

    init(vocabulary: Vocabulary) {
        let byteLevel: Bool
        switch vocabulary.model {
        case .sentencePiece: byteLevel = false
        case .byteLevelBPE: byteLevel = true
        }
        pieces = (0..<vocabulary.count).map { id in
            Self.piece(text: vocabulary.texts[id], attributes: vocabulary.attributes[id], byteLevel: byteLevel)
        }
        hiddenUnlessSpecial = vocabulary.attributes.map { !$0.isDisjoint(with: [.control, .unknown]) }
        stripsLeadingSpace = vocabulary.addSpacePrefix
    }

    private static func piece(text: [UInt8], attributes: TokenAttributes, byteLevel: Bool) -> [UInt8] {
        if !attributes.isDisjoint(with: [.control, .unknown, .userDefined]) { return text }
        if attributes.contains(.normal) {
            return byteLevel ? byteLevelDecode(text) : unescapeWhitespace(text)
        }
        if attributes.contains(.byte) {
            // "<0xXX>"
            guard text.count >= 5, let b = UInt8(String(decoding: text[3..<5], as: UTF8.self), radix: 16) else { return [] }
            return [b]
        }
        return []  // unused and undefined tokens render as nothing
    }

    /// "▁" (U+2581) back to a space.
    private static func unescapeWhitespace(_ text: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(text.count)
        var i = 0
        while i < text.count {
            if i + 2 < text.count && text[i] == 0xE2 && text[i + 1] == 0x96 && text[i + 2] == 0x81 {
                out.append(0x20)
                i += 3
            } else {
                out.append(text[i])
                i += 1
            }
        }
        return out
    }

    /// GPT-2 stand-in code points back to bytes. A code point that is not a stand-in is written
    /// as llama.cpp writes it: "[UNK_BYTE_0x<its UTF-8 in hex><the token text>]".
    private static func byteLevelDecode(_ text: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: text.count)
        let end = text.withUnsafeBufferPointer { utf8 in
            out.withUnsafeMutableBufferPointer { ByteLevelBPE.decodeByteLevel(utf8, into: $0, at: 0) }
        }
        if let end { return Array(out[..<end]) }
        return byteLevelDecodeWithUnknowns(text)
    }

    private static func byteLevelDecodeWithUnknowns(_ text: [UInt8]) -> [UInt8] {
        let decoded = text.withUnsafeBufferPointer { UTF8Text($0, 0..<$0.count) }
        var out: [UInt8] = []
        for (i, cp) in decoded.scalars.enumerated() {
            if let b = ByteLevel.byte(of: cp) {
                out.append(b)
            } else {
                let utf8 = text[decoded.byteRange(i..<(i + 1))]
                let hex = utf8.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
                out.append(contentsOf: Array("[UNK_BYTE_0x\(hex)".utf8) + text + Array("]".utf8))
            }
        }
        return out
    }

    func piece(_ token: Int32) -> [UInt8] {
        guard token >= 0 && Int(token) < pieces.count else { return [] }
        return pieces[Int(token)]
    }

    /// The bytes of `tokens`. When the vocabulary adds a space prefix, the first token's leading
    /// space is the one encoding inserted and is dropped (llama.cpp's `detokenize` does the same,
    /// with `remove_special` false: a leading BOS is kept and the space after it too).
    func decode(_ tokens: [Int32], renderSpecialTokens: Bool) -> [UInt8] {
        var out: [UInt8] = []
        for (i, token) in tokens.enumerated() {
            guard token >= 0 && Int(token) < pieces.count else { continue }
            if !renderSpecialTokens && hiddenUnlessSpecial[Int(token)] { continue }
            let p = pieces[Int(token)]
            if i == 0 && stripsLeadingSpace && p.first == 0x20 {
                out.append(contentsOf: p.dropFirst())
            } else {
                out.append(contentsOf: p)
            }
        }
        return out
    }
}

/// Turns tokens into text as they arrive, holding back the bytes of a UTF-8 character that a
/// later token will complete (byte-level and byte-fallback tokens split characters).
///
/// Each token's piece is used as is: unlike `Tokenizer.decode`, no leading space is dropped,
/// since streamed tokens continue a prompt (the same as llama.cpp's per-token `token_to_piece`).
/// Control tokens are rendered as their text.
public struct StreamingDecoder: Sendable {
    private let tokenizer: Tokenizer
    private var pending: [UInt8] = []

    public init(tokenizer: Tokenizer) {
        self.tokenizer = tokenizer
    }

    /// The text that `token` completes (possibly empty).
    public mutating func append(_ token: Int32) -> String {
        pending.append(contentsOf: tokenizer.pieceBytes(token))
        let complete = Self.completePrefixLength(pending)
        guard complete > 0 else { return "" }
        let text = String(decoding: pending[..<complete], as: UTF8.self)
        pending.removeFirst(complete)
        return text
    }

    /// Whatever is held back; bytes of an unfinished character become U+FFFD.
    public mutating func flush() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    /// The length of the longest prefix that does not end inside an unfinished UTF-8 sequence.
    static func completePrefixLength(_ bytes: [UInt8]) -> Int {
        // Walk back over at most three continuation bytes to the last lead byte.
        var i = bytes.count
        var continuations = 0
        while i > 0 && continuations < 4 {
            let b = bytes[i - 1]
            if b & 0xC0 != 0x80 { break }
            i -= 1
            continuations += 1
        }
        guard i > 0 else { return bytes.count }
        let lead = bytes[i - 1]
        guard lead >= 0xC0 else { return bytes.count }  // ASCII, or stray continuation bytes
        let needed = UTF8Text.sequenceLength(leadByte: lead)
        return continuations + 1 < needed ? i - 1 : bytes.count
    }
}
