/// Text from a file or a client, made fit for a one-line error message.
///
/// A name read from a damaged file can be megabytes of binary (one flipped byte in a GGUF key's
/// length makes the rest of the header its "name"), and a client can send anything: every such
/// string goes into a message through `quoted` (names) or `oneLine` (free text), which escape what
/// a terminal or a log would act on and cut what is too long, saying how long it was.
extension StringProtocol {
    /// In single quotes, with `\`, `'` and unprintable characters escaped, cut after `limit`
    /// characters: `'general.name'`, `'a\nb'`, `'token_embd\x04\0…' (31158281 bytes)`.
    public func quoted(limit: Int = 80) -> String {
        "'" + ErrorText.escape(self, limit: limit, quote: true)
    }

    /// Free text (a reason, a parser's message) on one line: unprintable characters escaped, cut
    /// after `limit` characters. Text that is already clean comes back unchanged, so a message
    /// that embeds a `quoted` name can pass through it again.
    public func oneLine(limit: Int = 1000) -> String {
        ErrorText.escape(self, limit: limit, quote: false)
    }
}

enum ErrorText {
    /// The escaped text, cut at `limit` characters of output; with `quote`, the closing quote
    /// comes before the cut's note.
    static func escape(_ text: some StringProtocol, limit: Int, quote: Bool) -> String {
        var out = ""
        var written = 0
        for scalar in text.unicodeScalars {
            let piece = escaped(scalar, quote: quote)
            guard written + piece.count <= max(limit, 1) else {
                return out + (quote ? "…'" : "…") + " (\(text.utf8.count) bytes)"
            }
            out += piece
            written += piece.count
        }
        return quote ? out + "'" : out
    }

    private static func escaped(_ scalar: Unicode.Scalar, quote: Bool) -> String {
        switch scalar {
        case "\n": return "\\n"
        case "\r": return "\\r"
        case "\t": return "\\t"
        case "\0": return "\\0"
        case "\\" where quote: return "\\\\"
        case "'" where quote: return "\\'"
        default: break
        }
        let v = scalar.value
        if v < 0x20 || (0x7F...0x9F).contains(v) { return "\\x" + hex(v, digits: 2) }
        // Format characters (bidirectional overrides, zero-width ones), line and paragraph
        // separators, and unassigned or private-use code points: shown as code points.
        switch scalar.properties.generalCategory {
        case .format, .lineSeparator, .paragraphSeparator, .unassigned, .privateUse, .surrogate:
            return "\\u{" + hex(v, digits: 4) + "}"
        default:
            return String(scalar)
        }
    }

    private static func hex(_ v: UInt32, digits: Int) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: max(0, digits - s.count)) + s
    }
}
