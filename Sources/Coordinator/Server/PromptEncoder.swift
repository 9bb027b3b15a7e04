import Foundation

/// Turns a request's messages or prompt text into the engine's token ids, on any thread.
///
/// The HTTP handlers encode prompts concurrently while the engine thread decodes; this holds only
/// the immutable, Sendable parts of a `LoadedModel` (its tokenizer and chat template), never the
/// model itself, which belongs to the engine thread.
public struct PromptEncoder: Sendable {
    public let tokenizer: Tokenizer
    public let chatTemplate: ChatTemplate?
    public let defaultSystemMessage: String?
    /// The model's path, for the error a chat request gets when the model has no template.
    public let modelPath: String

    public init(_ loaded: LoadedModel) {
        tokenizer = loaded.tokenizer
        chatTemplate = loaded.chatTemplate
        defaultSystemMessage = loaded.defaultSystemMessage
        modelPath = loaded.path
    }

    /// The conversation in the model's chat template, ending with the opening of the assistant's
    /// turn, as tokens (BOS added when the model wants it). Special-token texts are recognised in
    /// the template's markup only: a message's content is text, so `<|im_end|>` written in it is
    /// not the end of a turn (as OpenAI's API behaves).
    public func chat(_ messages: [ChatMessage]) throws(APIError) -> [Int32] {
        guard let chatTemplate else {
            throw .invalid(
                "\(ChatTemplateError.noTemplate(path: modelPath)) when starting the server; or send raw prompts to /v1/completions",
                param: "messages", code: "no_chat_template")
        }
        return tokenizer.encode(chatTemplate.parts(messages, defaultSystem: defaultSystemMessage), addSpecial: true)
    }

    /// Raw prompt text as tokens, encoded as `generate --prompt` does: special-token texts in it
    /// are special tokens (a raw prompt is the client's whole input, markup included).
    public func text(_ prompt: String) -> [Int32] {
        tokenizer.encode(prompt, addSpecial: true, parseSpecial: true)
    }
}
