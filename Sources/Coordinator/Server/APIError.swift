import Foundation

/// An error answered in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, so that
/// OpenAI's client libraries raise their usual exceptions (`BadRequestError`, `RateLimitError`, ...)
/// with our message in them.
public struct APIError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The HTTP status code.
    public var status: Int
    public var message: String
    /// OpenAI's error family: `invalid_request_error` for everything the client can fix.
    public var type: String
    /// The request field at fault, when one is.
    public var param: String?
    /// A stable machine-readable code, when there is one.
    public var code: String?

    public init(status: Int, message: String, type: String = "invalid_request_error", param: String? = nil, code: String? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
    }

    public var description: String { "\(status) \(type): \(message)" }

    /// 400: the request is wrong; `param` names the field.
    public static func invalid(_ message: String, param: String?, code: String? = nil) -> APIError {
        APIError(status: 400, message: message, param: param, code: code)
    }

    public static func missing(_ param: String) -> APIError {
        invalid("missing required parameter '\(param)'", param: param, code: "missing_required_parameter")
    }

    /// 400: a field this server does not implement was given a value that changes the answer.
    public static func unsupported(_ param: String, _ what: String) -> APIError {
        invalid("\(what) is not supported by this server", param: param, code: "unsupported_parameter")
    }

    /// The JSON body: `{"error": {...}}`, with `param` and `code` always present (null when unset)
    /// as in OpenAI's answers.
    public func body() -> Data {
        var object: [String: Any] = ["message": message, "type": type]
        object["param"] = param ?? NSNull()
        object["code"] = code ?? NSNull()
        // Serialising strings and nulls cannot fail.
        return (try? JSONSerialization.data(withJSONObject: ["error": object], options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
    }
}

extension APIError {
    /// The answer to a request the engine refused; `promptParam` is the field that held the prompt
    /// (`messages` or `prompt`).
    public init(_ rejection: EngineRejection, promptParam: String) {
        switch rejection {
        case .emptyPrompt:
            self = .invalid("the prompt is empty (it encodes to no tokens)", param: promptParam)
        case .promptTooLong:
            self = .invalid(rejection.description, param: promptParam, code: "context_length_exceeded")
        case .tooManyTokens:
            self = .invalid(rejection.description, param: "max_tokens", code: "context_length_exceeded")
        case .badMaxTokens:
            self = .invalid(rejection.description, param: "max_tokens")
        case .queueFull:
            self = APIError(status: 429, message: rejection.description, type: "rate_limit_exceeded", code: "queue_full")
        case .shuttingDown:
            self = APIError(status: 503, message: "\(rejection.description); retry on another server or later",
                            type: "server_error", code: "shutting_down")
        }
    }
}
