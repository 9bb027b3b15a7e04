import Foundation
import TestSupport
import Testing
import Worker

/// The command line end to end: the real binary, on a synthetic model and on SmolLM2.
@Suite struct CLITests {
    static func tinyModel() throws -> String {
        var synthetic = SyntheticLlama(config: SyntheticLlama.smallConfig, weightType: .q8_0, seed: 11)
        let path = try makeTemporaryDirectory() + "/tiny.gguf"
        try synthetic.write(to: path)
        return path
    }

    @Test func generateWithJSONOnATinyModel() throws {
        let model = try Self.tinyModel()
        let r = try BinaryRunner.run(["generate", "--model", model, "--prompt", "Hello", "--max-tokens", "12",
                                      "--ignore-eos", "--threads", "2", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try r.json()
        #expect((json["token_ids"] as? [Int])?.count == 12)
        #expect(json["prompt_tokens"] as? Int == 5)
        #expect(json["completion_tokens"] as? Int == 12)
        #expect(json["finish_reason"] as? String == "length")
        #expect(json["text"] is String)
        #expect((json["seconds"] as? Double ?? -1) >= 0)
        #expect(json["tokens_per_second"] is Double)
        // Greedy decoding is deterministic: a second run gives the same tokens.
        let again = try BinaryRunner.run(["generate", "--model", model, "--prompt", "Hello", "--max-tokens", "12",
                                          "--ignore-eos", "--threads", "1", "--json"])
        #expect(try again.json()["token_ids"] as? [Int] == json["token_ids"] as? [Int])
    }

    @Test func samplingIsReproducibleWithASeed() throws {
        let model = try Self.tinyModel()
        let args = ["generate", "--model", model, "--prompt", "Hi", "--max-tokens", "10", "--ignore-eos",
                    "--temperature", "50", "--top-k", "0", "--top-p", "1", "--json"]
        let a = try BinaryRunner.run(args + ["--seed", "5"])
        let b = try BinaryRunner.run(args + ["--seed", "5"])
        let c = try BinaryRunner.run(args + ["--seed", "6"])
        #expect(a.status == 0 && b.status == 0 && c.status == 0)
        #expect(try a.json()["token_ids"] as? [Int] == b.json()["token_ids"] as? [Int])
        #expect(try a.json()["token_ids"] as? [Int] != c.json()["token_ids"] as? [Int])
    }

    @Test func errorsAreOneClearLine() throws {
        let model = try Self.tinyModel()
        let dir = try makeTemporaryDirectory()
        let corrupt = dir + "/corrupt.gguf"
        try Data("GGUF\u{3}\0\0\0garbage".utf8).write(to: URL(fileURLWithPath: corrupt))
        let notGGUF = dir + "/text.gguf"
        try Data("just some text that is not a model".utf8).write(to: URL(fileURLWithPath: notGGUF))

        let cases: [([String], String)] = [
            (["generate", "--model", dir + "/absent.gguf", "--prompt", "x"], "absent.gguf"),
            (["generate", "--model", corrupt, "--prompt", "x"], "truncated"),
            (["generate", "--model", notGGUF, "--prompt", "x"], "not a GGUF file"),
            (["generate", "--model", model, "--prompt", String(repeating: "long prompt ", count: 40), "--ctx", "32"], "context holds 32"),
            (["generate", "--model", model, "--prompt", "x", "--temperature", "-1"], "--temperature"),
            (["generate", "--model", model, "--prompt", "x", "--chat", "y"], "exactly one of --prompt or --chat"),
            (["generate", "--model", model, "--prompt", "x", "--top-p", "0"], "--top-p"),
            (["generate", "--model", model, "--prompt", "x", "--chat-template", "nope"], "--chat-template"),
            (["perplexity", "--model", model, "--file", dir + "/missing.txt"], "missing.txt"),
            (["tokenize", "--model", model], "exactly one of --text or --file"),
        ]
        for (args, expected) in cases {
            let r = try BinaryRunner.run(args)
            #expect(r.status != 0, "\(args) exited 0")
            #expect(r.stderr.contains(expected), "\(args): stderr was \(r.stderr)")
            #expect(!r.stderr.contains("Fatal error"), "\(args) crashed: \(r.stderr)")
        }
    }

    @Test func benchReportsDecodeSpeedAndItsTimeSplit() throws {
        let model = try Self.tinyModel()
        let prompts = try makeTemporaryDirectory() + "/prompts.jsonl"
        try Data("""
            {"question_id": 1, "turns": ["Tell me a story.", "A second turn, unused."]}

            {"prompt": "Hello there"}
            {"prompt": "Beyond the limit"}
            """.utf8).write(to: URL(fileURLWithPath: prompts))
        let r = try BinaryRunner.run(["bench", "--model", model, "--prompts", prompts, "--limit", "2",
                                      "--max-tokens", "6", "--ignore-eos", "--runs", "2", "--threads", "2", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try r.json()
        let perPrompt = json["prompts"] as? [[String: Any]] ?? []
        #expect(perPrompt.count == 2)
        #expect(perPrompt.map { $0["generated_tokens"] as? Int } == [6, 6])
        // The first turn in the tiny model's ChatML template.
        let chat = "<|im_start|>user\nTell me a story.<|im_end|>\n<|im_start|>assistant\n"
        let tokens = try BinaryRunner.run(["tokenize", "--model", model, "--text", chat, "--json"])
        #expect(perPrompt.first?["prompt_tokens"] as? Int == (try tokens.json()["token_ids"] as? [Int])?.count)
        #expect((json["plain_decode_tokens_per_second"] as? Double ?? 0) > 0)
        #expect((json["prefill_tokens_per_second"] as? Double ?? 0) > 0)
        let share = json["decode_time_share"] as? [String: Double] ?? [:]
        #expect(Set(share.keys) == ["matmul", "attention", "allreduce", "other", "lm_head", "sampling_other"])
        #expect(abs(share.values.reduce(0, +) - 1) < 1e-6)
        #expect((share["matmul"] ?? 0) > 0 && (share["lm_head"] ?? 0) > 0)
        #expect(share["allreduce"] == 0)
    }

    @Test func benchVerifyCurve() throws {
        let model = try Self.tinyModel()
        let r = try BinaryRunner.run(["bench", "--model", model, "--verify-curve", "--max-nodes", "5",
                                      "--context", "8", "--runs", "2", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let curve = try r.json()["curve"] as? [[String: Any]] ?? []
        #expect(curve.map { $0["n"] as? Int } == [1, 2, 3, 4, 5])
        #expect(curve.first?["ratio"] as? Double == 1)
        #expect(curve.allSatisfy { ($0["ms"] as? Double ?? 0) > 0 })

        let bad = try makeTemporaryDirectory() + "/bad.jsonl"
        try Data("{\"turns\": [\"ok\"]}\nnot json\n".utf8).write(to: URL(fileURLWithPath: bad))
        for (args, expected) in [
            (["--prompts", bad], "bad.jsonl:2: not a JSON object"),
            (["--verify-curve", "--context", "100", "--max-nodes", "64", "--ctx", "128"], "exceeds the KV cache"),
            (["--runs", "0"], "--runs"),
        ] {
            let e = try BinaryRunner.run(["bench", "--model", model] + args)
            #expect(e.status != 0)
            #expect(e.stderr.contains(expected), "\(args): \(e.stderr)")
        }
    }

    @Test func perplexityAndTokenizeOnATinyModel() throws {
        let model = try Self.tinyModel()
        let file = try makeTemporaryDirectory() + "/text.txt"
        try Data(String(repeating: "The quick brown fox jumps over the lazy dog. ", count: 20).utf8)
            .write(to: URL(fileURLWithPath: file))
        let p = try BinaryRunner.run(["perplexity", "--model", model, "--file", file, "--ctx", "64", "--json"])
        #expect(p.status == 0, "\(p.stderr)")
        let json = try p.json()
        #expect(json["chunks"] as? Int == 900 / 64)
        #expect(json["tokens_scored"] as? Int == (900 / 64) * 31)
        let ppl = json["ppl"] as? Double ?? 0
        #expect(ppl > 1 && ppl.isFinite)

        let t = try BinaryRunner.run(["tokenize", "--model", model, "--text", "<|im_start|>hi", "--json"])
        #expect(t.status == 0, "\(t.stderr)")
        #expect(try t.json()["token_ids"] as? [Int] == [256, 104, 105])
    }

    @Test func smolLM2AnswersTheCapitalOfFrance() throws {
        guard let model = try TestData.model() else { return }
        let r = try BinaryRunner.run(["generate", "--model", model, "--chat", "What is the capital of France?",
                                      "--max-tokens", "40", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try r.json()
        let text = json["text"] as? String ?? ""
        #expect(text.contains("Paris"), "answer was: \(text)")
        #expect(json["prompt_tokens"] as? Int == 37)
    }
}

/// SmolLM2's perplexity against the independent numpy forward (scripts/reference_forward.py).
@Suite struct ReferencePerplexityTests {
    @Test func smolLM2PerplexityMatchesTheNumpyReference() throws {
        guard let model = try TestData.model() else { return }
        let text = TestData.repositoryRoot + "/Tests/Data/perplexity.txt"
        let ids = try BinaryRunner.run(["tokenize", "--model", model, "--file", text, "--json"])
        #expect(ids.status == 0, "\(ids.stderr)")
        let tokens = try ids.json()["token_ids"] as? [Int] ?? []
        #expect(tokens.count > 512)
        let tokenFile = try makeTemporaryDirectory() + "/tokens.json"
        try JSONSerialization.data(withJSONObject: tokens).write(to: URL(fileURLWithPath: tokenFile))

        let reference = try PythonRunner.run([TestData.repositoryRoot + "/scripts/reference_forward.py", model,
                                              "--perplexity", "--tokens", tokenFile, "--ctx", "128", "--chunks", "4"])
        let referencePPL = reference["ppl"] as? Double ?? .nan

        let ours = try BinaryRunner.run(["perplexity", "--model", model, "--file", text, "--ctx", "128",
                                         "--chunks", "4", "--json"])
        #expect(ours.status == 0, "\(ours.stderr)")
        let json = try ours.json()
        let ppl = json["ppl"] as? Double ?? .nan
        #expect(json["tokens_scored"] as? Int == reference["tokens_scored"] as? Int)
        #expect(abs(ppl - referencePPL) / referencePPL < 0.01, "ours \(ppl), numpy reference \(referencePPL)")
    }
}

/// Runs a Python script that prints one JSON object.
enum PythonRunner {
    static func run(_ arguments: [String]) throws -> [String: Any] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3"] + arguments
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0,
              let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw MissingTestData(description: "python3 \(arguments.joined(separator: " ")) failed (status \(process.terminationStatus)): \(String(decoding: data, as: UTF8.self))")
        }
        return object
    }
}
