import Foundation
import TestSupport
import Testing
import Worker

/// train-heads and eval-heads end to end on a tiny synthetic model: data, training, checkpoints,
/// the heads file, and using it.
@Suite struct TrainHeadsTests {
    @Test("train-heads writes heads that generate uses (same greedy output), resumes, and eval-heads scores them")
    func trainEvaluateUse() throws {
        let model = try CLITests.tinyModel()
        let dir = try makeTemporaryDirectory()
        let prompts = dir + "/prompts.jsonl"
        try Data(["Hello there", "Tell me a story", "Why is the sky blue?", "Count to ten", "Name a colour"]
            .map { "{\"prompt\": \"\($0)\"}" }.joined(separator: "\n").utf8).write(to: URL(fileURLWithPath: prompts))
        let out = dir + "/heads"
        let train = ["train-heads", "--model", model, "--out", out, "--prompts", prompts, "--max-tokens", "16",
                     "--heads", "3", "--batch", "16", "--epochs", "2", "--threads", "1"]
        let r = try BinaryRunner.run(train)
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("heads written to"))
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/config.json"))) as? [String: Any]
        #expect(config?["medusa_num_heads"] as? Int == 3)
        #expect(config?["answers"] as? Int == 5)
        #expect(((config?["base_model"] as? [String: Any])?["sha256"] as? String)?.count == 64)
        #expect((config?["command"] as? String)?.hasPrefix("medusa-worker train-heads") == true)
        #expect((config?["held_out_top1_accuracy"] as? [Double])?.count == 3)
        #expect(config?["train_vocabulary"] as? String == "seen")
        #expect((config?["train_vocabulary_tokens"] as? Int ?? 0) > 0)

        // Without --resume an existing checkpoint is refused; with it, the data is not made again.
        let again = try BinaryRunner.run(train)
        #expect(again.status != 0)
        #expect(again.stderr.contains("pass --resume"), "\(again.stderr)")
        let resumed = try BinaryRunner.run(train + ["--resume"])
        #expect(resumed.status == 0, "\(resumed.stderr)")
        #expect(resumed.stderr.contains("already in"), "\(resumed.stderr)")
        // Resuming a finished run with another --dtype writes the same heads in that storage.
        let f32Size = try FileManager.default.attributesOfItem(atPath: out + "/medusa_heads.safetensors")[.size] as? Int ?? 0
        let half = try BinaryRunner.run(train + ["--resume", "--dtype", "f16"])
        #expect(half.status == 0, "\(half.stderr)")
        let f16Size = try FileManager.default.attributesOfItem(atPath: out + "/medusa_heads.safetensors")[.size] as? Int ?? 0
        #expect(f16Size > 0 && f16Size < f32Size * 6 / 10, "f32 \(f32Size) bytes, f16 \(f16Size)")
        let halfConfig = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/config.json"))) as? [String: Any]
        #expect(halfConfig?["dtype"] as? String == "f16")
        _ = try BinaryRunner.run(train + ["--resume"])
        let changed = try BinaryRunner.run(train + ["--resume", "--max-tokens", "20"])
        #expect(changed.status != 0)
        #expect(changed.stderr.contains("made with other settings"), "\(changed.stderr)")

