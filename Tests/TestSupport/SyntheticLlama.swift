import Foundation
import Medusa
import Worker

/// A tiny Llama with random weights, written as a GGUF file by tests, plus a straightforward
/// double-precision reference forward to check the engine against.
public struct SyntheticLlama {
    public var config: LlamaConfig
    public var weightType: TensorType
    /// Types of particular matrices instead of `weightType`, by name suffix ("attn_v.weight",
    /// "ffn_down.weight", "token_embd.weight"): mixes as llama.cpp's Q4_K_M writes them.
    public var typeOverrides: [String: TensorType] = [:]
    public var seed: UInt64
    /// Dense fp32 copies of every weight, [rows][columns] row-major, after quantization round trip.
    public private(set) var tensors: [String: (rows: Int, columns: Int, values: [Float])] = [:]

    public init(config: LlamaConfig, weightType: TensorType = .f32, seed: UInt64 = 1) {
        self.config = config
        self.weightType = weightType
        self.seed = seed
    }

    /// A small GQA configuration: 2 layers, hidden 64, 4 query heads over 2 KV heads.
    public static var smallConfig: LlamaConfig {
        LlamaConfig(layerCount: 2, hiddenSize: 64, intermediateSize: 96, headCount: 4, kvHeadCount: 2,
                    ropeFrequencyBase: 10000, rmsNormEpsilon: 1e-5, contextLength: 256, vocabularySize: 300)
    }

    /// A small configuration whose widths are whole K-quant super-blocks (256 values): 2 layers,
    /// hidden 256, 8 query heads of 32 over 2 KV heads, FFN 1280 (40 groups of 32). Row-parallel
    /// cuts on 2 and 3 ranks fall inside super-blocks (heads 3/3/2: columns 96 and 192; FFN
    /// 14/13/13 groups: 448 and 864).
    public static var superBlockConfig: LlamaConfig {
        LlamaConfig(layerCount: 2, hiddenSize: 256, intermediateSize: 1280, headCount: 8, kvHeadCount: 2,
                    ropeFrequencyBase: 10000, rmsNormEpsilon: 1e-5, contextLength: 256, vocabularySize: 300)
    }

