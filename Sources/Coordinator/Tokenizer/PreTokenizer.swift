/// Splits text into words before byte-level BPE, as llama.cpp's `unicode_regex_split` does for the
/// regex list of each `tokenizer.ggml.pre` type.
///
/// Each pre-tokenizer is a list of stages. The first stage sees the whole text as one piece; each
/// later stage splits every piece the previous one produced, and never looks across a piece
/// boundary (llama.cpp runs each regex inside each earlier piece, lookaheads included).
/// Stages that llama.cpp runs through `std::regex` on its "collapsed" text are simple character
/// class patterns; for those, a match and the text between two matches both become pieces.
struct PreTokenizer: Sendable {
    /// The regex families this file implements (llama.cpp's `LLAMA_VOCAB_PRE_TYPE_*`).
    enum Kind: String, Sendable, CaseIterable {
        /// `[\p{P}\$\+<=>\^~\|]+`, then GPT-2's regex, then `\p{N}+`, then `[0-9][0-9][0-9]`.
        case `default`
        /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)`
        case gpt2
        /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
        case llama3
        /// `\p{N}` (every digit on its own), then GPT-2's regex: StarCoder, SmolLM, Command-R, ...
        case starcoder
    }

    /// How a `tokenizer.ggml.pre` name configures the BPE tokenizer (from llama-vocab.cpp).
    struct Configuration: Sendable, Equatable {
        var kind: Kind
        /// Look a whole word up in the vocabulary before merging (llama.cpp's `ignore_merges`).
        var ignoreMerges = false
        /// Default for `add_bos_token` when the file does not say.
        var addBOS = false
    }

    /// The `tokenizer.ggml.pre` names supported, each mapped as llama.cpp maps it.
    static let configurations: [String: Configuration] = {
        var table: [String: Configuration] = ["default": Configuration(kind: .default)]
        for name in ["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano"] {
            table[name] = Configuration(kind: .llama3, ignoreMerges: true, addBOS: true)
        }
        for name in ["dbrx", "smaug-bpe"] {
            table[name] = Configuration(kind: .llama3)
        }
        for name in ["gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
                     "mellum", "modern-bert", "mpt", "olmo", "jais", "exaone4", "trillion", "granite-docling"] {
            table[name] = Configuration(kind: .gpt2)
        }
        for name in ["starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2"] {
            table[name] = Configuration(kind: .starcoder)
        }
        return table
    }()

    let kind: Kind

    /// Codepoint ranges of the words of `cps`, in order, covering all of it.
    func split(_ cps: [UInt32]) -> [Range<Int>] {
        guard !cps.isEmpty else { return [] }
        let flags = cps.map(CodepointFlags.of)
        var splitter = Splitter(cps: cps, flags: flags)
        var pieces = [0..<cps.count]
        switch kind {
        case .default:
            pieces = splitter.matches(pieces) { s, i in
                s.run(from: i) { cp, f in f.contains(.punctuation) || Self.defaultExtraPunctuation(cp) }
            }
            pieces = splitter.apply(pieces, Splitter.gpt2)
            pieces = splitter.matches(pieces) { s, i in s.run(from: i) { _, f in f.contains(.number) } }
            pieces = splitter.matches(pieces) { s, i in
                i + 3 <= s.end && (0..<3).allSatisfy { (48...57).contains(s.cps[i + $0]) } ? 3 : 0
            }
        case .gpt2:
            pieces = splitter.apply(pieces, Splitter.gpt2)
        case .llama3:
            pieces = splitter.apply(pieces, Splitter.llama3)
        case .starcoder:
            pieces = splitter.matches(pieces) { s, i in s.flags[i].contains(.number) ? 1 : 0 }
            pieces = splitter.apply(pieces, Splitter.gpt2)
        }
        return pieces
    }

    /// The ASCII symbols `$+<=>^~|` that the default pre-tokenizer groups with punctuation.
    private static func defaultExtraPunctuation(_ cp: UInt32) -> Bool {
        switch cp {
        case 0x24, 0x2B, 0x3C, 0x3D, 0x3E, 0x5E, 0x7E, 0x7C: true
        default: false
        }
    }
}

/// One piece at a time: the piece's bounds, readers that return "nothing" outside them (as
/// llama.cpp's `_get_cpt`/`_get_flags` do), and the output being built.
private struct Splitter {
    let cps: [UInt32]
    let flags: [CodepointFlags]
    /// The current piece.
    var start = 0
    var end = 0
    /// Where the last emitted word ended.
    private var emitted = 0
    private var out: [Range<Int>] = []

    static let outOfRange = UInt32.max

    init(cps: [UInt32], flags: [CodepointFlags]) {
        self.cps = cps
        self.flags = flags
    }

    func cp(_ i: Int) -> UInt32 { i >= start && i < end ? cps[i] : Self.outOfRange }
    func flag(_ i: Int) -> CodepointFlags { i >= start && i < end ? flags[i] : [] }

    /// Ends the current word at `position`; returns its length (empty words are not emitted).
    @discardableResult
    mutating func emit(_ position: Int) -> Int {
        let length = position - emitted
        if length > 0 { out.append(emitted..<position) }
        emitted = position
        return length
    }

    /// Runs a hand-written splitter over every piece.
    mutating func apply(_ pieces: [Range<Int>], _ body: (inout Splitter) -> Void) -> [Range<Int>] {
        out = []
        out.reserveCapacity(pieces.count * 2)
        for piece in pieces {
            start = piece.lowerBound
            end = piece.upperBound
            emitted = start
            body(&self)
        }
        return out
    }

    /// Splits every piece at the matches of a pattern: `matchLength(self, i)` is the length of the
    /// match starting at `i` (0 for none). Scanning left to right and resuming after each match is
    /// what `std::regex_iterator` does for these character-class patterns.
    mutating func matches(_ pieces: [Range<Int>], _ matchLength: (Splitter, Int) -> Int) -> [Range<Int>] {
        apply(pieces) { s in
            var i = s.start
            while i < s.end {
                let n = matchLength(s, i)
                if n > 0 {
                    s.emit(i)
                    i += n
                    s.emit(i)
                } else {
                    i += 1
                }
            }
            s.emit(s.end)
        }
    }

    /// The length of the run of code points from `i` that satisfy `member`.
    func run(from i: Int, _ member: (UInt32, CodepointFlags) -> Bool) -> Int {
        var j = i
        while j < end, member(cps[j], flags[j]) { j += 1 }
        return j - i
    }

    /// GPT-2's word classes: 1 letters, 2 numbers, 3 anything else except white space, 0 none
    /// (white space, or outside the piece).
    private static func gpt2Class(_ f: CodepointFlags) -> Int {
        if f.contains(.letter) { return 1 }
        if f.contains(.number) { return 2 }
        if f.isDisjoint(with: .whitespace) && !f.isEmpty { return 3 }
        return 0
    }

    /// Length of an English contraction (`'s 't 're 've 'm 'll 'd`) starting at `pos`, or 0.
    /// `caseInsensitive` is llama3's `(?i:...)`; only ASCII letters lower-case to these letters.
    func contraction(at pos: Int, caseInsensitive: Bool) -> Int {
        guard cps[pos] == 0x27, pos + 1 < end else { return 0 }
        func lower(_ c: UInt32) -> UInt32 { caseInsensitive && (65...90).contains(c) ? c + 32 : c }
        let next = lower(cp(pos + 1))
        switch next {
        case 0x73, 0x74, 0x6D, 0x64: return 2  // s t m d
        default: break
        }
        guard pos + 2 < end else { return 0 }
        let nextNext = lower(cp(pos + 2))
        switch (next, nextNext) {
        case (0x72, 0x65), (0x76, 0x65), (0x6C, 0x6C): return 3  // re ve ll
        default: return 0
        }
    }

    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    static func gpt2(_ s: inout Splitter) {
        var pos = s.start
        while pos < s.end {
            let c = s.cps[pos]
            let f = s.flags[pos]
            let n = s.contraction(at: pos, caseInsensitive: false)
            if n > 0 {
                pos += s.emit(pos + n)
                continue
            }
            let space = c == 0x20
            var f2 = space ? s.flag(pos + 1) : f
            // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional space, then a run of one class.
            let wordClass = gpt2Class(f2)
            if wordClass != 0 {
                if space { pos += 1 }
                while gpt2Class(f2) == wordClass {
                    pos += 1
                    f2 = s.flag(pos)
                }
                s.emit(pos)
                continue
            }
            var spaces = 0
            while s.flag(pos + spaces).contains(.whitespace) { spaces += 1 }
            if spaces > 1 && s.cp(pos + spaces) != outOfRange {
                // `\s+(?!\S)`: leave the last space to start the next word.
                pos += spaces - 1
                s.emit(pos)
                continue
            }
            if spaces > 0 {
                pos += spaces
                s.emit(pos)
                continue
            }
            pos += 1
            s.emit(pos)
        }
    }

