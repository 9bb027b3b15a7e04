import Foundation
import Medusa
import Testing
import TestSupport
import Worker
@testable import Coordinator

/// The same random tiny Llama written as a GGUF file and as a Hugging Face folder (un-permuted
/// Q/K rows, rotate-half RoPE) loads through `LoadedModel` to the same logits and tokens.
@Suite struct HuggingFaceModelTests {
    struct Pair {
        var gguf: String
        var folder: String
        var synthetic: SyntheticLlama
    }

    static func pair(_ config: LlamaConfig = SyntheticLlama.smallConfig, type: TensorType = .f32, tied: Bool = true,
                     shards: Int = 1, mergesAsPairs: Bool = false, seed: UInt64 = 5) throws -> Pair {
        var synthetic = SyntheticLlama(config: config, weightType: type, seed: seed)
        let dir = try makeTemporaryDirectory()
        let gguf = dir + "/tiny.gguf"
        try synthetic.write(to: gguf, tiedEmbeddings: tied)
        try synthetic.writeHuggingFace(to: dir + "/hf", ggufPath: gguf, tiedEmbeddings: tied, shardCount: shards,
                                       mergesAsPairs: mergesAsPairs)
        return Pair(gguf: gguf, folder: dir + "/hf", synthetic: synthetic)
    }

    /// Logits of every position of a causal pass over `tokens` from an empty cache.
    static func logits(_ loaded: LoadedModel, _ tokens: [Int32]) throws -> [[Float]] {
        let model = loaded.model
        model.cache.reset()
        let positions = tokens.indices.map { Int32($0) }
        let hidden = try tokens.withUnsafeBufferPointer { t in
            try positions.withUnsafeBufferPointer { p in Array(try model.forward(tokens: t, positions: p, mask: .causal(tokens.count))) }
        }
        let v = model.config.vocabularySize
        var out = [Float](repeating: 0, count: tokens.count * v)
        hidden.withUnsafeBufferPointer { h in
            out.withUnsafeMutableBufferPointer { model.logits(hidden: h.baseAddress!, rows: tokens.count, into: $0.baseAddress!) }
        }
        return (0..<tokens.count).map { Array(out[($0 * v)..<(($0 + 1) * v)]) }
    }

    static func largestDifference(_ a: [[Float]], _ b: [[Float]]) -> Float {
        var worst: Float = 0
        for (x, y) in zip(a, b) {
            for (p, q) in zip(x, y) { worst = max(worst, abs(p - q) / max(1, abs(q))) }
        }
        return worst
    }

    static let texts = ["Hello, world!", "<|im_start|>user\nhi<|im_end|>\n", "naïve 東京 🤖 12345", "  a  b  "]

    @Test(arguments: [(true, 1), (false, 1), (true, 3), (false, 4)])
    func sameLogitsAsTheGGUF(tied: Bool, shards: Int) throws {
        let p = try Self.pair(tied: tied, shards: shards, mergesAsPairs: shards > 1)
        let fromGGUF = try LoadedModel(path: p.gguf, contextLength: 128, threads: 2)
        let fromFolder = try LoadedModel(path: p.folder, contextLength: 128, threads: 2)
        #expect(fromFolder.model.config.ropeStyle == .halves)
        #expect(fromFolder.model.weights.tiedEmbeddings == tied)
        for text in Self.texts {
            let tokens = fromGGUF.tokenizer.encode(text, addSpecial: true, parseSpecial: true)
            #expect(fromFolder.tokenizer.encode(text, addSpecial: true, parseSpecial: true) == tokens)
            let a = try Self.logits(fromGGUF, tokens), b = try Self.logits(fromFolder, tokens)
            // Only the order of the head dimensions in q.k differs (permuted rows): each score is one
            // chain of fused multiply-adds over the dimensions, so the order moves logits by up to
            // 4.9e-5 (measured).
            #expect(Self.largestDifference(b, a) < 2e-4, "\(text.debugDescription): \(Self.largestDifference(b, a))")
            // The default fp16 KV cache: the reference rounds its keys and values the same way.
            let reference = p.synthetic.referenceLogits(tokens, tiedEmbeddings: tied, halfCache: true)
            #expect(Self.largestDifference(b, reference.map { $0.map(Float.init) }) < 1e-4)
        }
        #expect(fromFolder.chatTemplate == .chatml)
        #expect(try fromFolder.chatPrompt([ChatMessage(role: "user", content: "x")]) == fromGGUF.chatPrompt([ChatMessage(role: "user", content: "x")]))
    }

