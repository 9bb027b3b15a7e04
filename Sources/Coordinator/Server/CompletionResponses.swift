import Foundation

/// OpenAI's `usage` object.
public struct Usage: Encodable, Sendable, Equatable {
    public var promptTokens: Int
    public var completionTokens: Int

    public init(_ outcome: CompletionOutcome) {
        promptTokens = outcome.promptTokens
        completionTokens = outcome.completionTokens
    }

    enum CodingKeys: String, CodingKey {
        case promptTokens = "prompt_tokens", completionTokens = "completion_tokens", totalTokens = "total_tokens"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(promptTokens, forKey: .promptTokens)
        try c.encode(completionTokens, forKey: .completionTokens)
        try c.encode(promptTokens + completionTokens, forKey: .totalTokens)
    }
}

/// Which endpoint a response belongs to: the object names and the shape of a choice differ.
public enum CompletionKind: Sendable {
    case chat, text

    /// `chatcmpl-...` or `cmpl-...`, 24 random characters after the prefix.
    func newID() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        let suffix = String((0..<24).map { _ in alphabet.randomElement()! })
        return (self == .chat ? "chatcmpl-" : "cmpl-") + suffix
    }

    var objectName: String { self == .chat ? "chat.completion" : "text_completion" }
    var chunkObjectName: String { self == .chat ? "chat.completion.chunk" : "text_completion" }
}

/// One completion's identity, shared by its response or by every chunk of its stream.
public struct CompletionHeader: Sendable {
    public var kind: CompletionKind
    public var id: String
    /// Unix seconds.
    public var created: Int
    public var model: String

    public init(kind: CompletionKind, model: String, id: String? = nil, created: Int? = nil) {
        self.kind = kind
        self.id = id ?? kind.newID()
        self.created = created ?? Int(Date().timeIntervalSince1970)
        self.model = model
    }
}

/// The whole answer of a request without `stream`.
public struct CompletionResponse: Encodable, Sendable {
    public var header: CompletionHeader
    public var text: String
    public var finishReason: FinishReason
    public var usage: Usage

    public init(header: CompletionHeader, text: String, outcome: CompletionOutcome) {
        self.header = header
        self.text = text
        finishReason = outcome.finishReason
        usage = Usage(outcome)
    }

    enum Keys: String, CodingKey {
        case id, object, created, model, choices, usage
        case index, message, text, role, content, logprobs
        case finishReason = "finish_reason", systemFingerprint = "system_fingerprint"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        try c.encode(header.id, forKey: .id)
        try c.encode(header.kind.objectName, forKey: .object)
        try c.encode(header.created, forKey: .created)
        try c.encode(header.model, forKey: .model)
        try c.encodeNil(forKey: .systemFingerprint)
        var choices = c.nestedUnkeyedContainer(forKey: .choices)
        var choice = choices.nestedContainer(keyedBy: Keys.self)
        try choice.encode(0, forKey: .index)
        switch header.kind {
        case .chat:
            var message = choice.nestedContainer(keyedBy: Keys.self, forKey: .message)
            try message.encode("assistant", forKey: .role)
            try message.encode(text, forKey: .content)
        case .text:
            try choice.encode(text, forKey: .text)
        }
        try choice.encodeNil(forKey: .logprobs)
        try choice.encode(finishReason.rawValue, forKey: .finishReason)
        try c.encode(usage, forKey: .usage)
    }
}

/// One server-sent event of a streamed answer.
public struct CompletionChunk: Encodable, Sendable {
    public enum Content: Sendable {
        /// A chat stream's first chunk: the assistant's role, empty content.
        case role
        case text(String)
        /// The last chunk with a choice: no text, the finish reason.
        case finish(FinishReason)
        /// After the finish (with `stream_options.include_usage`): no choices, the token counts.
        case usage(Usage)
    }

    public var header: CompletionHeader
    public var content: Content

    public init(header: CompletionHeader, _ content: Content) {
        self.header = header
        self.content = content
    }

    enum Keys: String, CodingKey {
        case id, object, created, model, choices, usage
        case index, delta, text, role, content, logprobs
        case finishReason = "finish_reason", systemFingerprint = "system_fingerprint"
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        try c.encode(header.id, forKey: .id)
        try c.encode(header.kind.chunkObjectName, forKey: .object)
        try c.encode(header.created, forKey: .created)
        try c.encode(header.model, forKey: .model)
        try c.encodeNil(forKey: .systemFingerprint)
        var choices = c.nestedUnkeyedContainer(forKey: .choices)
        if case .usage(let usage) = content {
            try c.encode(usage, forKey: .usage)
            return
        }
        var choice = choices.nestedContainer(keyedBy: Keys.self)
        try choice.encode(0, forKey: .index)
        let text: String? = if case .text(let t) = content { t } else { nil }
        switch header.kind {
        case .chat:
            var delta = choice.nestedContainer(keyedBy: Keys.self, forKey: .delta)
            if case .role = content {
                try delta.encode("assistant", forKey: .role)
                try delta.encode("", forKey: .content)
            }
            if let text { try delta.encode(text, forKey: .content) }
        case .text:
            try choice.encode(text ?? "", forKey: .text)
        }
        try choice.encodeNil(forKey: .logprobs)
        if case .finish(let reason) = content {
            try choice.encode(reason.rawValue, forKey: .finishReason)
        } else {
            try choice.encodeNil(forKey: .finishReason)
        }
    }

    /// The event's bytes: `data: {json}` and a blank line.
    public func event() throws -> String {
        "data: " + String(decoding: try JSONEncoder.api.encode(self), as: UTF8.self) + "\n\n"
    }

    /// The event that ends every stream.
    public static let done = "data: [DONE]\n\n"
}

extension JSONEncoder {
    /// How every JSON answer is written: compact, keys in a fixed order, slashes unescaped.
    static var api: JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return encoder
    }
}
