import Foundation
import Worker

/// Why a tree of Medusa choices was refused.
public enum TreeError: Error, CustomStringConvertible, Sendable, Equatable {
    case unreadable(path: String, reason: String)
    case notAList(String)
    case emptyPath(index: Int)
    case negativeRank(path: [Int])
    case rankTooLarge(path: [Int], maximum: Int)
    case duplicate([Int])
    case missingPrefix(path: [Int], prefix: [Int])
    case tooDeep(path: [Int], heads: Int)
    case tooLarge(nodes: Int, maximum: Int)
    case unknownPreset(String)

    public var description: String {
        switch self {
        case .unreadable(let path, let reason): "cannot read the tree file \(path): \(reason)"
        case .notAList(let what):
            "a tree is a JSON list of paths of top-k ranks such as [[0],[0,0],[1]]: \(what)"
        case .emptyPath(let i): "tree path #\(i) is empty (every path names at least one rank)"
        case .negativeRank(let p): "tree path \(p) has a negative rank"
        case .rankTooLarge(let p, let max): "tree path \(p) uses a rank above \(max - 1) (ranks index a head's top-\(max))"
        case .duplicate(let p): "tree path \(p) appears twice"
        case .missingPrefix(let p, let prefix): "tree path \(p) needs its prefix \(prefix), which is not in the tree"
        case .tooDeep(let p, let heads): "tree path \(p) is \(p.count) deep but there are only \(heads) heads"
        case .tooLarge(let n, let max): "the tree has \(n) nodes with its root; at most \(max) fit in one step"
        case .unknownPreset(let name):
            "unknown tree '\(name)': give a JSON file of medusa_choices or one of \(CandidateTree.presetNames.joined(separator: ", "))"
        }
    }
}

/// A Medusa candidate tree: the root (the base model's own next token) and one node per path of
/// top-k ranks in `choices` (FasterDecoding's `medusa_choices`: `[1, 0]` is head 2's top-1 guess
/// placed after head 1's second guess).
///
/// Nodes are ordered by depth, then by path (as FasterDecoding orders them), so every parent comes
/// before its children and every prefix of the node list is itself a tree.
public struct CandidateTree: Sendable, Equatable {
    /// Ranks on the way to each node; the root's path is empty.
    public let paths: [[Int]]
    /// Each node's parent node; -1 for the root.
    public let parents: [Int]
    /// 0 for the root; node i is guessed by head depths[i] (1-based).
    public let depths: [Int]
    /// Children of each node in rank order.
    public let children: [[Int]]
    /// Each node sees itself and its ancestors.
    public let mask: TreeMask
    /// How many of each head's top guesses the tree uses: topK[d - 1] for head d.
    public let topK: [Int]
    /// Node lists from the root to each leaf, in node order of the leaves.
    public let leafPaths: [[Int]]

    /// The highest rank a path may use plus one: a head's top-k list is at most this long.
    public static let maxTopK = 64
    /// The most nodes (with the root) a tree may have.
    public static let maxNodes = 512

    /// Builds the tree from `choices`, checking that every path is non-empty, has non-negative
    /// ranks below `maxTopK`, appears once, and has its prefixes in the tree.
    public init(choices: [[Int]]) throws(TreeError) {
        var seen = Set<[Int]>()
        for (i, path) in choices.enumerated() {
            guard !path.isEmpty else { throw .emptyPath(index: i) }
            guard path.allSatisfy({ $0 >= 0 }) else { throw .negativeRank(path: path) }
            guard path.allSatisfy({ $0 < Self.maxTopK }) else { throw .rankTooLarge(path: path, maximum: Self.maxTopK) }
            guard seen.insert(path).inserted else { throw .duplicate(path) }
        }
        for path in choices where path.count > 1 {
            let prefix = Array(path.dropLast())
            guard seen.contains(prefix) else { throw .missingPrefix(path: path, prefix: prefix) }
        }
        guard choices.count + 1 <= Self.maxNodes else { throw .tooLarge(nodes: choices.count + 1, maximum: Self.maxNodes) }
        let sorted = choices.sorted { $0.count != $1.count ? $0.count < $1.count : $0.lexicographicallyPrecedes($1) }
        self.init(sortedPaths: [[]] + sorted)
    }

    /// `paths` sorted by depth then path, starting with the root's empty path; every prefix present.
    private init(sortedPaths: [[Int]]) {
        paths = sortedPaths
        let index = Dictionary(uniqueKeysWithValues: sortedPaths.enumerated().map { ($1, $0) })
        parents = sortedPaths.map { $0.isEmpty ? -1 : index[Array($0.dropLast())]! }
        depths = sortedPaths.map(\.count)
        var children = [[Int]](repeating: [], count: sortedPaths.count)
        for (i, p) in parents.enumerated() where p >= 0 { children[p].append(i) }
        self.children = children.map { $0.sorted { sortedPaths[$0].last! < sortedPaths[$1].last! } }
        mask = TreeMask(parents: parents)
        let depth = depths.max() ?? 0
        var topK = [Int](repeating: 0, count: depth)
        for path in sortedPaths where !path.isEmpty { topK[path.count - 1] = max(topK[path.count - 1], path.last! + 1) }
        self.topK = topK
        var leafPaths: [[Int]] = []
        for leaf in sortedPaths.indices where children[leaf].isEmpty {
            var nodes: [Int] = []
            var n = leaf
            while n >= 0 { nodes.append(n); n = parents[n] }
            leafPaths.append(nodes.reversed())
        }
        self.leafPaths = leafPaths
    }