    /// Llama 3: `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
    /// ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
    static func llama3(_ s: inout Splitter) {
        func isNewline(_ c: UInt32) -> Bool { c == 0x0D || c == 0x0A }
        var pos = s.start
        while pos < s.end {
            let c = s.cps[pos]
            let f = s.flags[pos]
            let n = s.contraction(at: pos, caseInsensitive: true)
            if n > 0 {
                pos += s.emit(pos + n)
                continue
            }
            // `[^\r\n\p{L}\p{N}]?\p{L}+`
            if !isNewline(c) && !f.contains(.number) && (f.contains(.letter) || s.flag(pos + 1).contains(.letter)) {
                pos += 1
                while s.flag(pos).contains(.letter) { pos += 1 }
                s.emit(pos)
                continue
            }
            // `\p{N}{1,3}`
            if f.contains(.number) {
                var groupStart = pos
                while s.flag(pos).contains(.number) {
                    pos += 1
                    if pos - groupStart >= 3 {
                        s.emit(pos)
                        groupStart = pos
                    }
                }
                s.emit(pos)
                continue
            }
            // ` ?[^\s\p{L}\p{N}]+[\r\n]*` (llama.cpp tests the first code point's own flags for
            // "in range", so a space at the very end of a piece also lands here).
            var f2 = c == 0x20 ? s.flag(pos + 1) : f
            if f2.isDisjoint(with: [.whitespace, .letter, .number]) && !f.isEmpty {
                if c == 0x20 { pos += 1 }
                while f2.isDisjoint(with: [.whitespace, .letter, .number]) && !f2.isEmpty {
                    pos += 1
                    f2 = s.flag(pos)
                }
                while isNewline(s.cp(pos)) { pos += 1 }
                s.emit(pos)
                continue
            }
            var spaces = 0
            var afterLastNewline = 0
            while s.flag(pos + spaces).contains(.whitespace) {
                if isNewline(s.cp(pos + spaces)) { afterLastNewline = pos + spaces + 1 }
                spaces += 1
            }
            if afterLastNewline > 0 {
                // `\s*[\r\n]+`
                pos = afterLastNewline
                s.emit(pos)
                continue
            }
            if spaces > 1 && s.cp(pos + spaces) != outOfRange {
                pos += spaces - 1
                s.emit(pos)
                continue
            }
            if spaces > 0 {
                pos += spaces
                s.emit(pos)
                continue
            }
            pos += 1
            s.emit(pos)
        }
    }
}
