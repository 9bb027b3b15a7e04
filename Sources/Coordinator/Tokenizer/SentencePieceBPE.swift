/// SentencePiece BPE (`tokenizer.ggml.model = llama`), as llama.cpp's `llm_tokenizer_spm`: the
/// text (spaces already written as U+2581 "▁") starts as one symbol per character; the adjacent
/// pair whose concatenation is a token with the highest score (the leftmost among equals) is
/// merged until no pair forms a token. A final symbol that is not a token (only a single
/// character can be one) is written as byte tokens `<0xXX>`.
struct SentencePieceBPE: Sendable {
    private let vocabulary: Vocabulary
    /// The token for each byte: `<0xXX>`, else the one-byte text, else the unknown token.
    private let byteTokens: [Int32?]

    init(vocabulary: Vocabulary) {
        self.vocabulary = vocabulary
        byteTokens = (0..<256).map { b in
            let hex = Array("<0x\(b < 16 ? "0" : "")\(String(b, radix: 16, uppercase: true))>".utf8)
            // llama.cpp throws when neither exists; the unknown token is the gentler answer.
            return vocabulary.idOfText.value(for: hex) ?? vocabulary.idOfText.value(for: [UInt8(b)]) ?? vocabulary.unknown
        }
    }

    private struct Candidate: Comparable {
        var score: Float
        var left: Int32
        var right: Int32
        /// Bytes of the merged text when the candidate was made.
        var size: Int32
        /// The best candidate is the smallest: highest score, then leftmost.
        static func < (a: Candidate, b: Candidate) -> Bool {
            a.score > b.score || (a.score == b.score && a.left < b.left)
        }
    }

    private struct Symbol {
        var start: Int32
        var length: Int32  // 0 once merged into its left neighbour
        var prev: Int32
        var next: Int32
    }

    /// Appends the tokens of `text`, which is already escaped (spaces as ▁, prefix space added).
    func encode(_ text: UnsafeBufferPointer<UInt8>, into out: inout [Int32]) {
        guard !text.isEmpty else { return }
        var symbols: [Symbol] = []
        symbols.reserveCapacity(text.count)
        var offset = 0
        while offset < text.count {
            let length = min(UTF8Text.sequenceLength(leadByte: text[offset]), text.count - offset)
            let index = Int32(symbols.count)
            offset += length
            symbols.append(Symbol(start: Int32(offset - length), length: Int32(length),
                                  prev: index - 1, next: offset == text.count ? -1 : index + 1))
        }

        func token(_ start: Int32, _ length: Int32) -> Int32? {
            vocabulary.idOfText.value(for: UnsafeBufferPointer(rebasing: text[Int(start)..<Int(start + length)]))
        }
        var queue = MinHeap<Candidate>()
        queue.reserveCapacity(symbols.count)
        func consider(_ left: Int32, _ right: Int32) {
            guard left >= 0, right >= 0 else { return }
            let size = symbols[Int(left)].length + symbols[Int(right)].length
            guard let id = token(symbols[Int(left)].start, size) else { return }
            queue.push(Candidate(score: vocabulary.scores[Int(id)], left: left, right: right, size: size))
        }
        for i in 1..<symbols.count { consider(Int32(i - 1), Int32(i)) }

        while let c = queue.pop() {
            let left = Int(c.left), right = Int(c.right)
            guard symbols[left].length > 0, symbols[right].length > 0,
                  symbols[left].length + symbols[right].length == c.size
            else { continue }
            symbols[left].length += symbols[right].length
            symbols[right].length = 0
            let after = symbols[right].next
            symbols[left].next = after
            if after >= 0 { symbols[Int(after)].prev = c.left }
            consider(symbols[left].prev, c.left)
            consider(c.left, after)
        }

        var i: Int32 = 0
        while i >= 0 {
            let s = symbols[Int(i)]
            if let id = token(s.start, s.length) {
                out.append(id)
            } else {
                for k in Int(s.start)..<Int(s.start + s.length) {
                    if let id = byteTokens[Int(text[k])] { out.append(id) }
                }
            }
            i = s.next
        }
    }
}
