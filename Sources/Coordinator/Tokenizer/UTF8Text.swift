/// Code points of UTF-8 text with the byte offset where each one starts, so that word boundaries
/// found on code points can be cut out of the bytes.
struct UTF8Text {
    /// The code points.
    private(set) var scalars: [UInt32] = []
    /// `offsets[i]` is the byte offset of code point i; `offsets[scalars.count]` is the end.
    private(set) var offsets: [Int] = []

    /// Decodes `bytes[range]`. The bytes come from a Swift `String` and so are valid UTF-8; a
    /// malformed lead or continuation byte would still decode to U+FFFD rather than trap.
    init(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) {
        scalars.reserveCapacity(range.count)
        offsets.reserveCapacity(range.count + 1)
        var i = range.lowerBound
        let end = range.upperBound
        while i < end {
            offsets.append(i)
            let b0 = UInt32(bytes[i])
            let length = UTF8Text.sequenceLength(leadByte: bytes[i])
            guard length > 1, i + length <= end else {
                scalars.append(length == 1 ? b0 : 0xFFFD)
                i += 1
                continue
            }
            var cp = b0 & (0x7F >> UInt32(length))
            for k in 1..<length { cp = (cp << 6) | (UInt32(bytes[i + k]) & 0x3F) }
            scalars.append(cp)
            i += length
        }
        offsets.append(end)
    }

    /// The length of the UTF-8 sequence a lead byte starts (1 for a stray continuation byte,
    /// as llama.cpp's `unicode_len_utf8`).
    static func sequenceLength(leadByte b: UInt8) -> Int {
        switch b >> 4 {
        case 0xC, 0xD: 2
        case 0xE: 3
        case 0xF: 4
        default: 1
        }
    }

    /// The byte range of code points `range`.
    func byteRange(_ range: Range<Int>) -> Range<Int> {
        offsets[range.lowerBound]..<offsets[range.upperBound]
    }
}
