import Crypto
import Foundation
import Medusa
#if canImport(Glibc)
import Glibc
#endif
import Worker

/// Self-distillation data for Medusa heads (Medusa-1): the frozen backbone answers prompts, and
/// each answer token is stored with the final-normed hidden state whose logits chose it. Head k
/// (0-based) at row j learns the token k + 1 places after row j's own.
///
/// On disk, in one folder, appended one answer at a time so an interrupted run resumes:
/// `meta.json` (what made the data: model, prompts, limits; checked on reopening), `hidden.f32`
/// ([rows, hidden] little-endian fp32), `tokens.i32` ([rows]), and `answers.jsonl` (one line per
/// finished answer: prompt index, first row, row count). Rows past the last listed answer (an
/// append cut short) are dropped on reopening.
public final class DistillationSet {
    public struct Answer: Codable, Sendable, Equatable {
        public var prompt: Int
        /// Which of the prompt's answers this is: 0 is made at the provenance's `temperature`,
        /// the others are sampled at its `extraTemperature`.
        public var variant: Int
        public var start: Int
        public var count: Int

        public init(prompt: Int, variant: Int = 0, start: Int, count: Int) {
            self.prompt = prompt
            self.variant = variant
            self.start = start
            self.count = count
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            prompt = try c.decode(Int.self, forKey: .prompt)
            variant = try c.decodeIfPresent(Int.self, forKey: .variant) ?? 0
            start = try c.decode(Int.self, forKey: .start)
            count = try c.decode(Int.self, forKey: .count)
        }
    }

    /// One answer to make or already made: a prompt and which of its answers.
    public struct AnswerKey: Hashable, Sendable {
        public var prompt: Int
        public var variant: Int
        public init(prompt: Int, variant: Int) {
            self.prompt = prompt
            self.variant = variant
        }
    }

    /// What made the data; reopening with different settings is an error.
    public struct Provenance: Codable, Sendable, Equatable {
        public var model: String
        public var modelSHA256: String
        public var hiddenSize: Int
        public var vocabularySize: Int
        public var promptsSHA256: String
        public var maxTokens: Int
        public var temperature: Float
        /// The temperature of every answer after a prompt's first.
        public var extraTemperature: Float
        public var seed: UInt64

        public init(model: String, modelSHA256: String, hiddenSize: Int, vocabularySize: Int, promptsSHA256: String,
                    maxTokens: Int, temperature: Float, extraTemperature: Float = 0.7, seed: UInt64) {
            self.model = model
            self.modelSHA256 = modelSHA256
            self.hiddenSize = hiddenSize
            self.vocabularySize = vocabularySize
            self.promptsSHA256 = promptsSHA256
            self.maxTokens = maxTokens
            self.temperature = temperature
            self.extraTemperature = extraTemperature
            self.seed = seed
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            model = try c.decode(String.self, forKey: .model)
            modelSHA256 = try c.decode(String.self, forKey: .modelSHA256)
            hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
            vocabularySize = try c.decode(Int.self, forKey: .vocabularySize)
            promptsSHA256 = try c.decode(String.self, forKey: .promptsSHA256)
            maxTokens = try c.decode(Int.self, forKey: .maxTokens)
            temperature = try c.decode(Float.self, forKey: .temperature)
            // Data from before several answers per prompt has only first answers.
            extraTemperature = try c.decodeIfPresent(Float.self, forKey: .extraTemperature) ?? 0.7
            seed = try c.decode(UInt64.self, forKey: .seed)
        }

        enum CodingKeys: String, CodingKey {
            case model, modelSHA256 = "model_sha256", hiddenSize = "hidden_size", vocabularySize = "vocab_size"
            case promptsSHA256 = "prompts_sha256", maxTokens = "max_tokens", temperature
            case extraTemperature = "extra_temperature", seed
        }
    }

    public let directory: String
    public let provenance: Provenance
    /// An exclusive lock on the folder's `lock` file, held while this object lives.
    private let lock: Int32
    public private(set) var answers: [Answer]
    /// Rows stored so far.
    public var rowCount: Int { answers.last.map { $0.start + $0.count } ?? 0 }

