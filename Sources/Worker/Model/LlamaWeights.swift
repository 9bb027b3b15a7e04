/// The weights of one decoder block. Matrices are [output features x input features].
public struct LlamaLayerWeights: Sendable {
    public var attentionNorm: [Float]      // [hidden]
    public var query: WeightMatrix         // [heads * headDim, hidden]
    public var key: WeightMatrix           // [kvHeads * headDim, hidden]
    public var value: WeightMatrix         // [kvHeads * headDim, hidden]
    public var output: WeightMatrix        // [hidden, heads * headDim]
    public var mlpNorm: [Float]            // [hidden]
    public var gate: WeightMatrix          // [intermediate, hidden]
    public var up: WeightMatrix            // [intermediate, hidden]
    public var down: WeightMatrix          // [hidden, intermediate]
}

/// All weights of a Llama model, as views into the mapped file (norms are copied to fp32).
public struct LlamaWeights: Sendable {
    public var tokenEmbedding: WeightMatrix  // [vocab, hidden]
    public var layers: [LlamaLayerWeights]
    public var outputNorm: [Float]           // [hidden]
    /// The LM head; the token embedding itself when the checkpoint ties them.
    public var output: WeightMatrix          // [vocab, hidden]
    public var tiedEmbeddings: Bool

    /// Reads GGUF's llama tensor names, checking every shape against `config`.
    public init(gguf: GGUFFile, config c: LlamaConfig) throws(WeightFileError) {
        func matrix(_ name: String, rows: Int, columns: Int) throws(WeightFileError) -> WeightMatrix {
            let info = try gguf.requireTensor(name)
            guard info.dimensions == [columns, rows] else {
                throw WeightFileError(path: gguf.path, problem: .shapeMismatch(tensor: name, expected: [columns, rows], found: info.dimensions))
            }
            let bytes = gguf.data(of: info)
            return WeightMatrix(type: info.type, rows: rows, columns: columns, base: bytes.baseAddress!, owner: gguf)
        }
        func vector(_ name: String, count: Int) throws(WeightFileError) -> WeightMatrix {
            let info = try gguf.requireTensor(name)
            guard info.dimensions == [count] else {
                throw WeightFileError(path: gguf.path, problem: .shapeMismatch(tensor: name, expected: [count], found: info.dimensions))
            }
            return WeightMatrix(type: info.type, rows: 1, columns: count, base: gguf.data(of: info).baseAddress!, owner: gguf)
        }
        try self.init(config: c, names: .gguf, tied: gguf.tensorInfo("output.weight") == nil, matrix: matrix, vector: vector)
    }
}

/// The tensor names of one checkpoint format; a layer's names follow `layerPrefix(l)`.
struct LlamaTensorNames: Sendable {
    var embedding, outputNorm, output: String
    var layerPrefix: @Sendable (Int) -> String
    var attentionNorm, query, key, value, attentionOutput, mlpNorm, gate, up, down: String

    static let gguf = LlamaTensorNames(
        embedding: "token_embd.weight", outputNorm: "output_norm.weight", output: "output.weight",
        layerPrefix: { "blk.\($0)." },
        attentionNorm: "attn_norm.weight", query: "attn_q.weight", key: "attn_k.weight", value: "attn_v.weight",
        attentionOutput: "attn_output.weight", mlpNorm: "ffn_norm.weight", gate: "ffn_gate.weight",
        up: "ffn_up.weight", down: "ffn_down.weight")

    static let huggingFace = LlamaTensorNames(
        embedding: "model.embed_tokens.weight", outputNorm: "model.norm.weight", output: "lm_head.weight",
        layerPrefix: { "model.layers.\($0)." },
        attentionNorm: "input_layernorm.weight", query: "self_attn.q_proj.weight", key: "self_attn.k_proj.weight",
        value: "self_attn.v_proj.weight", attentionOutput: "self_attn.o_proj.weight",
        mlpNorm: "post_attention_layernorm.weight", gate: "mlp.gate_proj.weight", up: "mlp.up_proj.weight",
        down: "mlp.down_proj.weight")
}

extension LlamaWeights {
    /// Reads every tensor by its `names` with the shapes `config` implies: `matrix(name, rows,
    /// columns)` and `vector(name, count)` read and check one tensor. With `tied`, the LM head is
    /// the token embedding. Norm vectors are copied out as fp32.
    init(
        config c: LlamaConfig, names: LlamaTensorNames, tied: Bool,
        matrix: (String, Int, Int) throws(WeightFileError) -> WeightMatrix,
        vector row: (String, Int) throws(WeightFileError) -> WeightMatrix
    ) throws(WeightFileError) {
        func vector(_ name: String, _ count: Int) throws(WeightFileError) -> [Float] {
            let m = try row(name, count)
            var out = [Float](repeating: 0, count: count)
            out.withUnsafeMutableBufferPointer { m.dequantizeRow(0, into: $0.baseAddress!) }
            return out
        }
        let qDim = c.headCount * c.headDimension
        let kvDim = c.kvHeadCount * c.headDimension
        let hidden = c.hiddenSize, ffn = c.intermediateSize
        tokenEmbedding = try matrix(names.embedding, c.vocabularySize, hidden)
        var layers: [LlamaLayerWeights] = []
        for l in 0..<c.layerCount {
            let p = names.layerPrefix(l)
            layers.append(LlamaLayerWeights(
                attentionNorm: try vector(p + names.attentionNorm, hidden),
                query: try matrix(p + names.query, qDim, hidden),
                key: try matrix(p + names.key, kvDim, hidden),
                value: try matrix(p + names.value, kvDim, hidden),
                output: try matrix(p + names.attentionOutput, hidden, qDim),
                mlpNorm: try vector(p + names.mlpNorm, hidden),
                gate: try matrix(p + names.gate, ffn, hidden),
                up: try matrix(p + names.up, ffn, hidden),
                down: try matrix(p + names.down, hidden, ffn)))
        }
        self.layers = layers
        outputNorm = try vector(names.outputNorm, hidden)
        output = tied ? tokenEmbedding : try matrix(names.output, c.vocabularySize, hidden)
        tiedEmbeddings = tied
    }
}

extension LlamaWeights {
    /// Attaches the VNNI integer kernels' packed rows to every layer matrix (`WeightMatrix.packedForVNNI`).
    public mutating func packLayersForVNNI() {
        for l in layers.indices {
            let w = layers[l]
            layers[l].query = w.query.packedForVNNI()
            layers[l].key = w.key.packedForVNNI()
            layers[l].value = w.value.packedForVNNI()
            layers[l].output = w.output.packedForVNNI()
            layers[l].gate = w.gate.packedForVNNI()
            layers[l].up = w.up.packedForVNNI()
            layers[l].down = w.down.packedForVNNI()
        }
    }
}
