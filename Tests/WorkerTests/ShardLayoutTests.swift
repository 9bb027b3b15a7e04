import Testing
@testable import Worker

@Suite("Tensor-parallel layout and step plans")
struct ShardLayoutTests {
    static let smol = LlamaConfig(
        layerCount: 30, hiddenSize: 576, intermediateSize: 1536, headCount: 9, kvHeadCount: 3,
        ropeFrequencyBase: 100000, rmsNormEpsilon: 1e-5, contextLength: 8192, vocabularySize: 49152)

    @Test("SmolLM2's 9 heads over 3 KV heads and 48 FFN blocks split on 1-4 ranks")
    func smolLM2Splits() throws {
        func layouts(_ p: Int) throws -> [ShardLayout] { try (0..<p).map { try ShardLayout(config: Self.smol, rank: $0, size: p) } }
        let one = try layouts(1)[0]
        #expect(one.queryHeads == 0..<9 && one.kvHeads == 0..<3 && one.ffn == 0..<1536)
        let two = try layouts(2)
        #expect(two.map(\.queryHeads) == [0..<5, 5..<9])
        #expect(two.map(\.kvHeads) == [0..<2, 1..<3])  // KV head 1 serves heads 3-5: on both ranks
        #expect(two.map(\.ffn) == [0..<768, 768..<1536])
        let four = try layouts(4)
        #expect(four.map(\.queryHeads) == [0..<3, 3..<5, 5..<7, 7..<9])
        #expect(four.map(\.kvHeads) == [0..<1, 1..<2, 1..<3, 2..<3])
        #expect(four.map(\.ffn) == [0..<384, 384..<768, 768..<1152, 1152..<1536])
        for p in 1...4 {
            let l = try layouts(p)
            // Every head and FFN feature on exactly one rank; FFN cuts on 32-value blocks.
            #expect(l.map(\.localHeadCount).reduce(0, +) == 9)
            #expect(l.map(\.localFFN).reduce(0, +) == 1536)
            #expect(l.allSatisfy { $0.ffn.lowerBound % 32 == 0 })
            for layout in l {
                for h in 0..<layout.localHeadCount {
                    let kv = layout.localKVHead(forLocalHead: h)
                    #expect(kv >= 0 && kv < layout.localKVHeadCount)
                    #expect(layout.kvHeads.lowerBound + kv == (layout.queryHeads.lowerBound + h) / 3)
                }
            }
        }
        #expect(throws: ShardError.self) { try ShardLayout(config: Self.smol, rank: 0, size: 10) }
    }

    @Test("step plans survive encoding, short and long")
    func planRoundTrip() throws {
        var mask = TreeMask(parents: [-1, 0, 0, 1, 2])
        let ops: [KVCache.Operation] = [.reset, .commit(count: 3), .commitKept([0, 2]), .truncate(to: 1)]
        let small = StepPlan(kind: .forward, cacheOps: ops.enumerated().map { .init(sequence: $0.offset % 2, operation: $0.element) },
                             tokens: [5, 6, 7, 8, 9], positions: [3, 4, 4, 5, 5], mask: mask)
        #expect(try StepPlan.decode(small.encode()) == small)
        let batched = StepPlan(kind: .forward, tokens: [5, 6, 7, 8, 9], positions: [3, 4, 4, 9, 10], mask: mask,
                               segments: [StepSegment(sequence: 2, count: 3), StepSegment(sequence: 0, count: 2)])
        #expect(try StepPlan.decode(batched.encode()) == batched)
        let n = 300
        mask = TreeMask.causal(n)
        let long = StepPlan(kind: .forward, tokens: (0..<n).map { Int32($0) }, positions: (0..<n).map { Int32($0 + 7) }, mask: mask)
        #expect(long.encode().count > StepPlan.inlineWords)
        #expect(try StepPlan.decode(long.encode()) == long)
        #expect(try StepPlan.decode(StepPlan(kind: .shutdown).encode()).kind == .shutdown)
        // An LM-head step carries hidden rows, bit for bit (negative zero, subnormals, infinities).
        let hidden: [Float] = (0..<(2 * 576)).map { Float($0) * -0.37 } + [-0.0, .leastNonzeroMagnitude, .infinity, -.infinity]
        let logits = StepPlan(kind: .logits, hidden: hidden)
        #expect(logits.encode().count > StepPlan.inlineWords)
        let decoded = try StepPlan.decode(logits.encode())
        #expect(decoded.kind == .logits && decoded.hidden.map(\.bitPattern) == hidden.map(\.bitPattern))
        var corrupt = small.encode()
        corrupt[6] += 1
        #expect(throws: PlanError.self) { try StepPlan.decode(corrupt) }
    }
}
