import Collectives
import Foundation
import Worker

/// A model opened for generation: weights, tokenizer and chat template, from a GGUF file or a
/// Hugging Face checkpoint folder (see `ModelSource`).
public final class LoadedModel {
    /// The `--model` path: a GGUF file or a Hugging Face folder.
    public let path: String
    public let model: LlamaModel
    public let tokenizer: Tokenizer
    /// The chat template: the `--chat-template` override, else the one the model's template text
    /// (`tokenizer.chat_template`, or tokenizer_config.json's `chat_template`) matches, else nil.
    public let chatTemplate: ChatTemplate?
    /// The system message the model's template inserts when none is given (SmolLM2 has one).
    public let defaultSystemMessage: String?

    /// Opens the model and builds this rank's part of it (`communicator`: the tensor-parallel
    /// group; by default the group of one).
    /// `sequences`: how many sequences may share a step (a server's batch), each with its own cache.
    /// `matmulInputs`, `kvCacheType`: see `LlamaModel`.
    public init(
        path: String, contextLength: Int, threads: Int, sequences: Int = 1, chatTemplate override: ChatTemplate? = nil,
        communicator: any Communicator = SingleProcessCommunicator(), matmulInputs: MatMulInputs = .int16,
        kvCacheType: KVCacheType = .f16
    ) throws {
        self.path = path
        let tokens: (file: String, key: String)
        switch try ModelSource(path: path) {
        case .gguf(let file):
            let gguf = try GGUFFile(path: file)
            model = try LlamaModel(gguf: gguf, contextLength: contextLength, threads: threads, sequences: sequences,
                                   communicator: communicator, matmulInputs: matmulInputs, kvCacheType: kvCacheType)
            tokenizer = try Tokenizer(gguf: gguf)
            tokens = (file, "tokenizer.ggml.tokens")
        case .huggingFace(let directory):
            let checkpoint = try HuggingFaceCheckpoint(directory: directory)
            model = try LlamaModel(
                config: checkpoint.config, weights: checkpoint.weights, contextLength: contextLength, threads: threads,
                sequences: sequences, communicator: communicator, matmulInputs: matmulInputs, kvCacheType: kvCacheType)
            tokenizer = try Tokenizer(huggingFaceDirectory: directory)
            tokens = ((directory as NSString).appendingPathComponent("tokenizer.json"), "model.vocab")
        }
        guard tokenizer.vocabularySize == model.config.vocabularySize else {
            throw WeightFileError(path: tokens.file, problem: .badValue(
                key: tokens.key,
                reason: "\(tokenizer.vocabularySize) tokens but the embedding has \(model.config.vocabularySize) rows"))
        }
        let templateText = tokenizer.chatTemplateText
        chatTemplate = override ?? templateText.flatMap(ChatTemplate.detect(from:))
        defaultSystemMessage = templateText.flatMap { Coordinator.defaultSystemMessage(inTemplate: $0) }
    }

    /// The prompt text for one user message in the chat template.
    public func chatPrompt(_ messages: [ChatMessage]) throws(ChatTemplateError) -> String {
        guard let chatTemplate else { throw .noTemplate(path: path) }
        return chatTemplate.render(messages, defaultSystem: defaultSystemMessage)
    }

    /// The tokens of one user message: in the chat template when the model has one, else the raw
    /// text (benchmarks, evaluation and training prompts run on models with or without a template).
    public func userMessageTokens(_ text: String) -> [Int32] {
        let prompt = chatTemplate.map { $0.render([ChatMessage(role: "user", content: text)], defaultSystem: defaultSystemMessage) } ?? text
        return tokenizer.encode(prompt, addSpecial: true, parseSpecial: true)
    }
}

public enum ChatTemplateError: Error, CustomStringConvertible, Sendable {
    case noTemplate(path: String)

    public var description: String {
        switch self {
        case .noTemplate(let path):
            "\(path): no recognised chat template (tokenizer.chat_template, or chat_template in tokenizer_config.json); pass --chat-template "
                + ChatTemplate.allCases.map(\.rawValue).joined(separator: "|")
        }
    }
}

extension Tokenizer {
    /// The tokenizer of a GGUF file or a Hugging Face folder, without loading the weights.
    public convenience init(model path: String) throws {
        switch try ModelSource(path: path) {
        case .gguf(let file): try self.init(gguf: GGUFFile(path: file))
        case .huggingFace(let directory): try self.init(huggingFaceDirectory: directory)
        }
    }
}
