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

    /// `$MEDUSA_MODEL` when set, else the copy `make setup` puts in the repository's `.cache/`;
    /// nil when the file does not exist.
    public static var modelPath: String? {
        located("MEDUSA_MODEL", default: ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    }

    /// `$MEDUSA_VOCAB_DIR` when set, else `.cache/vocab`; nil when the folder does not exist.
    public static var vocabDirectoryPath: String? {
        located("MEDUSA_VOCAB_DIR", default: ".cache/vocab")
    }

    /// Whether tests may skip (rather than fail) when their data is missing.
    public static var allowMissing: Bool {
        ProcessInfo.processInfo.environment["MEDUSA_ALLOW_MISSING_DATA"] == "1"
    }

    static func located(_ variable: String, default relative: String) -> String? {
        let path: String
        if let given = ProcessInfo.processInfo.environment[variable], !given.isEmpty {
            path = given
        } else {
            path = (repositoryRoot as NSString).appendingPathComponent(relative)
        }
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }

    static func existing(_ variable: String, what: String) throws -> String? {
        let path = variable == "MEDUSA_MODEL" ? modelPath : vocabDirectoryPath
        if let path { return path }
        if allowMissing { return nil }
        throw MissingTestData(description: "\(what) not found: set \(variable) (run `make setup`, which fetches it into .cache/, or run the tests through `make test`); set MEDUSA_ALLOW_MISSING_DATA=1 to skip")
    }
}

/// A test's precondition on its environment that does not hold, or a helper process that failed.
public struct MissingTestData: Error, CustomStringConvertible {
    public var description: String
    public init(description: String) { self.description = description }
}

/// Runs a Python script that prints one JSON object.
public enum PythonRunner {
    /// Whether `python3` can import numpy and gguf (checked once).
    public static let hasNumpyAndGGUF: Bool = {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", "import numpy, gguf"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return false }
        process.waitUntilExit()
        return process.terminationStatus == 0
    }()

    public static func run(_ arguments: [String]) throws -> [String: Any] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3"] + arguments
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0,
              let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw MissingTestData(description: "python3 \(arguments.joined(separator: " ")) failed (status \(process.terminationStatus)): \(String(decoding: data, as: UTF8.self))")
        }
        return object
    }
}
