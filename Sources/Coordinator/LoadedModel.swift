import Collectives
import Foundation
import Worker

/// A model file opened for generation: weights, tokenizer and chat template.
public final class LoadedModel {
    public let gguf: GGUFFile
    public let model: LlamaModel
    public let tokenizer: Tokenizer
    /// The chat template: the `--chat-template` override, else the one the file's
    /// `tokenizer.chat_template` matches, else nil.
    public let chatTemplate: ChatTemplate?
    /// The system message the file's template inserts when none is given (SmolLM2 has one).
    public let defaultSystemMessage: String?

    /// Opens the file and builds this rank's part of the model (`communicator`: the tensor-parallel
    /// group; by default the group of one).
    public init(
        path: String, contextLength: Int, threads: Int, chatTemplate override: ChatTemplate? = nil,
        communicator: any Communicator = SingleProcessCommunicator()
    ) throws {
        gguf = try GGUFFile(path: path)
        model = try LlamaModel(gguf: gguf, contextLength: contextLength, threads: threads, communicator: communicator)
        tokenizer = try Tokenizer(gguf: gguf)
        guard tokenizer.vocabularySize == model.config.vocabularySize else {
            throw WeightFileError(path: path, problem: .badValue(
                key: "tokenizer.ggml.tokens",
                reason: "\(tokenizer.vocabularySize) tokens but the embedding has \(model.config.vocabularySize) rows"))
        }
        let templateText: String? = if case .string(let t)? = gguf.metadata["tokenizer.chat_template"] { t } else { nil }
        chatTemplate = override ?? templateText.flatMap(ChatTemplate.detect(from:))
        defaultSystemMessage = templateText.flatMap { Coordinator.defaultSystemMessage(inTemplate: $0) }
    }

    /// The prompt text for one user message in the chat template.
    public func chatPrompt(_ messages: [ChatMessage]) throws(ChatTemplateError) -> String {
        guard let chatTemplate else { throw .noTemplate(path: gguf.path) }
        return chatTemplate.render(messages, defaultSystem: defaultSystemMessage)
    }
}

public enum ChatTemplateError: Error, CustomStringConvertible, Sendable {
    case noTemplate(path: String)

    public var description: String {
        switch self {
        case .noTemplate(let path):
            "\(path): no recognised chat template in tokenizer.chat_template; pass --chat-template "
                + ChatTemplate.allCases.map(\.rawValue).joined(separator: "|")
        }
    }
}
