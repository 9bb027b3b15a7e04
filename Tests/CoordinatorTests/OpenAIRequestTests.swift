import Foundation
import Testing
@testable import Coordinator

/// Request bodies of the OpenAI endpoints: what is accepted, and the 4xx error each mistake gets
/// (status, `param`, and a message that names the field).
@Suite struct OpenAIRequestTests {
    func chat(_ json: String) throws(APIError) -> ChatCompletionParameters {
        try ChatCompletionParameters(json: Data(json.utf8))
    }

    func text(_ json: String) throws(APIError) -> TextCompletionParameters {
        try TextCompletionParameters(json: Data(json.utf8))
    }

    /// The error a body gets; fails the test when the body is accepted.
    func chatError(_ json: String, sourceLocation: SourceLocation = #_sourceLocation) -> APIError? {
        do {
            _ = try chat(json)
            Issue.record("accepted: \(json)", sourceLocation: sourceLocation)
            return nil
        } catch {
            return error
        }
    }

    func textError(_ json: String, sourceLocation: SourceLocation = #_sourceLocation) -> APIError? {
        do {
            _ = try text(json)
            Issue.record("accepted: \(json)", sourceLocation: sourceLocation)
            return nil
        } catch {
            return error
        }
    }

    @Test func chatRequestWithEveryOption() throws {
        let p = try chat("""
            {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}],
             "max_tokens": 16, "temperature": 0.5, "top_p": 0.9, "seed": -1, "stop": ["\\n", "END"],
             "stream": true, "stream_options": {"include_usage": true}, "n": 1, "presence_penalty": 0, "user": "x",
             "tools": [], "logprobs": false}
            """)
        #expect(p.messages == [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi there")])
        #expect(p.options.model == "m")
        #expect(p.options.maxTokens == 16)
        #expect(p.options.temperature == 0.5)
        #expect(p.options.topP == 0.9)
        #expect(p.options.seed == UInt64.max)
        #expect(p.options.stop == ["\n", "END"])
        #expect(p.options.stream && p.options.includeUsage)
        #expect(p.options.sampling.topK == 0)
    }