        // More answers per prompt: the first ones are the greedy answers already cached, the others sampled.
        let more = dir + "/more"
        try FileManager.default.createDirectory(atPath: more, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: out + "/distill", toPath: more + "/distill")
        let twice = try BinaryRunner.run(["train-heads", "--model", model, "--out", more, "--prompts", prompts,
                                          "--max-tokens", "16", "--heads", "3", "--batch", "16", "--threads", "1",
                                          "--answers-per-prompt", "3"])
        #expect(twice.status == 0, "\(twice.stderr)")
        let lines = try String(contentsOfFile: more + "/distill/answers.jsonl", encoding: .utf8).split(separator: "\n")
        let variants = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            .map { ($0["prompt"] as? Int ?? -1, $0["variant"] as? Int ?? -1) }
        #expect(variants.count == 15)
        #expect(Set(variants.map { "\($0.0)/\($0.1)" }).count == 15)
        #expect(variants.prefix(5).allSatisfy { $0.1 == 0 }, "the cached first answers are kept, not made again")
        let moreConfig = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: more + "/config.json"))) as? [String: Any]
        #expect(moreConfig?["answers"] as? Int == 15)
        let generate = ["generate", "--model", model, "--prompt", "Hello there", "--max-tokens", "20", "--ignore-eos",
                        "--threads", "1", "--json"]
        let plain = try BinaryRunner.run(generate)
        let medusa = try BinaryRunner.run(generate + ["--heads", out, "--tree", "chain"])
        #expect(medusa.status == 0, "\(medusa.stderr)")
        #expect(try medusa.json()["token_ids"] as? [Int] == plain.json()["token_ids"] as? [Int])

        let eval = try BinaryRunner.run(["eval-heads", "--model", model, "--heads", out, "--prompts", prompts,
                                         "--max-tokens", "12", "--threads", "1", "--json"])
        #expect(eval.status == 0, "\(eval.stderr)")
        let report = try eval.json()
        #expect(report["answers"] as? Int == 5)
        let top1 = report["top1_accuracy"] as? [Double] ?? [], top5 = report["top5_accuracy"] as? [Double] ?? []
        #expect(top1.count == 3 && zip(top1, top5).allSatisfy { 0 <= $0 && $0 <= $1 && $1 <= 1 })

        let tree = dir + "/tree.json"
        let tune = try BinaryRunner.run(["tune-tree", "--model", model, "--heads", out, "--prompts", prompts, "--limit", "2",
                                         "--max-tokens", "12", "--max-nodes", "12", "--runs", "1", "--threads", "1",
                                         "--out", tree, "--json"])
        #expect(tune.status == 0, "\(tune.stderr)")
        let tuned = try tune.json()
        #expect((tuned["curve"] as? [[String: Any]])?.count ?? 0 >= 1)
        let nodes = tuned["chosen_nodes"] as? Int ?? 0
        #expect(nodes >= 1 && nodes <= 12)
        #expect((tuned["measured_tokens_per_step"] as? Double ?? 0) >= 1)
        // The written tree is a valid --tree.
        let withTree = try BinaryRunner.run(generate + ["--heads", out, "--tree", tree])
        #expect(withTree.status == 0, "\(withTree.stderr)")
        #expect(try withTree.json()["token_ids"] as? [Int] == plain.json()["token_ids"] as? [Int])
    }

    @Test("--candidates keeps the answers' most frequent tokens as the heads' candidates; decoding with them equals plain decoding")
    func fewerCandidates() throws {
        let model = try CLITests.tinyModel()
        let dir = try makeTemporaryDirectory()
        let prompts = dir + "/prompts.jsonl"
        try Data(["Hello there", "Tell me a story", "Count to ten"].map { "{\"prompt\": \"\($0)\"}" }
            .joined(separator: "\n").utf8).write(to: URL(fileURLWithPath: prompts))
        let out = dir + "/heads"
        // Answers sampled at a high temperature hold many distinct tokens.
        let train = ["train-heads", "--model", model, "--out", out, "--prompts", prompts, "--max-tokens", "16",
                     "--heads", "2", "--batch", "16", "--threads", "1", "--temperature", "20"]
        let all = try BinaryRunner.run(train)
        #expect(all.status == 0, "\(all.stderr)")
        let config = { try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/config.json"))) as? [String: Any] }
        let seen = try config()?["candidate_tokens"] as? Int ?? 0
        #expect(seen >= 3, "the sampled answers hold several distinct tokens")
        // Resuming the finished run with --candidates writes the heads again with fewer candidates.
        let fewer = try BinaryRunner.run(train + ["--resume", "--candidates", "2"])
        #expect(fewer.status == 0, "\(fewer.stderr)")
        #expect(fewer.stderr.contains("the 2 most frequent"), "\(fewer.stderr)")
        #expect(try config()?["candidate_tokens"] as? Int == 2)
        let generate = ["generate", "--model", model, "--prompt", "Hello there", "--max-tokens", "12", "--ignore-eos",
                        "--threads", "1", "--json"]
        let medusa = try BinaryRunner.run(generate + ["--heads", out, "--tree", "chain"])
        #expect(medusa.status == 0, "\(medusa.stderr)")
        #expect(try medusa.json()["token_ids"] as? [Int] == BinaryRunner.run(generate).json()["token_ids"] as? [Int])
    }

    @Test("bad train-heads options are one clear line")
    func errors() throws {
        let model = try CLITests.tinyModel()
        let dir = try makeTemporaryDirectory()
        let cases: [([String], String)] = [
            (["train-heads", "--model", model, "--out", dir + "/a", "--prompts", dir + "/absent.jsonl"], "absent.jsonl"),
            (["train-heads", "--model", model, "--out", dir + "/a", "--heads", "0"], "--heads must be between 1 and 16"),
            (["train-heads", "--model", model, "--out", dir + "/a", "--lr", "0"], "--lr must be positive"),
            (["train-heads", "--model", model, "--out", dir + "/a", "--own-lm-head", "--train-vocabulary", "seen"],
             "needs the shared LM head"),
            (["train-heads", "--model", model, "--out", dir + "/a", "--candidates", "0"], "--candidates must be at least 1"),
            (["train-heads", "--model", model, "--out", dir + "/a", "--own-lm-head", "--candidates", "5"],
             "--candidates needs the seen training vocabulary"),
            (["eval-heads", "--model", model, "--heads", dir + "/none"], "none"),
        ]
        for (arguments, expected) in cases {
            let r = try BinaryRunner.run(arguments)
            #expect(r.status != 0, "\(arguments) exited 0")
            #expect(r.stderr.contains(expected), "\(arguments): \(r.stderr)")
        }
    }
}