    @Test func groupedQueryShapesAndQuantizedGGUF() throws {
        // One KV head for eight query heads, a non-default RoPE base; and a Q8_0 GGUF against
        // the F32 folder holding its dequantized values.
        let config = LlamaConfig(layerCount: 2, hiddenSize: 64, intermediateSize: 64, headCount: 8, kvHeadCount: 1,
                                 ropeFrequencyBase: 500000, contextLength: 64, vocabularySize: 270)
        // With exact fp32 inputs only the summation order differs. The default int16 inputs round
        // the Q8_0 products' activations (2^-16 of each block's largest value), which moved these
        // logits by 4e-4 (measured); 2e-3 leaves a factor of 5 and still catches a wrong kernel.
        for (c, type) in [(config, TensorType.f32), (SyntheticLlama.smallConfig, .q8_0)] {
            let p = try Self.pair(c, type: type, seed: 9)
            let b = try LoadedModel(path: p.folder, contextLength: 64, threads: 1)
            for inputs in MatMulInputs.allCases {
                let a = try LoadedModel(path: p.gguf, contextLength: 64, threads: 1, matmulInputs: inputs)
                let tokens = a.tokenizer.encode("The quick brown fox", addSpecial: true, parseSpecial: true)
                let d = Self.largestDifference(try Self.logits(b, tokens), try Self.logits(a, tokens))
                // int8 inputs (256 times coarser than int16) moved them by 0.11 (measured).
                let allowed = type == .f32 ? 1e-5 : (inputs == .fp32 ? 1e-4 : (inputs == .int16 ? 2e-3 : 0.25))
                #expect(d < Float(allowed), "\(type) \(inputs): \(d)")
            }
        }
    }

    @Test func greedyGenerationMatches() throws {
        let p = try Self.pair(seed: 21)
        var results: [[Int32]] = []
        for path in [p.gguf, p.folder] {
            let loaded = try LoadedModel(path: path, contextLength: 128, threads: 2)
            let prompt = loaded.tokenizer.encode("Once upon a time", addSpecial: true, parseSpecial: true)
            var sampler = Sampler(parameters: SamplingParameters(temperature: 0, topK: 1, topP: 1), seed: 0)
            let result = try Generator(model: loaded.model).generate(
                prompt: prompt, maxTokens: 24, sampler: &sampler, stopAt: { _ in false }, onToken: { _ in true })
            results.append(result.tokens)
        }
        #expect(results[0].count == 24)
        #expect(results[0] == results[1])
    }

    // MARK: Errors

    func loadError(_ path: String) -> String {
        do {
            _ = try LoadedModel(path: path, contextLength: 64, threads: 1)
            Issue.record("\(path) loaded; expected an error")
            return ""
        } catch {
            let text = "\(error)"
            #expect(!text.contains("\n"), "one line: \(text)")
            return text
        }
    }