    @Test func openAIDefaults() throws {
        let p = try chat(#"{"model": "m", "messages": [{"role": "developer", "content": "x"}], "max_completion_tokens": 3, "stop": "s"}"#)
        #expect(p.messages == [ChatMessage(role: "system", content: "x")])
        #expect(p.options.maxTokens == 3)
        #expect(p.options.temperature == 1 && p.options.topP == 1)
        #expect(p.options.seed == nil)
        #expect(p.options.stop == ["s"])
        #expect(!p.options.stream)
        // Nulls count as absent; an integral float is an integer.
        let q = try chat(#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 8.0, "temperature": null}"#)
        #expect(q.options.maxTokens == 8 && q.options.temperature == 1)
    }

    @Test func malformedBodies() {
        let bad = chatError(#"{"model": "m", "messages": ["#)
        #expect(bad?.status == 400)
        #expect(bad?.code == "invalid_json")
        #expect(bad?.message.contains("not valid JSON") == true)
        let array = chatError(#"[1, 2]"#)
        #expect(array?.message == "the request body must be a JSON object, got an array")
        #expect(chatError("")?.code == "invalid_json")
    }

    @Test func missingAndWronglyTypedFields() {
        let noMessages = chatError(#"{"model": "m"}"#)
        #expect(noMessages?.param == "messages")
        #expect(noMessages?.message == "missing required parameter 'messages'")
        #expect(chatError(#"{"messages": [{"role": "user", "content": "x"}]}"#)?.param == "model")
        #expect(chatError(#"{"model": "m", "messages": []}"#)?.message == "'messages' must contain at least one message")
        #expect(chatError(#"{"model": "m", "messages": "hi"}"#)?.message == "'messages' must be an array of messages, got a string")
        #expect(chatError(#"{"model": "m", "messages": [{"content": "x"}]}"#)?.param == "messages[0].role")
        #expect(chatError(#"{"model": "m", "messages": [{"role": "user"}]}"#)?.param == "messages[0].content")
        let badRole = chatError(#"{"model": "m", "messages": [{"role": "tool", "content": "x"}]}"#)
        #expect(badRole?.param == "messages[0].role")
        #expect(badRole?.message.contains("got 'tool'") == true)
        let image = chatError(#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}"#)
        #expect(image?.param == "messages[0].content[0]")
        let wrong = chatError(#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": "5"}"#)
        #expect(wrong?.param == "max_tokens")
        #expect(wrong?.message == "'max_tokens' must be an integer, got a string")
        #expect(chatError(#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2.5}"#)?.param == "max_tokens")
        #expect(chatError(#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}"#)?.message
            == "'temperature' must be a number, got a string")
        #expect(chatError(#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": 1}"#)?.param == "stream")
        #expect(chatError(#"{"model": 5, "messages": [{"role": "user", "content": "x"}]}"#)?.param == "model")
        #expect(chatError(#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": [1]}"#)?.message
            == "'stop[0]' must be a string, got an integer")
    }

    @Test func outOfRangeValues() {
        let base = #""model": "m", "messages": [{"role": "user", "content": "x"}]"#
        for (field, value) in [("temperature", "2.5"), ("temperature", "-0.1"), ("top_p", "0"), ("top_p", "1.5"), ("max_tokens", "0"), ("max_tokens", "-3")] {
            let error = chatError("{\(base), \"\(field)\": \(value)}")
            #expect(error?.status == 400)
            #expect(error?.param == field)
            #expect(error?.type == "invalid_request_error")
        }
        // The bounds themselves are allowed.
        #expect(throws: Never.self) { try chat("{\(base), \"temperature\": 2, \"top_p\": 1}") }
        #expect(throws: Never.self) { try chat("{\(base), \"temperature\": 0}") }
    }

    @Test func unsupportedOptionsAreRefusedNotIgnored() {
        let base = #""model": "m", "messages": [{"role": "user", "content": "x"}]"#
        for extra in [#""n": 2"#, #""logprobs": true"#, #""frequency_penalty": 0.5"#, #""logit_bias": {"1": 5}"#,
                      #""tools": [{"type": "function"}]"#, #""response_format": {"type": "json_object"}"#] {
            let error = chatError("{\(base), \(extra)}")
            #expect(error?.code == "unsupported_parameter")
            #expect(error?.message.hasSuffix("is not supported by this server") == true)
        }
        #expect(chatError("{\(base), \"stream_options\": {\"include_usage\": true}}")?.param == "stream_options")
    }

    @Test func textCompletions() throws {
        let p = try text(#"{"model": "m", "prompt": "Once upon", "max_tokens": 4, "temperature": 0}"#)
        #expect(p.prompt == "Once upon" && p.options.maxTokens == 4 && p.options.temperature == 0)
        #expect(try text(#"{"model": "m", "prompt": ["one"]}"#).prompt == "one")
        #expect(textError(#"{"model": "m"}"#)?.param == "prompt")
        #expect(textError(#"{"model": "m", "prompt": ["a", "b"]}"#)?.code == "unsupported_parameter")
        #expect(textError(#"{"model": "m", "prompt": 3}"#)?.message == "'prompt' must be a string or an array of strings, got an integer")
        #expect(textError(#"{"model": "m", "prompt": "x", "echo": true}"#)?.param == "echo")
        #expect(textError(#"{"model": "m", "prompt": "x", "top_p": -1}"#)?.param == "top_p")
    }

    @Test func errorObjectsHaveOpenAIsShape() throws {
        let body = APIError.invalid("'top_p' must be greater than 0", param: "top_p", code: "invalid_value").body()
        let object = try #require(try JSONSerialization.jsonObject(with: body) as? [String: Any])
        let error = try #require(object["error"] as? [String: Any])
        #expect(error["message"] as? String == "'top_p' must be greater than 0")
        #expect(error["type"] as? String == "invalid_request_error")
        #expect(error["param"] as? String == "top_p")
        #expect(error["code"] as? String == "invalid_value")
        // Unset param and code are present as null.
        let bare = try #require(try JSONSerialization.jsonObject(with: APIError(status: 500, message: "x", type: "server_error").body()) as? [String: Any])
        let inner = try #require(bare["error"] as? [String: Any])
        #expect(inner["param"] is NSNull && inner["code"] is NSNull)
    }

    @Test func engineRejectionsMapToStatuses() {
        #expect(APIError(.queueFull(limit: 4), promptParam: "messages").status == 429)
        #expect(APIError(.shuttingDown, promptParam: "messages").status == 503)
        let long = APIError(.promptTooLong(tokens: 3000, context: 2048), promptParam: "prompt")
        #expect(long.status == 400 && long.param == "prompt" && long.code == "context_length_exceeded")
        let tooMany = APIError(.tooManyTokens(prompt: 10, maxTokens: 5000, context: 2048), promptParam: "messages")
        #expect(tooMany.param == "max_tokens" && tooMany.message.contains("2048"))
    }

    @Test func responsesHaveOpenAIsShape() throws {
        let header = CompletionHeader(kind: .chat, model: "m", id: "chatcmpl-1", created: 7)
        let outcome = CompletionOutcome(finishReason: .stop, promptTokens: 5, completionTokens: 2, steps: 2)
        let data = try JSONEncoder().encode(CompletionResponse(header: header, text: "Hi!", outcome: outcome))
        let object = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        #expect(object["object"] as? String == "chat.completion")
        let choice = try #require((object["choices"] as? [[String: Any]])?.first)
        #expect((choice["message"] as? [String: Any])?["content"] as? String == "Hi!")
        #expect(choice["finish_reason"] as? String == "stop")
        #expect((object["usage"] as? [String: Any])?["total_tokens"] as? Int == 7)

        let chunk = try CompletionChunk(header: header, .text("lo")).event()
        #expect(chunk.hasPrefix("data: {") && chunk.hasSuffix("}\n\n"))
        let chunkObject = try #require(try JSONSerialization.jsonObject(with: Data(chunk.dropFirst(6).utf8)) as? [String: Any])
        let delta = try #require(((chunkObject["choices"] as? [[String: Any]])?.first)?["delta"] as? [String: Any])
        #expect(delta["content"] as? String == "lo")
        #expect(((chunkObject["choices"] as? [[String: Any]])?.first)?["finish_reason"] is NSNull)

        let textHeader = CompletionHeader(kind: .text, model: "m")
        #expect(textHeader.id.hasPrefix("cmpl-"))
        let usage = try CompletionChunk(header: textHeader, .usage(Usage(outcome))).event()
        let usageObject = try #require(try JSONSerialization.jsonObject(with: Data(usage.dropFirst(6).utf8)) as? [String: Any])
        #expect((usageObject["choices"] as? [Any])?.isEmpty == true)
        #expect((usageObject["usage"] as? [String: Any])?["completion_tokens"] as? Int == 2)
    }
}