    private var metaPath: String { directory + "/meta.json" }
    private var hiddenPath: String { directory + "/hidden.f32" }
    private var tokensPath: String { directory + "/tokens.i32" }
    private var answersPath: String { directory + "/answers.jsonl" }

    /// Opens the data in `directory`, creating it when absent. Existing data must have the same
    /// provenance.
    public init(directory: String, provenance: Provenance) throws {
        self.directory = directory
        self.provenance = provenance
        let fm = FileManager.default
        try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
        // Two writers appending to the same files would interleave their answers.
        lock = open(directory + "/lock", O_CREAT | O_RDWR, 0o644)
        guard lock >= 0 else { throw DistillationError("cannot create \(directory)/lock") }
        guard flock(lock, LOCK_EX | LOCK_NB) == 0 else {
            close(lock)
            throw DistillationError("\(directory) is in use by another process (train-heads running?)")
        }
        answers = []
        // A failed init runs no deinit: release the lock here.
        do {
            if let data = fm.contents(atPath: directory + "/meta.json") {
                let existing: Provenance
                do { existing = try JSONDecoder().decode(Provenance.self, from: data) } catch {
                    throw DistillationError("\(directory)/meta.json is not distillation metadata (\(error)); delete the folder to start over")
                }
                guard existing == provenance else {
                    throw DistillationError(
                        "\(directory) holds data made with other settings (\(existing.model), \(existing.maxTokens) tokens, "
                            + "temperature \(existing.temperature), extra temperature \(existing.extraTemperature), seed \(existing.seed)); "
                            + "delete it or choose another folder")
                }
            } else {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
                try encoder.encode(provenance).write(to: URL(fileURLWithPath: directory + "/meta.json"), options: .atomic)
            }
            if let data = fm.contents(atPath: directory + "/answers.jsonl") {
                let lines = String(decoding: data, as: UTF8.self).split(separator: "\n")
                for (i, line) in lines.enumerated() {
                    guard let answer = try? JSONDecoder().decode(Answer.self, from: Data(line.utf8)),
                          answer.start == rowCount, answer.count > 0 else {
                        // Only the last line can be torn (an interrupted append); it is dropped.
                        guard i == lines.count - 1 else {
                            throw DistillationError("\(answersPath): line \(i + 1) is damaged; delete the folder to start over")
                        }
                        break
                    }
                    answers.append(answer)
                }
            }
            // Keep exactly the rows the listed answers cover.
            try Self.truncate(hiddenPath, to: rowCount * provenance.hiddenSize * 4)
            try Self.truncate(tokensPath, to: rowCount * 4)
            try rewriteAnswers()
        } catch {
            close(lock)
            throw error
        }
    }

    deinit { close(lock) }

    /// The answers already made.
    public var answered: Set<AnswerKey> { Set(answers.map { AnswerKey(prompt: $0.prompt, variant: $0.variant) }) }

    /// Appends one answer: `tokens[j]` was chosen from the logits of `hidden` row j.
    public func append(prompt: Int, variant: Int = 0, hidden: [Float], tokens: [Int32]) throws {
        precondition(hidden.count == tokens.count * provenance.hiddenSize)
        guard !tokens.isEmpty else { return }
        try Self.append(hidden.withUnsafeBytes { Data($0) }, to: hiddenPath)
        try Self.append(tokens.withUnsafeBytes { Data($0) }, to: tokensPath)
        let answer = Answer(prompt: prompt, variant: variant, start: rowCount, count: tokens.count)
        var line = try JSONEncoder().encode(answer)
        line.append(UInt8(ascii: "\n"))
        try Self.append(line, to: answersPath)
        answers.append(answer)
    }