    /// Writes the model (and a byte-level tokenizer whose tokens are the 256 bytes followed by
    /// `<|im_start|>`, `<|im_end|>` and filler tokens) to `path`.
    public mutating func write(to path: String, tiedEmbeddings: Bool = true) throws {
        var rng = TestRandom(seed: seed)
        let c = config
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("general.name", .string("synthetic"))
        w.set("llama.block_count", .uint32(UInt32(c.layerCount)))
        w.set("llama.context_length", .uint32(UInt32(c.contextLength)))
        w.set("llama.embedding_length", .uint32(UInt32(c.hiddenSize)))
        w.set("llama.feed_forward_length", .uint32(UInt32(c.intermediateSize)))
        w.set("llama.attention.head_count", .uint32(UInt32(c.headCount)))
        w.set("llama.attention.head_count_kv", .uint32(UInt32(c.kvHeadCount)))
        w.set("llama.rope.freq_base", .float32(c.ropeFrequencyBase))
        w.set("llama.attention.layer_norm_rms_epsilon", .float32(c.rmsNormEpsilon))
        w.set("llama.rope.dimension_count", .uint32(UInt32(c.ropeDimensionCount)))
        w.set("llama.vocab_size", .uint32(UInt32(c.vocabularySize)))
        let vocab = SyntheticLlama.vocabulary(size: c.vocabularySize)
        w.set("tokenizer.ggml.model", .string("gpt2"))
        w.set("tokenizer.ggml.pre", .string("gpt-2"))
        w.set("tokenizer.ggml.tokens", .array(.string(vocab.tokens)))
        w.set("tokenizer.ggml.token_type", .array(.int32(vocab.types)))
        w.set("tokenizer.ggml.merges", .array(.string([])))
        w.set("tokenizer.ggml.bos_token_id", .uint32(256))
        w.set("tokenizer.ggml.eos_token_id", .uint32(257))
        w.set("tokenizer.ggml.add_bos_token", .bool(false))
        w.set("tokenizer.chat_template", .string("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"))

        tensors = [:]
        func matrix(_ name: String, rows: Int, columns: Int, scale: Float, type: TensorType) {
            let type = typeOverrides.first { name.hasSuffix($0.key) }?.value ?? type
            let values = (0..<(rows * columns)).map { _ in rng.nextSigned() * scale }
            let bytes = Quantizer.quantize(values, to: type)
            let stored = bytes.withUnsafeBytes { ReferenceKernels.dequantize(type, $0, count: rows * columns) }
            tensors[name] = (rows, columns, stored)
            w.addTensor(name, dimensions: [columns, rows], type: type, data: bytes)
        }
        func norm(_ name: String, count: Int) {
            let values = (0..<count).map { _ in 1 + 0.2 * rng.nextSigned() }
            tensors[name] = (1, count, values)
            w.addTensor(name, dimensions: [count], floats: values)
        }
        let qDim = c.headCount * c.headDimension
        let kvDim = c.kvHeadCount * c.headDimension
        matrix("token_embd.weight", rows: c.vocabularySize, columns: c.hiddenSize, scale: 1, type: weightType)
        for l in 0..<c.layerCount {
            let p = "blk.\(l)."
            let s = 1 / Float(c.hiddenSize).squareRoot()
            norm(p + "attn_norm.weight", count: c.hiddenSize)
            matrix(p + "attn_q.weight", rows: qDim, columns: c.hiddenSize, scale: 2 * s, type: weightType)
            matrix(p + "attn_k.weight", rows: kvDim, columns: c.hiddenSize, scale: 2 * s, type: weightType)
            matrix(p + "attn_v.weight", rows: kvDim, columns: c.hiddenSize, scale: s, type: weightType)
            matrix(p + "attn_output.weight", rows: c.hiddenSize, columns: qDim, scale: s, type: weightType)
            norm(p + "ffn_norm.weight", count: c.hiddenSize)
            matrix(p + "ffn_gate.weight", rows: c.intermediateSize, columns: c.hiddenSize, scale: s, type: weightType)
            matrix(p + "ffn_up.weight", rows: c.intermediateSize, columns: c.hiddenSize, scale: s, type: weightType)
            matrix(p + "ffn_down.weight", rows: c.hiddenSize, columns: c.intermediateSize,
                   scale: 1 / Float(c.intermediateSize).squareRoot(), type: weightType)
        }
        norm("output_norm.weight", count: c.hiddenSize)
        if !tiedEmbeddings {
            matrix("output.weight", rows: c.vocabularySize, columns: c.hiddenSize, scale: 0.5, type: weightType)
        }
        try w.write(to: path)
    }

    /// Token texts of the synthetic vocabulary: GPT-2's byte-level characters for the 256 bytes,
    /// then control tokens, then unused fillers.
    public static func vocabulary(size: Int) -> (tokens: [String], types: [Int32]) {
        precondition(size >= 260)
        var tokens = (0..<256).map { String(byteLevelCharacter(UInt8($0))) }
        var types = [Int32](repeating: 1, count: 256)
        tokens += ["<|im_start|>", "<|im_end|>"]
        types += [3, 3]
        for i in tokens.count..<size {
            tokens.append("<unused\(i)>")
            types.append(5)
        }
        return (tokens, types)
    }

    /// GPT-2's printable stand-in for a byte.
    public static func byteLevelCharacter(_ b: UInt8) -> Character {
        let printable = (33...126).contains(b) || (161...172).contains(b) || (174...255).contains(b)
        if printable { return Character(UnicodeScalar(b)) }
        var n = 0
        for x in 0..<Int(b) where !((33...126).contains(x) || (161...172).contains(x) || (174...255).contains(x)) { n += 1 }
        return Character(UnicodeScalar(UInt32(256 + n))!)
    }

