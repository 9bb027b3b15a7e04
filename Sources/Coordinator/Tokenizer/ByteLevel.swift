/// GPT-2's byte-to-unicode mapping: byte-level BPE vocabularies write every byte as one printable
/// code point, so a token's text is a string of these stand-ins. Printable Latin-1 bytes
/// (`!`...`~`, `¡`...`¬`, `®`...`ÿ`) stand for themselves; the other 68 bytes (controls, space,
/// DEL, NBSP, soft hyphen) map in order to U+0100, U+0101, ... (so space is `Ġ`, newline `Ċ`).
enum ByteLevel {
    /// The stand-in code point of each byte.
    static let codepointOfByte: [UInt32] = {
        var map = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for byte in 0..<256 {
            if isPrintable(byte) {
                map[byte] = UInt32(byte)
            } else {
                map[byte] = next
                next += 1
            }
        }
        return map
    }()

    /// The UTF-8 bytes of each byte's stand-in.
    static let utf8OfByte: [[UInt8]] = codepointOfByte.map { cp in
        // Every stand-in is below U+0144, so the scalar always exists.
        Array(String(Character(Unicode.Scalar(cp) ?? "?")).utf8)
    }

    private static func isPrintable(_ byte: Int) -> Bool {
        (0x21...0x7E).contains(byte) || (0xA1...0xAC).contains(byte) || (0xAE...0xFF).contains(byte)
    }

    /// The byte a stand-in code point stands for, or nil when it is not one.
    static func byte(of cp: UInt32) -> UInt8? {
        if cp < 256 { return isPrintable(Int(cp)) ? UInt8(cp) : nil }
        guard cp < 256 + 68 else { return nil }
        return inverseHigh[Int(cp - 256)]
    }

    private static let inverseHigh: [UInt8] = {
        var out = [UInt8](repeating: 0, count: 68)
        for (byte, cp) in codepointOfByte.enumerated() where cp >= 256 { out[Int(cp - 256)] = UInt8(byte) }
        return out
    }()

    /// The raw bytes a byte-level token text stands for, or nil when the text holds a code point
    /// that is not a stand-in (such a token can never come out of byte-level BPE).
    static func decode<S: Sequence>(_ scalars: S) -> [UInt8]? where S.Element == Unicode.Scalar {
        var out: [UInt8] = []
        for scalar in scalars {
            guard let b = byte(of: scalar.value) else { return nil }
            out.append(b)
        }
        return out
    }
}