    /// Every row: hidden states [rows, hidden] and each row's token.
    public func load() throws -> (hidden: [Float], tokens: [Int32]) {
        let rows = rowCount, h = provenance.hiddenSize
        let hiddenData = try Self.read(hiddenPath, bytes: rows * h * 4)
        let tokenData = try Self.read(tokensPath, bytes: rows * 4)
        let hidden = hiddenData.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        let tokens = tokenData.withUnsafeBytes { Array($0.bindMemory(to: Int32.self)) }
        if let bad = tokens.first(where: { $0 < 0 || Int($0) >= provenance.vocabularySize }) {
            throw DistillationError("\(tokensPath) holds token \(bad), outside the vocabulary of \(provenance.vocabularySize)")
        }
        return (hidden, tokens)
    }

    /// Head k's target for every row (k = 0..<heads): the token k + 1 places after the row's own
    /// within the same answer, or -1 past its end.
    public func targets(tokens: [Int32], heads: Int) -> [[Int32]] {
        (0..<heads).map { k in
            var t = [Int32](repeating: -1, count: tokens.count)
            for a in answers {
                for j in 0..<a.count where j + k + 1 < a.count { t[a.start + j] = tokens[a.start + j + k + 1] }
            }
            return t
        }
    }

    private func rewriteAnswers() throws {
        var text = Data()
        let encoder = JSONEncoder()
        for a in answers {
            text.append(try encoder.encode(a))
            text.append(UInt8(ascii: "\n"))
        }
        try text.write(to: URL(fileURLWithPath: answersPath), options: .atomic)
    }

    private static func append(_ data: Data, to path: String) throws {
        if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        guard let handle = FileHandle(forWritingAtPath: path) else { throw DistillationError("cannot write \(path)") }
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: data)
    }

    private static func truncate(_ path: String, to bytes: Int) throws {
        if !FileManager.default.fileExists(atPath: path) { _ = FileManager.default.createFile(atPath: path, contents: nil) }
        let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.intValue ?? 0
        guard size >= bytes else { throw DistillationError("\(path) is \(size) bytes, shorter than its \(bytes) listed; delete the folder to start over") }
        guard size > bytes, let handle = FileHandle(forWritingAtPath: path) else { return }
        defer { try? handle.close() }
        try handle.truncate(atOffset: UInt64(bytes))
    }

    private static func read(_ path: String, bytes: Int) throws -> Data {
        guard let data = FileManager.default.contents(atPath: path), data.count >= bytes else {
            throw DistillationError("\(path) is missing or shorter than \(bytes) bytes")
        }
        return data.prefix(bytes)
    }
}

public struct DistillationError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

extension Generator {
    /// Answers `prompt` like `generate` and returns each generated token with the final-normed
    /// hidden state whose logits chose it (rows of `model.config.hiddenSize`).
    public func generateWithHiddenStates(
        prompt: [Int32], maxTokens: Int, sampler: inout Sampler, stopAt isEndOfGeneration: (Int32) -> Bool
    ) throws(GenerationError) -> (tokens: [Int32], hidden: [Float], finish: FinishReason) {
        var hidden: [Float] = []
        var tokens: [Int32] = []
        var endToken: Int32?
        let result = try generate(
            prompt: prompt, maxTokens: maxTokens, sampler: &sampler,
            stopAt: { token in
                guard isEndOfGeneration(token) else { return false }
                endToken = token
                return true
            },
            onToken: { token in
                hidden += lastHidden
                tokens.append(token)
                return true
            })
        // The end-of-generation token is data too: the heads should learn where answers end.
        if let endToken {
            hidden += lastHidden
            tokens.append(endToken)
        }
        return (tokens, hidden, result.finishReason)
    }
}

/// The lowercase hex SHA-256 of a file, read in chunks.
public func sha256Hex(ofFile path: String) throws -> String {
    try sha256Hex(ofFiles: [path])
}

/// The lowercase hex SHA-256 of several files' bytes, one after the other.
public func sha256Hex(ofFiles paths: [String]) throws -> String {
    var hasher = SHA256()
    for path in paths {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw DistillationError("cannot read \(path)") }
        defer { try? handle.close() }
        while let chunk = try handle.read(upToCount: 8 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
    }
    return hasher.finalize().map { String(format: "%02x", $0) }.joined()
}
