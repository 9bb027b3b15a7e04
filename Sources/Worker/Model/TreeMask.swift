/// Which of the n tokens of a step each token may attend to, besides the committed cache:
/// row i, column j set means token i sees token j. Bit-packed, 64 columns per word.
///
/// Prefill uses the causal mask; a Medusa verify step uses the candidate tree's ancestor mask.
public struct TreeMask: Sendable, Equatable {
    public let count: Int
    public let wordsPerRow: Int
    public private(set) var words: [UInt64]

    /// A mask with nothing set.
    public init(count: Int) {
        precondition(count >= 0)
        self.count = count
        wordsPerRow = (count + 63) / 64
        words = [UInt64](repeating: 0, count: count * wordsPerRow)
    }

    /// Token i sees tokens 0...i.
    public static func causal(_ count: Int) -> TreeMask {
        var m = TreeMask(count: count)
        for i in 0..<count {
            for j in 0...i { m[i, j] = true }
        }
        return m
    }

    /// Each token sees itself and its ancestors; `parents[i]` is the index of token i's parent
    /// among the n tokens (smaller than i), or -1 for a root (attached to the committed cache).
    public init(parents: [Int]) {
        self.init(count: parents.count)
        for i in 0..<parents.count {
            precondition(parents[i] < i, "a parent must come before its child")
            self[i, i] = true
            var p = parents[i]
            while p >= 0 {
                self[i, p] = true
                p = parents[p]
            }
        }
    }

    /// Rebuilds a mask from its packed words (for example after a broadcast).
    public init(count: Int, words: [UInt64]) {
        precondition(words.count == count * ((count + 63) / 64))
        self.count = count
        wordsPerRow = (count + 63) / 64
        self.words = words
    }

    public subscript(row: Int, column: Int) -> Bool {
        get { words[row * wordsPerRow + column / 64] & (1 << UInt64(column % 64)) != 0 }
        set {
            let i = row * wordsPerRow + column / 64
            if newValue { words[i] |= 1 << UInt64(column % 64) } else { words[i] &= ~(1 << UInt64(column % 64)) }
        }
    }
}
