/// Byte-level BPE (`tokenizer.ggml.model = gpt2`), as llama.cpp's `llm_tokenizer_bpe_session`:
/// each word starts as one symbol per byte; the adjacent pair with the lowest merge rank (the
/// leftmost among equals) is merged until no pair has a rank; each final symbol is looked up as a
/// token, or emitted byte by byte when it is not one.
///
/// llama.cpp compares strings at every step. Here every string that can ever be a symbol (the
/// 256 single bytes and both sides and the result of every merge) gets a small integer id once,
/// so a merge is a dictionary lookup on a pair of ids and no string is built while encoding.
/// Strings are kept as raw bytes (the vocabulary's GPT-2 stand-in code points decoded), so the
/// words never need re-encoding.
struct ByteLevelBPE: Sendable {
    let configuration: PreTokenizer.Configuration
    let preTokenizer: PreTokenizer
    /// (left piece id << 32 | right piece id) -> (rank << 32 | merged piece id).
    private let merges: [UInt64: UInt64]
    /// The vocabulary token of each piece id, or -1.
    private let tokenOfPiece: [Int32]
    /// Raw bytes of a whole word to its token, for `ignoreMerges`.
    private let tokenOfWord: ByteStringTable
    /// The tokens llama.cpp emits for a byte of a symbol that is not a token: one per UTF-8 byte
    /// of the byte's stand-in whose one-byte text is a token (in practice the printable ASCII).
    private let byteFallback: [[Int32]]

    init(vocabulary: Vocabulary, configuration: PreTokenizer.Configuration, mergeStrings: [String]) throws {
        self.configuration = configuration
        preTokenizer = PreTokenizer(kind: configuration.kind)

        var pieces = ByteStringTable(expectedCount: mergeStrings.count + 512)
        for b in 0..<256 {
            pieces.set(Int32(b), for: [UInt8(b)])
        }
        func intern(_ bytes: UnsafeBufferPointer<UInt8>) -> Int32 {
            let next = Int32(pieces.count)
            return pieces.valueInserting(bytes) { next }
        }

        // Scratch for one merge's raw bytes: the left side, then the right side, so that the
        // merged string is the two together.
        let longest = max(vocabulary.texts.lazy.map(\.count).max() ?? 0, mergeStrings.lazy.map(\.utf8.count).max() ?? 0)
        var raw = [UInt8](repeating: 0, count: longest)
        var merges: [UInt64: UInt64] = [:]
        merges.reserveCapacity(mergeStrings.count)
        for (rank, merge) in mergeStrings.enumerated() {
            // "left right": split at the first space after the first byte (as llama.cpp). A merge
            // whose sides are not byte-level text can never apply and is skipped.
            var merge = merge
            let parsed: (Int, Int)? = merge.withUTF8 { utf8 in
                guard utf8.count >= 3, let space = utf8[1...].firstIndex(of: 0x20) else { return nil }
                return raw.withUnsafeMutableBufferPointer { out in
                    guard let leftEnd = Self.decodeByteLevel(UnsafeBufferPointer(rebasing: utf8[..<space]), into: out, at: 0),
                          let end = Self.decodeByteLevel(UnsafeBufferPointer(rebasing: utf8[(space + 1)...]), into: out, at: leftEnd),
                          leftEnd > 0, end > leftEnd
                    else { return nil }
                    return (leftEnd, end)
                }
            }
            guard let (leftEnd, end) = parsed else { continue }
            raw.withUnsafeBufferPointer { buf in
                let left = intern(UnsafeBufferPointer(rebasing: buf[..<leftEnd]))
                let right = intern(UnsafeBufferPointer(rebasing: buf[leftEnd..<end]))
                let key = UInt64(UInt32(left)) << 32 | UInt64(UInt32(right))
                if merges[key] == nil {  // the first of duplicate merges wins (std::map::emplace)
                    merges[key] = UInt64(rank) << 32 | UInt64(UInt32(intern(UnsafeBufferPointer(rebasing: buf[..<end]))))
                }
            }
        }
        self.merges = merges

        var tokenOfWord = ByteStringTable(expectedCount: vocabulary.count)
        for (id, text) in vocabulary.texts.enumerated() {
            let end = text.withUnsafeBufferPointer { utf8 in
                raw.withUnsafeMutableBufferPointer { Self.decodeByteLevel(utf8, into: $0, at: 0) }
            }
            if let end {
                raw.withUnsafeBufferPointer { tokenOfWord.set(Int32(id), for: UnsafeBufferPointer(rebasing: $0[..<end])) }
            }
        }
        self.tokenOfWord = tokenOfWord
        tokenOfPiece = (0..<pieces.count).map { k in
            pieces.withKey(at: k) { tokenOfWord.value(for: $0) } ?? -1
        }
        byteFallback = (0..<256).map { b in
            ByteLevel.utf8OfByte[b].compactMap { vocabulary.idOfText.value(for: [$0]) }
        }
    }

