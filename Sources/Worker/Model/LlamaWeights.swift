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
        func vector(_ name: String, count: Int) throws(WeightFileError) -> [Float] {
            let info = try gguf.requireTensor(name)
            guard info.dimensions == [count] else {
                throw WeightFileError(path: gguf.path, problem: .shapeMismatch(tensor: name, expected: [count], found: info.dimensions))
            }
            let m = WeightMatrix(type: info.type, rows: 1, columns: count, base: gguf.data(of: info).baseAddress!, owner: gguf)
            var out = [Float](repeating: 0, count: count)
            out.withUnsafeMutableBufferPointer { m.dequantizeRow(0, into: $0.baseAddress!) }
            return out
        }
        let qDim = c.headCount * c.headDimension
        let kvDim = c.kvHeadCount * c.headDimension
        tokenEmbedding = try matrix("token_embd.weight", rows: c.vocabularySize, columns: c.hiddenSize)
        var layers: [LlamaLayerWeights] = []
        for l in 0..<c.layerCount {
            let p = "blk.\(l)."
            layers.append(LlamaLayerWeights(
                attentionNorm: try vector(p + "attn_norm.weight", count: c.hiddenSize),
                query: try matrix(p + "attn_q.weight", rows: qDim, columns: c.hiddenSize),
                key: try matrix(p + "attn_k.weight", rows: kvDim, columns: c.hiddenSize),
                value: try matrix(p + "attn_v.weight", rows: kvDim, columns: c.hiddenSize),
                output: try matrix(p + "attn_output.weight", rows: c.hiddenSize, columns: qDim),
                mlpNorm: try vector(p + "ffn_norm.weight", count: c.hiddenSize),
                gate: try matrix(p + "ffn_gate.weight", rows: c.intermediateSize, columns: c.hiddenSize),
                up: try matrix(p + "ffn_up.weight", rows: c.intermediateSize, columns: c.hiddenSize),
                down: try matrix(p + "ffn_down.weight", rows: c.hiddenSize, columns: c.intermediateSize)))
        }
        self.layers = layers
        outputNorm = try vector("output_norm.weight", count: c.hiddenSize)
        if gguf.tensorInfo("output.weight") != nil {
            output = try matrix("output.weight", rows: c.vocabularySize, columns: c.hiddenSize)
            tiedEmbeddings = false
        } else {
            output = tokenEmbedding
            tiedEmbeddings = true
        }
    }
}
