import Foundation
import Medusa
import Worker

/// The options `/v1/chat/completions` and `/v1/completions` share, checked as OpenAI checks them.
public struct GenerationOptions: Sendable, Equatable {
    public var model: String
    /// nil: until the end of generation or until the context is full (OpenAI's default).
    public var maxTokens: Int?
    /// 0...2; OpenAI's default is 1.
    public var temperature: Double = 1
    /// (0, 1]; OpenAI's default is 1.
    public var topP: Double = 1
    /// nil: a fresh random seed (sampled answers differ between requests, as OpenAI's do).
    public var seed: UInt64?
    public var stop: [String] = []
    public var stream = false
    /// `stream_options.include_usage`: a last chunk with the token counts and no choices.
    public var includeUsage = false

    /// OpenAI allows 4; llama.cpp's server any number. Enough for every client seen, bounded.
    static let maxStopStrings = 16

    /// Reads the shared fields of a request body.
    init(_ fields: Fields, maxTokensKeys: [String]) throws(APIError) {
        guard let model = try fields.string("model") else { throw .missing("model") }
        self.model = model
        for key in maxTokensKeys {
            guard let m = try fields.integer(key) else { continue }
            guard m >= 1 else { throw .invalid("'\(key)' must be at least 1, got \(m)", param: key, code: "invalid_value") }
            maxTokens = m
        }
        if let t = try fields.number("temperature") {
            guard t >= 0, t <= 2 else {
                throw .invalid("'temperature' must be between 0 and 2, got \(t)", param: "temperature", code: "invalid_value")
            }
            temperature = t
        }
        if let p = try fields.number("top_p") {
            guard p > 0, p <= 1 else {
                throw .invalid("'top_p' must be greater than 0 and at most 1, got \(p)", param: "top_p", code: "invalid_value")
            }
            topP = p
        }
        seed = try fields.integer("seed").map { UInt64(bitPattern: Int64($0)) }
        stop = try fields.strings("stop") ?? []
        // Every generated token is checked against every stop string.
        guard stop.count <= Self.maxStopStrings else {
            throw .invalid("'stop' may hold at most \(Self.maxStopStrings) strings, got \(stop.count)", param: "stop", code: "invalid_value")
        }
        stream = try fields.bool("stream") ?? false
        if let options = try fields.object("stream_options") {
            guard stream else {
                throw .invalid("'stream_options' is only allowed when 'stream' is true", param: "stream_options", code: "invalid_value")
            }
            includeUsage = try options.bool("include_usage") ?? false
        }
        if let n = try fields.integer("n"), n != 1 { throw .unsupported("n", "n = \(n) (more than one choice per request)") }
        for penalty in ["presence_penalty", "frequency_penalty"] {
            if let value = try fields.number(penalty), value != 0 { throw .unsupported(penalty, "'\(penalty)' other than 0") }
        }
        if fields.isSet("logit_bias") { throw .unsupported("logit_bias", "'logit_bias'") }
    }

    /// The engine's sampling settings: OpenAI has no top-k, so every token stays a candidate.
    public var sampling: SamplingParameters {
        SamplingParameters(temperature: Float(temperature), topK: 0, topP: Float(topP))
    }
}

/// A `/v1/chat/completions` request.
public struct ChatCompletionParameters: Sendable, Equatable {
    public var options: GenerationOptions
    public var messages: [ChatMessage]

    /// Roles this server renders; OpenAI's newer `developer` role is its `system` role.
    static let roles = ["system": "system", "developer": "system", "user": "user", "assistant": "assistant"]

    /// Parses and checks a request body; every problem is a 400 naming the field.
    public init(json data: Data) throws(APIError) {
        let fields = Fields(try JSONValue.requestObject(data))
        guard let value = fields["messages"] else { throw .missing("messages") }
        guard case .array(let list) = value else { throw fields.wrongType("messages", "an array of messages", got: value) }
        guard !list.isEmpty else {
            throw .invalid("'messages' must contain at least one message", param: "messages", code: "empty_array")
        }
        messages = []
        for (i, item) in list.enumerated() {
            let path = "messages[\(i)]"
            guard case .object(let object) = item else {
                throw .invalid("'\(path)' must be an object with 'role' and 'content', got \(item.typeName)", param: path, code: "invalid_type")
            }
            messages.append(try Self.message(Fields(object, path: path + ".")))
        }
        options = try GenerationOptions(fields, maxTokensKeys: ["max_tokens", "max_completion_tokens"])
        if try fields.bool("logprobs") == true { throw .unsupported("logprobs", "'logprobs'") }
        if fields.isSet("top_logprobs") { throw .unsupported("top_logprobs", "'top_logprobs'") }
        for key in ["tools", "functions"] where fields.isSet(key) { throw .unsupported(key, "tool calling ('\(key)')") }
        if let format = try fields.object("response_format"), let type = try format.string("type"), type != "text" {
            throw .unsupported("response_format", "response_format \(type.quoted())")
        }
    }

    private static func message(_ fields: Fields) throws(APIError) -> ChatMessage {
        guard let role = try fields.string("role") else { throw .missing(fields.name("role")) }
        guard let rendered = roles[role] else {
            throw .invalid("'\(fields.name("role"))' must be system, developer, user or assistant, got \(role.quoted()) (this server has no tool calling)",
                           param: fields.name("role"), code: "invalid_value")
        }
        guard let value = fields["content"] else { throw .missing(fields.name("content")) }
        switch value {
        case .string(let text):
            return ChatMessage(role: rendered, content: text)
        case .array(let parts):
            // Content parts: only text ones; their texts are joined, as OpenAI does.
            var text = ""
            for (i, part) in parts.enumerated() {
                let name = fields.name("content") + "[\(i)]"
                guard case .object(let object) = part else {
                    throw .invalid("'\(name)' must be a content part object, got \(part.typeName)", param: name, code: "invalid_type")
                }
                let partFields = Fields(object, path: name + ".")
                let type = try partFields.string("type")
                guard type == "text" else {
                    throw .unsupported(name, "content part type \((type ?? "none").quoted()) (only text parts)")
                }
                guard let partText = try partFields.string("text") else { throw .missing(partFields.name("text")) }
                text += partText
            }
            return ChatMessage(role: rendered, content: text)
        default:
            throw fields.wrongType("content", "a string or an array of text parts", got: value)
        }
    }
}

/// A `/v1/completions` request: raw prompt text, no chat template.
public struct TextCompletionParameters: Sendable, Equatable {
    public var options: GenerationOptions
    public var prompt: String

    public init(json data: Data) throws(APIError) {
        let fields = Fields(try JSONValue.requestObject(data))
        guard let prompts = try fields.strings("prompt") else { throw .missing("prompt") }
        guard prompts.count == 1 else {
            throw .unsupported("prompt", "a batch of \(prompts.count) prompts in one request (send one prompt per request)")
        }
        prompt = prompts[0]
        options = try GenerationOptions(fields, maxTokensKeys: ["max_tokens"])
        if try fields.bool("echo") == true { throw .unsupported("echo", "'echo'") }
        if fields.isSet("suffix") { throw .unsupported("suffix", "'suffix'") }
        if fields.isSet("logprobs") { throw .unsupported("logprobs", "'logprobs'") }
        if let bestOf = try fields.integer("best_of"), bestOf != 1 { throw .unsupported("best_of", "best_of = \(bestOf)") }
    }
}
