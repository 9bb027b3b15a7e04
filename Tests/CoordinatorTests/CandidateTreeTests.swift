import Foundation
import Medusa
import Testing

@Suite struct CandidateTreeTests {
    @Test("the tree derived from choices: order, parents, depths, children, mask, leaf paths")
    func derivedStructure() throws {
        let tree = try CandidateTree(choices: [[1], [0, 0], [0], [1, 0], [0, 1], [0, 0, 0]])
        #expect(tree.paths == [[], [0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0]])
        #expect(tree.parents == [-1, 0, 0, 1, 1, 2, 3])
        #expect(tree.depths == [0, 1, 1, 2, 2, 2, 3])
        #expect(tree.children == [[1, 2], [3, 4], [5], [6], [], [], []])
        #expect(tree.topK == [2, 2, 1])
        #expect(tree.depth == 3)
        #expect(tree.leafPaths == [[0, 1, 4], [0, 2, 5], [0, 1, 3, 6]])
        for i in 0..<tree.count {
            var ancestors = Set<Int>()
            var n = i
            while n >= 0 { ancestors.insert(n); n = tree.parents[n] }
            for j in 0..<tree.count { #expect(tree.mask[i, j] == ancestors.contains(j), "mask[\(i), \(j)]") }
        }
        let small = tree.prefix(4)
        #expect(small.paths == [[], [0], [1], [0, 0]])
        #expect(small.topK == [2, 1])
        #expect(tree.prefix(100) == tree)
        #expect(tree.prefix(0).count == 1)
    }

    @Test("presets: a chain as deep as the heads, the CPU default, FasterDecoding's 63-node tree")
    func presets() throws {
        let chain = try #require(CandidateTree.preset("chain", headCount: 3))
        #expect(chain.paths == [[], [0], [0, 0], [0, 0, 0]])
        let sim = try #require(CandidateTree.preset("mc_sim_7b_63", headCount: 4))
        #expect(sim.count == 64 && sim.depth == 4 && sim.topK == [10, 10, 10, 2])
        #expect(try #require(CandidateTree.preset("mc_sim_7b_63", headCount: 2)).depth == 2)
        #expect(try #require(CandidateTree.preset("default", headCount: 4)).count == 10)
        #expect(CandidateTree.preset("nope", headCount: 4) == nil)
        #expect(throws: TreeError.unknownPreset("nope")) { try CandidateTree(argument: "nope", headCount: 4) }
    }

    @Test("medusa_choices JSON files, and what is wrong with bad ones")
    func parsing() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tree-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let file = dir.appendingPathComponent("choices.json")
        try Data("[[0], [0, 0], [1]]".utf8).write(to: file)
        #expect(try CandidateTree(argument: file.path, headCount: 2).choices == [[0], [1], [0, 0]])
        #expect(throws: TreeError.tooDeep(path: [0, 0], heads: 1)) { try CandidateTree(argument: file.path, headCount: 1) }

        let cases: [(String, String)] = [
            ("[[0], [0, 0", "not valid JSON"),
            ("{\"a\": 1}", "top level is an object"),
            ("[[0], 1]", "item #1 is an integer"),
            ("[[0], [\"x\"]]", "item #1 holds a string"),
            ("[[0], [0.5]]", "item #1 holds a number"),
            ("[[0], []]", "tree path #1 is empty"),
            ("[[0], [-1]]", "negative rank"),
            ("[[0], [64]]", "rank above 63"),
            ("[[0], [0]]", "appears twice"),
            ("[[0], [1, 0, 0]]", "needs its prefix [1, 0]"),
        ]
        for (text, message) in cases {
            do {
                _ = try CandidateTree(json: Data(text.utf8))
                Issue.record("\(text) was accepted")
            } catch {
                #expect(error.description.contains(message), "\(text): \(error.description)")
            }
        }
    }

    @Test("top-k selection: best first, ties to the lower index")
    func topK() {
        let values: [Float] = [1, 5, 3, 5, -2, 4, .nan]
        values.withUnsafeBufferPointer { v in
            #expect(topTokens(v, count: 3) == [1, 3, 5])
            #expect(topTokens(v, count: 1) == [1])
            #expect(topTokens(v, count: 10).count == 6)
        }
    }
}

@Suite struct TreeSearchTests {
    @Test("the greedy search adds the node with the largest path product whose parent is in the tree")
    func greedyOrder() throws {
        let accuracy: [[Double]] = [[0.6, 0.2, 0.1], [0.5, 0.1], [0.4]]
        let steps = TreeSearch.greedy(accuracy: accuracy, maxNodes: 6)
        #expect(steps.map(\.choices.count) == [0, 1, 2, 3, 4, 5])
        // 0.6, then [0,0] 0.3, [1] 0.2, [0,0,0] 0.12, [2] 0.1 (ties with [1,0] 0.1 go to the earlier)
        #expect(steps[5].choices == [[0], [0, 0], [1], [0, 0, 0], [2]])
        #expect(abs(steps[5].expectedTokens - (1 + 0.6 + 0.3 + 0.2 + 0.12 + 0.1)) < 1e-12)
        for step in steps { _ = try CandidateTree(choices: step.choices) }
        // No node whose accuracy is zero, and never deeper than the heads.
        let all = TreeSearch.greedy(accuracy: [[1, 0]], maxNodes: 10)
        #expect(all.last?.choices == [[0]])
    }
}
