import Foundation
import Testing
import Worker
import TestSupport
@testable import Coordinator

/// Files the tests read from outside the repository, found through environment variables.
/// A missing file fails the test with instructions, unless MEDUSA_ALLOW_MISSING_DATA=1, in which
/// case the tests that need it are skipped.
enum TestData {
    static let environment = ProcessInfo.processInfo.environment
    static var allowMissing: Bool { environment["MEDUSA_ALLOW_MISSING_DATA"] == "1" }

    static let vocabHowTo = """
        MEDUSA_VOCAB_DIR must name llama.cpp's models directory (ggml-vocab-*.gguf with their .inp/.out files). \
        `make test` downloads them; by hand: `pip download --no-deps --no-binary :all: llama_cpp_python==0.3.36`, \
        unpack it and set MEDUSA_VOCAB_DIR=<unpacked>/vendor/llama.cpp/models. \
        Set MEDUSA_ALLOW_MISSING_DATA=1 to skip these tests instead.
        """
    static let modelHowTo = """
        MEDUSA_MODEL must name SmolLM2-135M-Instruct in GGUF form (e.g. SmolLM2-135M-Instruct.Q4_1.gguf); \
        `make test` downloads it. Set MEDUSA_ALLOW_MISSING_DATA=1 to skip these tests instead.
        """

    /// `ggml-vocab-<name>.gguf` in `$MEDUSA_VOCAB_DIR` (default `.cache/vocab`), if it exists.
    static func vocabPath(_ name: String) -> String? {
        guard let dir = TestSupport.TestData.vocabDirectoryPath else { return nil }
        let path = (dir as NSString).appendingPathComponent("ggml-vocab-\(name).gguf")
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }

    /// `$MEDUSA_MODEL` (default: the copy in `.cache/models`), if it exists.
    static var modelPath: String? { TestSupport.TestData.modelPath }

    struct Missing: Error, CustomStringConvertible {
        var description: String
    }

    /// Skips the current test (MEDUSA_ALLOW_MISSING_DATA=1) or fails it with `message`.
    static func missing(_ message: String) throws -> Never {
        if allowMissing {
            #if compiler(>=6.3)
            try Test.cancel("skipped: \(message)")
            #else
            throw Missing(description: "skipped (no cancellation before Swift 6.3): \(message)")
            #endif
        }
        throw Missing(description: message)
    }

    static func requireVocab(_ name: String) throws -> String {
        guard let path = vocabPath(name) else { try missing("ggml-vocab-\(name).gguf not found. " + vocabHowTo) }
        return path
    }

    static func requireModel() throws -> String {
        guard let path = modelPath else { try missing("SmolLM2 model not found. " + modelHowTo) }
        return path
    }

    /// "smollm2" is the model named by MEDUSA_MODEL; any other name is `ggml-vocab-<name>.gguf`.
    static func requireTokenizer(_ name: String) throws -> Tokenizer {
        try tokenizer(path: name == "smollm2" ? requireModel() : requireVocab(name))
    }

    /// Tokenizers are expensive to build (the Llama 3 vocabulary has 280k merges); build each once.
    private static let cache = TokenizerCache()

    static func tokenizer(path: String) throws -> Tokenizer {
        try cache.tokenizer(path: path)
    }
}

private final class TokenizerCache: @unchecked Sendable {
    // Guarded by `lock`.
    private var tokenizers: [String: Tokenizer] = [:]
    private let lock = NSLock()

    func tokenizer(path: String) throws -> Tokenizer {
        lock.lock()
        defer { lock.unlock() }
        if let t = tokenizers[path] { return t }
        let t = try Tokenizer(gguf: GGUFFile(path: path))
        tokenizers[path] = t
        return t
    }
}
