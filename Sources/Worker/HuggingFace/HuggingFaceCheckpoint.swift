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
        func vector(_ name: String, count: Int) throws(WeightFileError) -> WeightMatrix {
            try st.matrix(name, shape: [count])
        }
        try self.init(config: c, names: .huggingFace, tied: tied, matrix: matrix, vector: vector)
    }
}
