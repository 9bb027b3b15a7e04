/// A stretch of the input: raw text still to be tokenized, or a special token found in it.
enum Fragment: Equatable {
    case text(Range<Int>)
    case token(Int32)
}

/// Cuts special tokens out of the text before the tokenizer sees it, as llama.cpp's
/// `tokenizer_st_partition`: for each special token in turn, longest text first, every occurrence
/// in the still-raw fragments becomes a token fragment. Taking the tokens one at a time (rather
/// than scanning the text once) is what decides overlaps, so it is kept.
///
/// With `parseSpecial` false, control and unknown tokens are left as plain text, but user-defined
/// tokens are still cut out: llama.cpp (like Hugging Face tokenizers) always treats those as
/// added tokens.
enum SpecialTokenPartition {
    ///
    /// `plainText`: sorted, disjoint byte ranges read as with `parseSpecial` false whatever it is
    /// (a chat message's content inside its template's markup): a control or unknown token that
    /// overlaps one is not cut out there.
    static func partition(
        _ bytes: UnsafeBufferPointer<UInt8>, vocabulary: Vocabulary, parseSpecial: Bool, plainText: [Range<Int>] = []
    ) -> [Fragment] {
        guard !bytes.isEmpty else { return [] }
        var fragments: [Fragment] = [.text(0..<bytes.count)]
        for id in vocabulary.specialTokens {
            let attributes = vocabulary.attributes[Int(id)]
            let controlOrUnknown = !attributes.isDisjoint(with: [.control, .unknown])
            if !parseSpecial && controlOrUnknown { continue }
            let pattern = vocabulary.texts[Int(id)]
            let excluded = controlOrUnknown ? plainText : []
            func find(in range: Range<Int>) -> Int? {
                var range = range
                while let match = Self.find(pattern, in: bytes, range) {
                    let span = match..<(match + pattern.count)
                    guard excluded.contains(where: { $0.overlaps(span) }) else { return match }
                    range = (match + 1)..<range.upperBound
                }
                return nil
            }
            // Most tokens occur nowhere; only rebuild the list when one does.
            guard fragments.contains(where: { fragment in
                if case .text(let range) = fragment { return find(in: range) != nil }
                return false
            }) else { continue }

            var next: [Fragment] = []
            next.reserveCapacity(fragments.count + 2)
            for fragment in fragments {
                guard case .text(var range) = fragment else {
                    next.append(fragment)
                    continue
                }
                while let match = find(in: range) {
                    if match > range.lowerBound { next.append(.text(range.lowerBound..<match)) }
                    next.append(.token(id))
                    range = (match + pattern.count)..<range.upperBound
                }
                if !range.isEmpty { next.append(.text(range)) }
            }
            fragments = next
        }
        return fragments
    }

    /// The first offset in `range` where `pattern` occurs, or nil.
    static func find(_ pattern: [UInt8], in bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> Int? {
        guard let first = pattern.first, pattern.count <= range.count else { return nil }
        let last = range.upperBound - pattern.count
        var i = range.lowerBound
        while i <= last {
            if bytes[i] == first {
                var k = 1
                while k < pattern.count && bytes[i + k] == pattern[k] { k += 1 }
                if k == pattern.count { return i }
            }
            i += 1
        }
        return nil
    }
}
