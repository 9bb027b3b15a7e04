import Coordinator
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

/// The heads shipped for the default model (models/smollm2-135m-instruct-medusa).
@Suite struct ShippedHeadsTests {
    static var folder: String { TestData.repositoryRoot + "/models/smollm2-135m-instruct-medusa" }

    @Test("the shipped heads were made for the default model file, and Medusa with them answers as plain decoding")
    func shippedHeadsMatchTheModelAndKeepGreedyOutput() throws {
        guard let model = try TestData.model() else { return }
        let config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.folder + "/config.json")))
            as? [String: Any]
        let recorded = (config?["base_model"] as? [String: Any])?["sha256"] as? String
        #expect(recorded == (try sha256Hex(ofFile: model)), "the heads' config.json names another model file")
        let generate = ["generate", "--model", model, "--chat", "Name three uses of a paperclip.", "--max-tokens", "64",
                        "--threads", "2", "--json"]
        let plain = try BinaryRunner.run(generate)
        // Without --tree, the folder's own tree.json is the tree.
        let medusa = try BinaryRunner.run(generate + ["--heads", Self.folder])
        #expect(medusa.status == 0, "\(medusa.stderr)")
        #expect(try medusa.json()["token_ids"] as? [Int] == plain.json()["token_ids"] as? [Int])
        let paths = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: Self.folder + "/tree.json"))) as? [[Int]]
        #expect(try medusa.json()["tree_nodes"] as? Int == (paths?.count ?? -1) + 1)
        let preset = try BinaryRunner.run(["generate", "--model", model, "--prompt", "Hi", "--max-tokens", "4", "--threads", "2",
                                           "--json", "--heads", Self.folder, "--tree", "default"])
        #expect(try preset.json()["tree_nodes"] as? Int == 10, "\(preset.stderr)")
        // The heads guess some tokens right: fewer verify steps than tokens.
        let accepted = try medusa.json()["mean_accepted_tokens"] as? Double ?? 0
        #expect(accepted > 1.05, "mean accepted tokens per step \(accepted)")
    }
}

/// `--model DIR`: a Hugging Face folder answers as the GGUF it was written from.
@Suite struct HuggingFaceFolderCLITests {
    /// A tiny model as a GGUF file and as a sharded Hugging Face folder.
    static func tinyPair() throws -> (gguf: String, folder: String) {
        var synthetic = SyntheticLlama(config: SyntheticLlama.smallConfig, weightType: .f32, seed: 11)
        let dir = try makeTemporaryDirectory()
        try synthetic.write(to: dir + "/tiny.gguf")
        try synthetic.writeHuggingFace(to: dir + "/hf", ggufPath: dir + "/tiny.gguf", shardCount: 2)
        return (dir + "/tiny.gguf", dir + "/hf")
    }

    @Test func generateTokenizeAndPerplexityOnATinyFolder() throws {
        let (gguf, folder) = try Self.tinyPair()
        let args = ["generate", "--prompt", "Hello", "--max-tokens", "12", "--ignore-eos", "--threads", "2", "--json"]
        let a = try BinaryRunner.run(args + ["--model", gguf])
        let b = try BinaryRunner.run(args + ["--model", folder])
        #expect(a.status == 0 && b.status == 0, "\(a.stderr) \(b.stderr)")
        #expect(try b.json()["token_ids"] as? [Int] == a.json()["token_ids"] as? [Int])
        #expect((try b.json()["token_ids"] as? [Int])?.count == 12)

        let t = try BinaryRunner.run(["tokenize", "--model", folder, "--text", "<|im_start|>hi", "--json"])
        #expect(t.status == 0, "\(t.stderr)")
        #expect(try t.json()["token_ids"] as? [Int] == [256, 104, 105])

        let file = try makeTemporaryDirectory() + "/text.txt"
        try Data(String(repeating: "The quick brown fox jumps over the lazy dog. ", count: 8).utf8).write(to: URL(fileURLWithPath: file))
        let pa = try BinaryRunner.run(["perplexity", "--model", gguf, "--file", file, "--ctx", "64", "--json"])
        let pb = try BinaryRunner.run(["perplexity", "--model", folder, "--file", file, "--ctx", "64", "--json"])
        #expect(pa.status == 0 && pb.status == 0, "\(pa.stderr) \(pb.stderr)")
        let x = try pa.json()["ppl"] as? Double ?? .nan, y = try pb.json()["ppl"] as? Double ?? .nan
        #expect(abs(x - y) / x < 1e-5, "GGUF \(x), folder \(y)")
    }

