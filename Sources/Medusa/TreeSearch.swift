/// Sparse candidate trees built from measured head accuracies (DESIGN.md section 5).
///
/// A node at depth d reached through ranks r1 ... rd is accepted when every guess on its path is
/// right; with `accuracy[d - 1][r]` the measured chance that head d's rank-r guess is the true
/// token, and the heads taken as independent, that is the product along the path. A tree's expected
/// tokens per verify step is 1 (the base model's own token) plus the sum of its nodes' products.
/// The greedy search adds, one at a time, the node with the largest product whose parent is in the
/// tree; the trees it passes through are the best of each size under this model.
public enum TreeSearch {
    public struct Step: Sendable, Equatable {
        /// The tree after this many additions (nodes including the root: choices.count + 1).
        public var choices: [[Int]]
        /// 1 + the sum of the nodes' path products.
        public var expectedTokens: Double
    }

    /// The greedy trees of 1 ... maxNodes nodes (the root alone first). `accuracy[d][r]`: head
    /// d + 1's rank-r accuracy; depth is limited to `accuracy.count`, ranks to its rows' lengths
    /// and `CandidateTree.maxTopK`.
    public static func greedy(accuracy: [[Double]], maxNodes: Int) -> [Step] {
        precondition(maxNodes >= 1)
        var steps = [Step(choices: [], expectedTokens: 1)]
        // Frontier: children of tree nodes not yet in the tree, with their path products.
        var frontier: [(path: [Int], value: Double)] = []
        func addChildren(of path: [Int], value: Double) {
            guard path.count < accuracy.count else { return }
            let row = accuracy[path.count]
            for r in 0..<min(row.count, CandidateTree.maxTopK) where row[r] > 0 {
                frontier.append((path + [r], value * row[r]))
            }
        }
        addChildren(of: [], value: 1)
        var choices: [[Int]] = []
        var expected = 1.0
        while steps.count < maxNodes, !frontier.isEmpty {
            // The largest product; ties to the earlier (shallower, lower-ranked) path.
            var best = 0
            for i in frontier.indices.dropFirst() where frontier[i].value > frontier[best].value { best = i }
            let node = frontier.remove(at: best)
            choices.append(node.path)
            expected += node.value
            steps.append(Step(choices: choices, expectedTokens: expected))
            addChildren(of: node.path, value: node.value)
        }
        return steps
    }
}