    @Test func folderErrorsAreOneClearLine() throws {
        let p = try Self.pair(seed: 2)
        let fm = FileManager.default
        let empty = try makeTemporaryDirectory()
        #expect(loadError(empty) == "\(empty): not a Hugging Face checkpoint folder: there is no config.json")

        let noWeights = try makeTemporaryDirectory()
        try fm.copyItem(atPath: p.folder + "/config.json", toPath: noWeights + "/config.json")
        #expect(loadError(noWeights) == "\(noWeights): not a Hugging Face checkpoint folder: neither model.safetensors nor model.safetensors.index.json is there")

        #expect(loadError(p.folder + "/model.safetensors").contains("give the folder that holds it"))

        // A tensor missing from the file, one of the wrong shape, one of an unsupported dtype.
        let file = try SafetensorsFile(path: p.folder + "/model.safetensors")
        func rewrite(_ transform: (SafetensorsTensorInfo) -> SafetensorsWriter.Tensor?) throws -> String {
            let dir = try makeTemporaryDirectory()
            for name in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
                try fm.copyItem(atPath: p.folder + "/" + name, toPath: dir + "/" + name)
            }
            var w = SafetensorsWriter()
            for t in file.tensors { if let r = transform(t) { w.tensors.append(r) } }
            try w.write(to: dir + "/model.safetensors")
            return dir
        }
        func same(_ t: SafetensorsTensorInfo) -> SafetensorsWriter.Tensor {
            SafetensorsWriter.Tensor(name: t.name, dtype: t.dtype, shape: t.shape, data: Array(file.data(of: t)))
        }
        let missing = try rewrite { $0.name == "model.layers.1.mlp.up_proj.weight" ? nil : same($0) }
        #expect(loadError(missing) == "\(missing)/model.safetensors: missing required tensor 'model.layers.1.mlp.up_proj.weight'")
        let misshapen = try rewrite { t in
            t.name == "model.layers.0.self_attn.k_proj.weight"
                ? SafetensorsWriter.Tensor(name: t.name, dtype: "F32", shape: [16, 64], data: [UInt8](repeating: 0, count: 16 * 64 * 4))
                : same(t)
        }
        #expect(loadError(misshapen) == "\(misshapen)/model.safetensors: tensor 'model.layers.0.self_attn.k_proj.weight' has shape [16, 64], expected [32, 64]")
        let doubles = try rewrite { t in
            t.name == "model.norm.weight" ? SafetensorsWriter.Tensor(name: t.name, dtype: "F64", shape: t.shape, data: Array(file.data(of: t)) + Array(file.data(of: t))) : same(t)
        }
        #expect(loadError(doubles) == "\(doubles)/model.safetensors: tensor 'model.norm.weight' has dtype 'F64', which is not supported (supported: F32, F16, BF16)")

        // A tokenizer with more tokens than the embedding has rows.
        let extraToken = try rewrite(same)
        var tokenizer = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: extraToken + "/tokenizer.json"))) as! [String: Any]
        tokenizer["added_tokens"] = (tokenizer["added_tokens"] as! [Any]) + [["id": 305, "content": "<extra>", "special": true]]
        try JSONSerialization.data(withJSONObject: tokenizer).write(to: URL(fileURLWithPath: extraToken + "/tokenizer.json"))
        #expect(loadError(extraToken) == "\(extraToken)/tokenizer.json: key 'model.vocab': 306 tokens but the embedding has 300 rows")

        // config.json's vocab_size disagreeing with the embedding.
        let bigVocab = try rewrite(same)
        try Data(String(decoding: try Data(contentsOf: URL(fileURLWithPath: p.folder + "/config.json")), as: UTF8.self)
            .replacingOccurrences(of: "\"vocab_size\":300", with: "\"vocab_size\":290").utf8)
            .write(to: URL(fileURLWithPath: bigVocab + "/config.json"))
        #expect(loadError(bigVocab).contains("tensor 'model.embed_tokens.weight' has shape [300, 64], expected [290, 64]"))
    }

    @Test func tokenizerOfAFolderWithoutWeights() throws {
        let p = try Self.pair(seed: 4)
        let dir = try makeTemporaryDirectory()
        for name in ["tokenizer.json", "tokenizer_config.json"] {
            try FileManager.default.copyItem(atPath: p.folder + "/" + name, toPath: dir + "/" + name)
        }
        let t = try Tokenizer(model: dir)
        #expect(t.encode("<|im_start|>hi", addSpecial: true, parseSpecial: true) == [256, 104, 105])
        #expect(throws: (any Error).self) { _ = try Tokenizer(model: dir + "/absent.gguf") }
    }
}