    /// Decodes byte-level text (UTF-8 of GPT-2 stand-in code points) into `out` from `start`;
    /// returns the end offset, or nil when a code point is not a stand-in or `out` is too short.
    static func decodeByteLevel(_ utf8: UnsafeBufferPointer<UInt8>, into out: UnsafeMutableBufferPointer<UInt8>, at start: Int) -> Int? {
        var i = 0
        var o = start
        while i < utf8.count {
            let b0 = utf8[i]
            let cp: UInt32
            if b0 < 0x80 {
                cp = UInt32(b0)
                i += 1
            } else if b0 & 0xE0 == 0xC0, i + 1 < utf8.count {
                // Every stand-in is below U+0800: two-byte sequences are the only others to decode.
                cp = (UInt32(b0 & 0x1F) << 6) | UInt32(utf8[i + 1] & 0x3F)
                i += 2
            } else {
                return nil
            }
            guard o < out.count, let b = ByteLevel.byte(of: cp) else { return nil }
            out[o] = b
            o += 1
        }
        return o
    }

    /// A pending merge of the symbols at `left` and `right` (indices into the word's symbols).
    private struct Candidate: Comparable {
        /// rank << 32 | left: the lowest rank first, then the leftmost.
        var order: UInt64
        var right: Int32
        var leftPiece: Int32
        var rightPiece: Int32
        var merged: Int32
        var left: Int { Int(order & 0xFFFF_FFFF) }
        static func < (a: Candidate, b: Candidate) -> Bool { a.order < b.order }
        static func == (a: Candidate, b: Candidate) -> Bool { a.order == b.order && a.right == b.right }
    }

    private struct Symbol {
        var piece: Int32
        var start: Int32
        var length: Int32  // 0 once merged into its left neighbour
        var prev: Int32
        var next: Int32
    }

    /// Appends the tokens of one pre-tokenized word, `bytes[range]`.
    func encodeWord(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, into out: inout [Int32]) {
        guard !range.isEmpty else { return }
        if configuration.ignoreMerges,
           let token = tokenOfWord.value(for: UnsafeBufferPointer(rebasing: bytes[range])) {
            out.append(token)
            return
        }
        let n = range.count
        var symbols: [Symbol] = []
        symbols.reserveCapacity(n)
        for i in 0..<n {
            symbols.append(Symbol(
                piece: Int32(bytes[range.lowerBound + i]), start: Int32(range.lowerBound + i), length: 1,
                prev: Int32(i - 1), next: i + 1 < n ? Int32(i + 1) : -1))
        }
        var queue = MinHeap<Candidate>()
        queue.reserveCapacity(n)
        func consider(_ left: Int32, _ right: Int32) {
            guard left >= 0, right >= 0 else { return }
            let l = symbols[Int(left)].piece, r = symbols[Int(right)].piece
            guard let merge = merges[UInt64(UInt32(l)) << 32 | UInt64(UInt32(r))] else { return }
            queue.push(Candidate(
                order: (merge >> 32) << 32 | UInt64(UInt32(left)), right: right,
                leftPiece: l, rightPiece: r, merged: Int32(truncatingIfNeeded: merge & 0xFFFF_FFFF)))
        }
        for i in 1..<n { consider(Int32(i - 1), Int32(i)) }

        while let c = queue.pop() {
            let left = c.left, right = Int(c.right)
            // Skip merges made stale by an earlier one: a side was absorbed, or has grown.
            guard symbols[left].length > 0, symbols[right].length > 0,
                  symbols[left].piece == c.leftPiece, symbols[right].piece == c.rightPiece
            else { continue }
            symbols[left].piece = c.merged
            symbols[left].length += symbols[right].length
            symbols[right].length = 0
            let after = symbols[right].next
            symbols[left].next = after
            if after >= 0 { symbols[Int(after)].prev = Int32(left) }
            consider(symbols[left].prev, Int32(left))
            consider(Int32(left), after)
        }

        var i: Int32 = 0
        while i >= 0 {
            let s = symbols[Int(i)]
            let token = tokenOfPiece[Int(s.piece)]
            if token >= 0 {
                out.append(token)
            } else {
                for k in Int(s.start)..<Int(s.start + s.length) {
                    out.append(contentsOf: byteFallback[Int(bytes[k])])
                }
            }
            i = s.next
        }
    }

    /// Appends the tokens of a stretch of text with no special tokens in it.
    func encode(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, into out: inout [Int32]) {
        let text = UTF8Text(bytes, range)
        for word in preTokenizer.split(text.scalars) {
            encodeWord(bytes, text.byteRange(word), into: &out)
        }
    }
}
