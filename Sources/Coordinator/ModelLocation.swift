import Foundation
import Worker

/// Where the embedded default model lives and how to find it.
public enum DefaultModel {
    /// File name of the default model inside the cache folder.
    public static let fileName = "SmolLM2-135M-Instruct.Q4_1.gguf"
    /// The cache folder, relative to the repository root (git-ignored; filled by `make setup`).
    public static let cacheFolder = ".cache/models"

    /// The default `--model`: `$MEDUSA_MODEL` if set, else the cached SmolLM2 found by walking up
    /// from the working directory and from the executable's directory.
    public static func resolve() -> String {
        if let env = ProcessInfo.processInfo.environment["MEDUSA_MODEL"], !env.isEmpty { return env }
        var starts = [FileManager.default.currentDirectoryPath]
        if let exe = Bundle.main.executableURL?.deletingLastPathComponent().path { starts.append(exe) }
        if let found = findAbove("\(cacheFolder)/\(fileName)", from: starts) { return found }
        // Not found: name the expected place so the error tells the user what to run.
        return "\(cacheFolder)/\(fileName)"
    }
}

/// The first existing `relativePath` below any folder on the way up from each of `starts` (the
/// working directory by default) to the root, or nil.
public func findAbove(_ relativePath: String, from starts: [String] = [FileManager.default.currentDirectoryPath]) -> String? {
    for start in starts {
        var dir = URL(fileURLWithPath: start).standardizedFileURL
        while true {
            let candidate = dir.appendingPathComponent(relativePath).standardizedFileURL.path
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
            let parent = dir.deletingLastPathComponent()
            if parent.path == dir.path { break }
            dir = parent
        }
    }
    return nil
}

/// What `--model` names: a GGUF file or a Hugging Face checkpoint folder.
public enum ModelSource: Sendable, Equatable {
    case gguf(path: String)
    /// A folder with config.json, model.safetensors (or a sharded index) and tokenizer.json.
    case huggingFace(directory: String)

    /// A directory is a Hugging Face folder; any other path is opened as a GGUF file, so a missing
    /// file is reported by the GGUF reader with its name. A lone .safetensors file is refused
    /// with a pointer to its folder (its config and tokenizer live beside it).
    public init(path: String) throws(WeightFileError) {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
            self = .huggingFace(directory: path)
        } else if path.hasSuffix(".safetensors") || path.hasSuffix(".safetensors.index.json") {
            throw WeightFileError(path: path, problem: .notACheckpoint(
                reason: "give the folder that holds it (with config.json and tokenizer.json), not the file"))
        } else {
            self = .gguf(path: path)
        }
    }
}