    @Test func folderErrorsAreOneClearLine() throws {
        let (_, folder) = try Self.tinyPair()
        let empty = try makeTemporaryDirectory()
        let noTokenizer = try makeTemporaryDirectory()
        for name in ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json"] {
            try FileManager.default.copyItem(atPath: folder + "/" + name, toPath: noTokenizer + "/" + name)
        }
        let cases: [([String], String)] = [
            (["generate", "--model", empty, "--prompt", "x"], "\(empty): not a Hugging Face checkpoint folder: there is no config.json"),
            (["tokenize", "--model", empty, "--text", "x"], "\(empty)/tokenizer.json: cannot open: no such file"),
            (["perplexity", "--model", noTokenizer, "--file", TestData.repositoryRoot + "/Tests/Data/perplexity.txt"],
             "\(noTokenizer)/tokenizer.json: cannot open: no such file"),
            (["generate", "--model", folder + "/model-00001-of-00002.safetensors", "--prompt", "x"], "give the folder that holds it"),
        ]
        for (args, expected) in cases {
            let r = try BinaryRunner.run(args)
            #expect(r.status != 0, "\(args) exited 0")
            #expect(r.stderr.hasPrefix("error: ") && r.stderr.contains(expected), "\(args): stderr was \(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1, "\(args): \(r.stderr)")
        }
    }
}

/// SmolLM2 converted to a Hugging Face folder by scripts/gguf_to_hf.py (F32: the dequantized
/// Q4_1 values exactly) answers as the GGUF does.
@Suite struct SmolLM2FolderTests {
    @Test(.enabled(if: PythonRunner.hasNumpyAndGGUF, "needs python3 with numpy and gguf (make setup installs them)"))
    func convertedFolderGivesTheSameTokensAndPerplexity() throws {
        guard let model = try TestData.model() else { return }
        let folder = try makeTemporaryDirectory() + "/smollm2"
        defer { try? FileManager.default.removeItem(atPath: (folder as NSString).deletingLastPathComponent) }
        _ = try PythonRunner.run([TestData.repositoryRoot + "/scripts/gguf_to_hf.py", model, folder])

        let chat = ["generate", "--chat", "What is the capital of France?", "--max-tokens", "40", "--json"]
        let a = try BinaryRunner.run(chat + ["--model", model])
        let b = try BinaryRunner.run(chat + ["--model", folder])
        #expect(a.status == 0 && b.status == 0, "\(a.stderr) \(b.stderr)")
        let tokensA = try a.json()["token_ids"] as? [Int] ?? [], tokensB = try b.json()["token_ids"] as? [Int] ?? []
        #expect(tokensB == tokensA, "GGUF \(tokensA), folder \(tokensB)")
        #expect((try b.json()["text"] as? String ?? "").contains("Paris"))
        #expect(try b.json()["prompt_tokens"] as? Int == 37)

        let text = TestData.repositoryRoot + "/Tests/Data/perplexity.txt"
        let ids = ["tokenize", "--file", text, "--json"]
        #expect(try BinaryRunner.run(ids + ["--model", folder]).json()["token_ids"] as? [Int]
            == BinaryRunner.run(ids + ["--model", model]).json()["token_ids"] as? [Int])
        let ppl = ["perplexity", "--file", text, "--ctx", "128", "--chunks", "4", "--json"]
        let pa = try BinaryRunner.run(ppl + ["--model", model]).json()["ppl"] as? Double ?? .nan
        let pb = try BinaryRunner.run(ppl + ["--model", folder]).json()["ppl"] as? Double ?? .nan
        #expect(abs(pa - pb) / pa < 1e-3, "GGUF \(pa), folder \(pb)")
    }

    @Test(.enabled(if: PythonRunner.hasNumpyAndGGUF, "needs python3 with numpy and gguf (make setup installs them)"))
    func shardedBF16FolderLoads() throws {
        guard let model = try TestData.model() else { return }
        let folder = try makeTemporaryDirectory() + "/smollm2-bf16"
        defer { try? FileManager.default.removeItem(atPath: (folder as NSString).deletingLastPathComponent) }
        _ = try PythonRunner.run([TestData.repositoryRoot + "/scripts/gguf_to_hf.py", model, folder, "--dtype", "bf16", "--shards", "3"])
        #expect(FileManager.default.fileExists(atPath: folder + "/model.safetensors.index.json"))
        // BF16 rounds the weights, so only the answer is checked, not the exact tokens.
        let r = try BinaryRunner.run(["generate", "--model", folder, "--chat", "What is the capital of France?",
                                      "--max-tokens", "12", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect((try r.json()["text"] as? String ?? "").contains("Paris"))
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
        // Exact activations and an fp32 cache: only the summation order differs from numpy.
        let exact = try BinaryRunner.run(["perplexity", "--model", model, "--file", text, "--ctx", "128", "--chunks", "4",
                                          "--matmul-inputs", "fp32", "--cache-type", "f32", "--json"])
        #expect(exact.status == 0, "\(exact.stderr)")
        let exactPPL = try exact.json()["ppl"] as? Double ?? .nan
        #expect(abs(exactPPL - referencePPL) / referencePPL < 1e-4, "exact \(exactPPL), numpy reference \(referencePPL)")
    }
}
