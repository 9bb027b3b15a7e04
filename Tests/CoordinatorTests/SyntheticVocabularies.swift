import Foundation
import Worker
@testable import Coordinator

/// Small GGUF vocabularies written by the tests, so the algorithms are checked on cases worked
/// out by hand (and the error paths on malformed metadata) without any downloaded file.
enum SyntheticVocabularies {
    /// Writes `metadata` as a GGUF file in a fresh temporary directory and opens it.
    static func gguf(_ metadata: [(String, GGUFValue)]) throws -> GGUFFile {
        var writer = GGUFWriter()
        for (key, value) in metadata { writer.set(key, value) }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("medusa-tok-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent("vocab.gguf").path
        try writer.write(to: path)
        return try GGUFFile(path: path)
    }

    /// SentencePiece: <unk> <s> </s>, the 256 byte tokens <0x00>...<0xFF> (ids 3...258), then
    /// the pieces below with their scores, and the user-defined token "<tool>".
    static let spmPieces: [(String, Float)] = [
        ("▁", -20), ("h", -21), ("e", -22), ("l", -23), ("o", -24), ("w", -25), ("r", -26), ("d", -27),
        ("ll", -1), ("llo", -2), ("he", -3), ("hello", -4), ("▁hello", -5), ("▁h", -6),
        ("▁w", -7), ("or", -8), ("▁wor", -9), ("ld", -10), ("▁world", -11),
    ]

    static func spmMetadata() -> [(String, GGUFValue)] {
        var tokens = ["<unk>", "<s>", "</s>"]
        var types: [Int32] = [2, 3, 3]
        var scores: [Float] = [0, 0, 0]
        for b in 0..<256 {
            tokens.append(String(format: "<0x%02X>", b))
            types.append(6)
            scores.append(0)
        }
        for (piece, score) in spmPieces {
            tokens.append(piece)
            types.append(1)
            scores.append(score)
        }
        tokens.append("<tool>")
        types.append(4)
        scores.append(0)
        return [
            ("tokenizer.ggml.model", .string("llama")),
            ("tokenizer.ggml.tokens", .array(.string(tokens))),
            ("tokenizer.ggml.scores", .array(.float32(scores))),
            ("tokenizer.ggml.token_type", .array(.int32(types))),
            ("tokenizer.ggml.bos_token_id", .uint32(1)),
            ("tokenizer.ggml.eos_token_id", .uint32(2)),
            ("tokenizer.ggml.unknown_token_id", .uint32(0)),
        ]
    }

    /// The id of an SPM piece of `spmPieces` or of the byte token for `byte`.
    static func spm(_ piece: String) -> Int32 {
        Int32(259 + (spmPieces.firstIndex { $0.0 == piece } ?? -1000))
    }
    static func spmByte(_ byte: UInt8) -> Int32 { 3 + Int32(byte) }
    static let spmTool: Int32 = 259 + Int32(spmPieces.count)

    /// Byte-level BPE: ids 0...255 are the GPT-2 stand-ins of bytes 0...255, then "aa", "ab",
    /// "abc", "<|end|>" (control) and "<|tool|>" (user-defined). The merge "Ġ x" makes " x" a
    /// symbol that is not a token; nothing merges into "abc".
    static let bpeExtra = ["aa", "ab", "abc", "<|end|>", "<|tool|>"]
    static let bpeMerges = ["a a", "a b", "Ġ x"]

    static func bpeMetadata(pre: String?) -> [(String, GGUFValue)] {
        var tokens = (0..<256).map { b in String(Character(Unicode.Scalar(ByteLevel.codepointOfByte[b]) ?? "?")) }
        var types = [Int32](repeating: 1, count: 256)
        tokens += bpeExtra
        types += [1, 1, 1, 3, 4]
        var metadata: [(String, GGUFValue)] = [
            ("tokenizer.ggml.model", .string("gpt2")),
            ("tokenizer.ggml.tokens", .array(.string(tokens))),
            ("tokenizer.ggml.token_type", .array(.int32(types))),
            ("tokenizer.ggml.merges", .array(.string(bpeMerges))),
        ]
        if let pre { metadata.append(("tokenizer.ggml.pre", .string(pre))) }
        return metadata
    }

    static func bpe(_ text: String) -> Int32 { Int32(256 + (bpeExtra.firstIndex(of: text) ?? -1000)) }
}