    /// Nodes, counting the root.
    public var count: Int { paths.count }
    /// The deepest node's depth: how many heads the tree uses.
    public var depth: Int { topK.count }

    /// The tree's choices in `medusa_choices` form (without the root), in node order.
    public var choices: [[Int]] { Array(paths.dropFirst()) }

    /// The first `nodes` nodes (at least the root): still a tree, since parents come first. Used
    /// when the context has room for fewer tokens than the whole tree.
    public func prefix(_ nodes: Int) -> CandidateTree {
        guard nodes < count else { return self }
        return CandidateTree(sortedPaths: Array(paths.prefix(max(1, nodes))))
    }

    /// Checks the tree against the number of heads that fill it.
    public func check(headCount: Int) throws(TreeError) {
        if let deep = paths.first(where: { $0.count > headCount }) { throw .tooDeep(path: deep, heads: headCount) }
    }

    /// Parses FasterDecoding's `medusa_choices` JSON: a list of lists of non-negative integers.
    public init(json data: Data) throws(TreeError) {
        let root: JSONValue
        do { root = try JSONValue.parse(data, path: "tree", what: "the tree") } catch {
            throw .notAList("not valid JSON (\(error.description))")
        }
        guard let list = root.arrayValue else { throw .notAList("the top level is \(root.typeName), not a list") }
        var choices: [[Int]] = []
        for (i, item) in list.enumerated() {
            guard let path = item.arrayValue else { throw .notAList("item #\(i) is \(item.typeName), not a list") }
            var ranks: [Int] = []
            for r in path {
                guard let rank = r.integerValue else { throw .notAList("item #\(i) holds \(r.typeName), not an integer rank") }
                ranks.append(rank)
            }
            choices.append(ranks)
        }
        try self.init(choices: choices)
    }

    /// `--tree` argument: a preset name or a JSON file. `headCount` sizes the presets (a chain is
    /// as deep as the heads; a sparse preset drops nodes deeper than the heads).
    public init(argument: String, headCount: Int) throws(TreeError) {
        if let preset = Self.preset(argument, headCount: headCount) {
            self = preset
            return
        }
        guard FileManager.default.fileExists(atPath: argument) else { throw .unknownPreset(argument) }
        guard let data = FileManager.default.contents(atPath: argument) else {
            throw .unreadable(path: argument, reason: "permission denied or not a regular file")
        }
        try self.init(json: data)
        try check(headCount: headCount)
    }

    public static let presetNames = ["default", "chain", "mc_sim_7b_63"]

    /// A built-in tree for `headCount` heads, or nil for an unknown name.
    public static func preset(_ name: String, headCount: Int) -> CandidateTree? {
        let choices: [[Int]]
        switch name {
        case "chain": choices = (1...max(1, headCount)).map { [Int](repeating: 0, count: $0) }
        case "default": choices = defaultChoices
        case "mc_sim_7b_63": choices = mcSim7b63
        default: return nil
        }
        // Presets are valid by construction once nodes deeper than the heads are dropped.
        return try? CandidateTree(choices: choices.filter { $0.count <= headCount })
    }

    /// A small sparse tree for CPUs, where each extra node costs a visible share of a step: the
    /// top-1 chain to depth 4 plus the runner-up guesses where they are most often right.
    static let defaultChoices: [[Int]] = [
        [0], [1], [0, 0], [2], [0, 1], [1, 0], [0, 0, 0], [0, 0, 0, 0], [0, 0, 1],
    ]

    /// FasterDecoding's `mc_sim_7b_63` (medusa/model/medusa_choices.py): 63 nodes over 4 heads,
    /// tuned for Vicuna-7B on a GPU.
    static let mcSim7b63: [[Int]] = [
        [0], [0, 0], [1], [0, 1], [2], [0, 0, 0], [1, 0], [0, 2], [3], [0, 3], [4], [0, 4], [2, 0], [0, 5],
        [0, 0, 1], [5], [0, 6], [6], [0, 7], [0, 1, 0], [1, 1], [7], [0, 8], [0, 0, 2], [3, 0], [0, 9], [8],
        [9], [1, 0, 0], [0, 2, 0], [1, 2], [0, 0, 3], [4, 0], [2, 1], [0, 0, 4], [0, 0, 5], [0, 0, 0, 0],
        [0, 1, 1], [0, 0, 6], [0, 3, 0], [5, 0], [1, 3], [0, 0, 7], [0, 0, 8], [0, 0, 9], [6, 0], [0, 4, 0],
        [1, 4], [7, 0], [0, 1, 2], [2, 0, 0], [3, 1], [2, 2], [8, 0], [0, 5, 0], [1, 5], [1, 0, 1], [0, 2, 1],
        [9, 0], [0, 6, 0], [0, 0, 0, 1], [1, 6], [0, 7, 0],
    ]
}