    /// Logits [tokens.count, vocab] of a causal pass over `tokens` from position 0, in Double.
    /// `halfCache`: keys (after RoPE) and values rounded to fp16 once, as an fp16 KV cache stores them.
    public func referenceLogits(_ tokens: [Int32], tiedEmbeddings: Bool = true, halfCache: Bool = false) -> [[Double]] {
        let c = config
        let hd = c.headDimension
        func t(_ name: String) -> (rows: Int, columns: Int, values: [Float]) { tensors[name]! }
        func matvec(_ name: String, _ x: [Double]) -> [Double] {
            let m = t(name)
            return (0..<m.rows).map { r in
                var s = 0.0
                for j in 0..<m.columns { s += Double(m.values[r * m.columns + j]) * x[j] }
                return s
            }
        }
        func rmsNorm(_ x: [Double], _ name: String) -> [Double] {
            let w = t(name).values
            let ms = x.reduce(0) { $0 + $1 * $1 } / Double(x.count)
            let inv = 1 / (ms + Double(c.rmsNormEpsilon)).squareRoot()
            return x.indices.map { x[$0] * inv * Double(w[$0]) }
        }
        func rope(_ v: inout [Double], heads: Int, position: Int) {
            for h in 0..<heads {
                for i in 0..<(c.ropeDimensionCount / 2) {
                    let theta = Double(position) * pow(Double(c.ropeFrequencyBase), -2 * Double(i) / Double(c.ropeDimensionCount))
                    let (a, b) = (v[h * hd + 2 * i], v[h * hd + 2 * i + 1])
                    v[h * hd + 2 * i] = a * cos(theta) - b * sin(theta)
                    v[h * hd + 2 * i + 1] = a * sin(theta) + b * cos(theta)
                }
            }
        }
        let emb = t("token_embd.weight")
        var xs: [[Double]] = tokens.map { tok in (0..<c.hiddenSize).map { Double(emb.values[Int(tok) * c.hiddenSize + $0]) } }
        for l in 0..<c.layerCount {
            let p = "blk.\(l)."
            var keys: [[Double]] = []
            var values: [[Double]] = []
            var queries: [[Double]] = []
            for (pos, x) in xs.enumerated() {
                let n = rmsNorm(x, p + "attn_norm.weight")
                var q = matvec(p + "attn_q.weight", n)
                var k = matvec(p + "attn_k.weight", n)
                rope(&q, heads: c.headCount, position: pos)
                rope(&k, heads: c.kvHeadCount, position: pos)
                queries.append(q)
                let v = matvec(p + "attn_v.weight", n)
                func stored(_ x: [Double]) -> [Double] { halfCache ? x.map { Double(Float16(Float($0))) } : x }
                keys.append(stored(k))
                values.append(stored(v))
            }
            for i in xs.indices {
                var attn = [Double](repeating: 0, count: c.headCount * hd)
                for h in 0..<c.headCount {
                    let kv = h / (c.headCount / c.kvHeadCount)
                    var scores = (0...i).map { j in
                        (0..<hd).reduce(0.0) { $0 + queries[i][h * hd + $1] * keys[j][kv * hd + $1] } / Double(hd).squareRoot()
                    }
                    let m = scores.max()!
                    scores = scores.map { exp($0 - m) }
                    let z = scores.reduce(0, +)
                    for j in 0...i {
                        for d in 0..<hd { attn[h * hd + d] += scores[j] / z * values[j][kv * hd + d] }
                    }
                }
                let o = matvec(p + "attn_output.weight", attn)
                for d in 0..<c.hiddenSize { xs[i][d] += o[d] }
                let n2 = rmsNorm(xs[i], p + "ffn_norm.weight")
                let g = matvec(p + "ffn_gate.weight", n2)
                let u = matvec(p + "ffn_up.weight", n2)
                let hdn = g.indices.map { g[$0] / (1 + exp(-g[$0])) * u[$0] }
                let down = matvec(p + "ffn_down.weight", hdn)
                for d in 0..<c.hiddenSize { xs[i][d] += down[d] }
            }
        }
        let head = tiedEmbeddings ? "token_embd.weight" : "output.weight"
        return xs.map { matvec(head, rmsNorm($0, "output_norm.weight")) }
    }
}

/// Deterministic random numbers for tests: the sampler's SplitMix64.
public typealias TestRandom = SeededGenerator

extension SeededGenerator {
    /// Uniform in [-1, 1).
    public mutating func nextSigned() -> Float { Float(next() >> 40) / Float(1 << 23) - 1 }
}

/// A fresh temporary directory for one test.
public func makeTemporaryDirectory() throws -> String {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("medusa-tp-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir.path
}
