import Foundation

/// A Hugging Face checkpoint folder opened for inference: `config.json` read into a
/// `LlamaConfig`, and the weights as zero-copy views into the mapped safetensors shards.
public struct HuggingFaceCheckpoint: Sendable {
    public let directory: String
    public let configuration: HuggingFaceConfig
    public let tensors: SafetensorsCheckpoint
    public let weights: LlamaWeights

    public var config: LlamaConfig { configuration.llama }

    public init(directory: String) throws(WeightFileError) {
        self.directory = directory
        let configPath = (directory as NSString).appendingPathComponent(HuggingFaceConfig.fileName)
        guard FileManager.default.fileExists(atPath: configPath) else {
            throw WeightFileError(path: directory, problem: .notACheckpoint(reason: "there is no \(HuggingFaceConfig.fileName)"))
        }
        configuration = try HuggingFaceConfig(path: configPath)
        tensors = try SafetensorsCheckpoint(directory: directory)
        weights = try LlamaWeights(safetensors: tensors, config: configuration.llama, tiedEmbeddings: configuration.tiedEmbeddings)
    }
}

extension LlamaWeights {
    /// Reads Hugging Face's Llama tensor names (`model.embed_tokens.weight`,
    /// `model.layers.N.self_attn.q_proj.weight`, ...), checking every shape against `config`.
    /// Safetensors matrices are [out, in] row-major: our [rows, columns] as they are.
    ///
    /// Q and K rows are in Hugging Face's order, so `config.ropeStyle` must be `.halves` (GGUF
    /// files were permuted for `.adjacentPairs`). With `tiedEmbeddings`, the LM head is the
    /// token embedding and `lm_head.weight`, if present, is ignored (as `transformers` does).
    public init(safetensors st: SafetensorsCheckpoint, config c: LlamaConfig, tiedEmbeddings tied: Bool) throws(WeightFileError) {
        precondition(c.ropeStyle == .halves, "Hugging Face Q/K rows rotate halves")
        func matrix(_ name: String, rows: Int, columns: Int) throws(WeightFileError) -> WeightMatrix {
            try st.matrix(name, shape: [rows, columns])
        }
        func vector(_ name: String, count: Int) throws(WeightFileError) -> [Float] {
            let m = try st.matrix(name, shape: [count])
            var out = [Float](repeating: 0, count: count)
            out.withUnsafeMutableBufferPointer { m.dequantizeRow(0, into: $0.baseAddress!) }
            return out
        }
        let qDim = c.headCount * c.headDimension
        let kvDim = c.kvHeadCount * c.headDimension
        tokenEmbedding = try matrix("model.embed_tokens.weight", rows: c.vocabularySize, columns: c.hiddenSize)
        var layers: [LlamaLayerWeights] = []
        for l in 0..<c.layerCount {
            let p = "model.layers.\(l)."
            layers.append(LlamaLayerWeights(
                attentionNorm: try vector(p + "input_layernorm.weight", count: c.hiddenSize),
                query: try matrix(p + "self_attn.q_proj.weight", rows: qDim, columns: c.hiddenSize),
                key: try matrix(p + "self_attn.k_proj.weight", rows: kvDim, columns: c.hiddenSize),
                value: try matrix(p + "self_attn.v_proj.weight", rows: kvDim, columns: c.hiddenSize),
                output: try matrix(p + "self_attn.o_proj.weight", rows: c.hiddenSize, columns: qDim),
                mlpNorm: try vector(p + "post_attention_layernorm.weight", count: c.hiddenSize),
                gate: try matrix(p + "mlp.gate_proj.weight", rows: c.intermediateSize, columns: c.hiddenSize),
                up: try matrix(p + "mlp.up_proj.weight", rows: c.intermediateSize, columns: c.hiddenSize),
                down: try matrix(p + "mlp.down_proj.weight", rows: c.hiddenSize, columns: c.intermediateSize)))
        }
        self.layers = layers
        outputNorm = try vector("model.norm.weight", count: c.hiddenSize)
        if tied {
            output = tokenEmbedding
        } else {
            output = try matrix("lm_head.weight", rows: c.vocabularySize, columns: c.hiddenSize)
        }
        tiedEmbeddings = tied
    }
}
