import Foundation

/// Paths of data the tests need from the environment (set by `make test`), with a clear failure
/// when they are missing: set MEDUSA_ALLOW_MISSING_DATA=1 to skip such tests instead.
public enum TestData {
    /// The SmolLM2 GGUF (`$MEDUSA_MODEL`), or nil when absent and skipping is allowed.
    public static func model() throws -> String? {
        try existing("MEDUSA_MODEL", what: "the SmolLM2-135M-Instruct Q4_1 GGUF")
    }

    /// The folder holding llama.cpp's `ggml-vocab-*.gguf` files (`$MEDUSA_VOCAB_DIR`).
    public static func vocabDirectory() throws -> String? {
        try existing("MEDUSA_VOCAB_DIR", what: "llama.cpp's tokenizer conformance files")
    }

    /// The repository root (found from this source file's location).
    public static var repositoryRoot: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    }

    static func existing(_ variable: String, what: String) throws -> String? {
        let env = ProcessInfo.processInfo.environment
        if let path = env[variable], !path.isEmpty, FileManager.default.fileExists(atPath: path) { return path }
        if env["MEDUSA_ALLOW_MISSING_DATA"] == "1" { return nil }
        throw MissingTestData(description: "\(what) not found: set \(variable) (run `make setup`, which fetches it into .cache/, or run the tests through `make test`); set MEDUSA_ALLOW_MISSING_DATA=1 to skip")
    }
}

/// A test's precondition on its environment that does not hold, or a helper process that failed.
public struct MissingTestData: Error, CustomStringConvertible {
    public var description: String
    public init(description: String) { self.description = description }
}
