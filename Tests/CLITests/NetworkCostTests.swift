import Foundation
import TestSupport
import Testing

/// `bench` on a group: what rank 0's collectives carried per decode step and per verify step, and
/// the allreduce timing mode, checked against what the model's shape implies.
@Suite(.serialized, .timeLimit(.minutes(5))) struct NetworkCostTests {
    /// TensorParallelTests.config: 2 layers, hidden 192, vocabulary 300.
    static let layers = 2, hidden = 192, vocabulary = 300

    static func prompts() throws -> String {
        let path = try makeTemporaryDirectory() + "/prompts.jsonl"
        try Data("{\"prompt\": \"Hello ranks\"}\n{\"prompt\": \"Another one\"}\n".utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    @Test("bench on 2 ranks counts 2 allreduces per layer, their bytes, the plans and the logit gather")
    func decodeNetwork() throws {
        let model = try TensorParallelTests.model(.q8_0)
        let r = try MPIRunner.run(np: 2, arguments: ["bench", "--model", model, "--prompts", try Self.prompts(), "--limit", "2",
                                                     "--max-tokens", "6", "--ignore-eos", "--runs", "2", "--threads", "1", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try r.json()
        let net = try #require(json["decode_network"] as? [String: Any], "\(json)")
        // 2 prompts x 2 runs x 5 decode steps (the first token comes from the prefill).
        #expect(net["steps"] as? Int == 20 && net["tokens"] as? Int == 20, "\(net)")
        #expect(net["allreduce_calls_per_step"] as? Double == Double(2 * Self.layers))
        // The forward's plan and the LM head's plan; one gather of the logit slices.
        #expect(net["broadcast_calls_per_step"] as? Double == 2)
        #expect(net["gather_calls_per_step"] as? Double == 1)
        let sent = try #require(net["sent_bytes_per_token"] as? [String: Double])
        let received = try #require(net["received_bytes_per_token"] as? [String: Double])
        #expect(sent["allreduce"] == Double(2 * Self.layers * Self.hidden * 4))
        #expect(received["allreduce"] == sent["allreduce"])
        // Rank 0 receives rank 1's half of the vocabulary's logits and sends nothing in a gather.
        #expect(received["gather"] == Double((Self.vocabulary + 1) / 2 * 4))
        #expect(sent["gather"] == 0)
        #expect((sent["broadcast"] ?? 0) > Double(Self.hidden * 4), "the LM head's plan carries the hidden row")
        #expect(received["broadcast"] == 0)
        #expect((net["allreduce_ms_per_step"] as? Double ?? 0) > 0)
        #expect(net["interface_bytes_sent_per_token"] != nil, "\(net)")

        // One process sends nothing: no network section.
        let one = try BinaryRunner.run(["bench", "--model", model, "--prompts", try Self.prompts(), "--limit", "1",
                                        "--max-tokens", "4", "--runs", "1", "--json"])
        #expect(one.status == 0, "\(one.stderr)")
        #expect(try one.json()["decode_network"] == nil)
    }

    @Test("verify-curve on 2 ranks reports each step's allreduces and bytes; --allreduce-sizes times the collective alone")
    func verifyCurveAndAllreduce() throws {
        let model = try TensorParallelTests.model(.q8_0)
        let r = try MPIRunner.run(np: 2, arguments: ["bench", "--model", model, "--verify-curve", "--max-nodes", "3",
                                                     "--context", "8", "--runs", "2", "--threads", "1", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let curve = try r.json()["curve"] as? [[String: Any]] ?? []
        #expect(curve.map { $0["n"] as? Int } == [1, 2, 3])
        for point in curve {
            let n = try #require(point["n"] as? Int)
            #expect(point["allreduce_calls"] as? Int == 2 * Self.layers, "\(point)")
            // Rank 0 sends its n rows of every allreduce plus two plans, each one fixed first message
            // of 4096 bytes (the LM head's n hidden rows fit in it); it receives the sums and rank 1's
            // logits for the n rows.
            let allreduce = 2 * Self.layers * n * Self.hidden * 4
            #expect(point["sent_bytes"] as? Int == allreduce + 2 * 4096, "\(point)")
            #expect(point["received_bytes"] as? Int == allreduce + n * ((Self.vocabulary + 1) / 2) * 4, "\(point)")
        }

        let a = try MPIRunner.run(np: 2, arguments: ["bench", "--allreduce-sizes", "16,4096", "--runs", "1", "--json"])
        #expect(a.status == 0, "\(a.stderr)")
        let points = try #require(try JSONSerialization.jsonObject(with: Data(a.stdout.utf8)) as? [[String: Any]])
        #expect(points.map { $0["floats"] as? Int } == [16, 4096])
        #expect(points.allSatisfy { ($0["seconds"] as? Double ?? 0) > 0 })
        let bad = try MPIRunner.run(np: 2, arguments: ["bench", "--allreduce-sizes", "16,x"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("--allreduce-sizes must be positive float counts"), "\(bad.stderr)")
    }
}
