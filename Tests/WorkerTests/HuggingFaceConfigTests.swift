import Foundation
import TestSupport
import Testing
@testable import Worker

/// `config.json` into `LlamaConfig`, and the rotate-half RoPE that Hugging Face checkpoints use.
@Suite struct HuggingFaceConfigTests {
    static let smolLM2 = """
        {"architectures": ["LlamaForCausalLM"], "attention_bias": false, "bos_token_id": 1, "eos_token_id": 2,
         "hidden_act": "silu", "hidden_size": 576, "initializer_range": 0.041666666666666664,
         "intermediate_size": 1536, "max_position_embeddings": 8192, "mlp_bias": false, "model_type": "llama",
         "num_attention_heads": 9, "num_hidden_layers": 30, "num_key_value_heads": 3, "pretraining_tp": 1,
         "rms_norm_eps": 1e-05, "rope_scaling": null, "rope_theta": 100000, "tie_word_embeddings": true,
         "torch_dtype": "bfloat16", "transformers_version": "4.42.3", "use_cache": true, "vocab_size": 49152}
        """

    func write(_ text: String) throws -> String {
        let path = try makeDirectory() + "/config.json"
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    func makeDirectory() throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("medusa-hfconfig-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir.path
    }

    /// SmolLM2's config with `change` applied to its keys.
    func variant(_ change: (inout [String: Any]) -> Void) throws -> String {
        var object = try JSONSerialization.jsonObject(with: Data(Self.smolLM2.utf8)) as! [String: Any]
        change(&object)
        return try write(String(decoding: JSONSerialization.data(withJSONObject: object), as: UTF8.self))
    }

    func problem(_ path: String) -> WeightFileError.Problem? {
        do throws(WeightFileError) {
            _ = try HuggingFaceConfig(path: path)
            return nil
        } catch {
            #expect(error.description.hasPrefix(path + ": "))
            return error.problem
        }
    }

    @Test func readsSmolLM2sConfig() throws {
        let c = try HuggingFaceConfig(path: write(Self.smolLM2))
        #expect(c.architecture == "LlamaForCausalLM")
        #expect(c.tiedEmbeddings)
        #expect(c.bosTokenID == 1 && c.eosTokenIDs == [2])
        #expect(c.llama == LlamaConfig(
            layerCount: 30, hiddenSize: 576, intermediateSize: 1536, headCount: 9, kvHeadCount: 3, headDimension: 64,
            ropeDimensionCount: 64, ropeFrequencyBase: 100000, ropeStyle: .halves, rmsNormEpsilon: 1e-5,
            contextLength: 8192, vocabularySize: 49152))
    }

    @Test func defaultsAreTransformersOwn() throws {
        let path = try write("""
            {"architectures": ["MistralForCausalLM"], "hidden_size": 64, "intermediate_size": 96,
             "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 300, "eos_token_id": [7, 9]}
            """)
        let c = try HuggingFaceConfig(path: path)
        #expect(c.architecture == "MistralForCausalLM")
        #expect(c.llama.kvHeadCount == 4)
        #expect(c.llama.headDimension == 16 && c.llama.ropeDimensionCount == 16)
        #expect(c.llama.ropeFrequencyBase == 10000)
        #expect(c.llama.rmsNormEpsilon == 1e-6)
        #expect(c.llama.contextLength == 2048)
        #expect(c.llama.ropeStyle == .halves)
        #expect(!c.tiedEmbeddings)
        #expect(c.bosTokenID == nil && c.eosTokenIDs == [7, 9])
        #expect(try LlamaConfig(huggingFaceConfig: path) == c.llama)
    }

    @Test func explicitHeadDimSlidingWindowAndModelType() throws {
        let c = try HuggingFaceConfig(path: variant {
            $0["head_dim"] = 128
            $0["sliding_window"] = 4096
            $0["max_position_embeddings"] = 32768
            $0["architectures"] = nil
            $0["model_type"] = "mistral"
            $0["rope_scaling"] = ["rope_type": "default"]
        })
        #expect(c.llama.headDimension == 128)
        #expect(c.llama.contextLength == 4096)
        #expect(c.architecture == "MistralForCausalLM")
        let nested = try HuggingFaceConfig(path: variant {
            $0["rope_theta"] = nil
            $0["rope_parameters"] = ["rope_theta": 500000.0, "rope_type": "default"]
        })
        #expect(nested.llama.ropeFrequencyBase == 500000)
    }

    @Test func refusals() throws {
        #expect(problem(try variant { $0["architectures"] = ["GPT2LMHeadModel"] })
            == .badValue(key: "architectures", reason: "[\"GPT2LMHeadModel\"] is not supported (supported: LlamaForCausalLM, MistralForCausalLM)"))
        #expect(problem(try variant { $0["architectures"] = nil; $0["model_type"] = "qwen2" })
            == .badValue(key: "architectures", reason: "missing, and model_type is 'qwen2' (supported: LlamaForCausalLM, MistralForCausalLM)"))
        #expect(problem(try variant { $0["rope_scaling"] = ["rope_type": "llama3", "factor": 8.0] })
            == .badValue(key: "rope_scaling", reason: "RoPE scaling 'llama3' is not supported (only unscaled RoPE)"))
        #expect(problem(try variant { $0["rope_scaling"] = ["type": "linear", "factor": 2.0] })
            == .badValue(key: "rope_scaling", reason: "RoPE scaling 'linear' is not supported (only unscaled RoPE)"))
        #expect(problem(try variant { $0["rope_parameters"] = ["rope_type": "yarn"] })
            == .badValue(key: "rope_parameters", reason: "RoPE scaling 'yarn' is not supported (only unscaled RoPE)"))
        #expect(problem(try variant { $0["hidden_act"] = "gelu" }) == .badValue(key: "hidden_act", reason: "'gelu' is not supported (only silu)"))
        #expect(problem(try variant { $0["attention_bias"] = true }) == .badValue(key: "attention_bias", reason: "biases are not supported"))
        #expect(problem(try variant { $0["num_key_value_heads"] = 4 })
            == .badValue(key: "num_key_value_heads", reason: "4 does not divide num_attention_heads 9"))
        #expect(problem(try variant { $0["num_hidden_layers"] = 0 }) == .badValue(key: "num_hidden_layers", reason: "must be positive, got 0"))
        #expect(problem(try variant { $0["hidden_size"] = 577 })
            == .badValue(key: "hidden_size", reason: "577 is not a multiple of num_attention_heads 9 (and there is no head_dim)"))
    }

    /// Sizes beyond any real model are refused before anything is allocated or multiplied.
    @Test func absurdSizes() throws {
        for key in ["head_dim", "hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers", "vocab_size"] {
            for value in [Int.max, 1 << 62, 1 << 40] {
                let p = problem(try variant { $0[key] = value; if key == "num_attention_heads" { $0["num_key_value_heads"] = value } })
                guard case .badValue? = p else {
                    Issue.record("\(key) = \(value): \(String(describing: p))")
                    continue
                }
            }
        }
    }

    @Test func missingAndMistypedKeys() throws {
        #expect(problem(try variant { $0["vocab_size"] = nil }) == .missingKey("vocab_size"))
        #expect(problem(try variant { $0["hidden_size"] = "576" }) == .wrongKeyType(key: "hidden_size", expected: "an integer", found: "a string"))
        #expect(problem(try variant { $0["hidden_size"] = 576.5 }) == .wrongKeyType(key: "hidden_size", expected: "an integer", found: "a number"))
        #expect(problem(try variant { $0["tie_word_embeddings"] = 1 }) == .wrongKeyType(key: "tie_word_embeddings", expected: "a boolean", found: "an integer"))
        #expect(problem(try variant { $0["rope_theta"] = "big" }) == .wrongKeyType(key: "rope_theta", expected: "a number", found: "a string"))
        #expect(problem(try variant { $0["rope_scaling"] = ["rope_type": 3] })
            == .wrongKeyType(key: "rope_scaling.rope_type", expected: "a string", found: "an integer"))
        let bad = try write("{\"hidden_size\": 5,")
        guard case .invalidJSON(what: "config.json", _)? = problem(bad) else {
            Issue.record("expected invalidJSON")
            return
        }
        #expect(problem(try write("[1]")) == .invalidJSON(what: "config.json", reason: "expected an object, found an array"))
        let absent = try makeDirectory() + "/config.json"
        #expect(problem(absent) == .cannotOpen(reason: "no such file"))
    }

    // MARK: RoPE

    /// llama.cpp's permutation of Q/K rows for GGUF: within each head, row 2i + j of the GGUF
    /// matrix is row j * (d/2) + i of the Hugging Face one.
    static func ggufRow(ofHuggingFaceRow r: Int, headDimension d: Int) -> Int {
        let head = r / d, within = r % d
        return head * d + 2 * (within % (d / 2)) + within / (d / 2)
    }

    @Test func rotateHalfMatchesAdjacentPairsOnPermutedHeads() {
        let heads = 3, d = 16
        for (base, rotated) in [(10000 as Float, d), (500000, d)] {
            var config = LlamaConfig(layerCount: 1, hiddenSize: heads * d, intermediateSize: 8, headCount: heads, kvHeadCount: heads,
                                     ropeDimensionCount: rotated, ropeFrequencyBase: base, contextLength: 64, vocabularySize: 10)
            var pairs = RotaryTable(config: config)
            config.ropeStyle = .halves
            var halves = RotaryTable(config: config)
            let positions: [Int32] = [0, 1, 7, 63]
            positions.withUnsafeBufferPointer {
                pairs.prepare(positions: $0)
                halves.prepare(positions: $0)
            }
            var rng = TestRandom(seed: 3)
            for t in positions.indices {
                let hf = (0..<(heads * d)).map { _ in rng.nextSigned() }
                var gguf = [Float](repeating: 0, count: hf.count)
                for r in hf.indices { gguf[Self.ggufRow(ofHuggingFaceRow: r, headDimension: d)] = hf[r] }
                var a = hf, b = gguf
                a.withUnsafeMutableBufferPointer { halves.apply($0.baseAddress!, heads: heads, token: t) }
                b.withUnsafeMutableBufferPointer { pairs.apply($0.baseAddress!, heads: heads, token: t) }
                for r in hf.indices {
                    #expect(a[r] == b[Self.ggufRow(ofHuggingFaceRow: r, headDimension: d)], "row \(r) at position \(positions[t])")
                }
                // And against transformers' formula: x * cos + rotate_half(x) * sin, with
                // rotate_half(x) = [-x2, x1] and inv_freq[i] = base^(-2i/d).
                for h in 0..<heads {
                    for i in 0..<(d / 2) {
                        let angle = Double(positions[t]) * pow(Double(base), -2 * Double(i) / Double(d))
                        let x1 = Double(hf[h * d + i]), x2 = Double(hf[h * d + i + d / 2])
                        #expect(abs(Double(a[h * d + i]) - (x1 * cos(angle) - x2 * sin(angle))) < 1e-5)
                        #expect(abs(Double(a[h * d + i + d / 2]) - (x2 * cos(angle) + x1 * sin(angle))) < 1e-5)
                    }
                }
            }
        }
    }
}
