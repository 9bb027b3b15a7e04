import Foundation
import Hummingbird
import Logging
import NIOCore
import NIOHTTP1
import ServiceLifecycle
import Worker

/// Where and how the server listens.
public struct ServerConfiguration: Sendable {
    public var host: String
    /// 0: any free port (the bound one is returned by `start`).
    public var port: Int
    /// When set, `/v1/...` requests need `Authorization: Bearer <apiKey>`.
    public var apiKey: String?
    /// The one model name requests must give (`model`), and `/v1/models` lists.
    public var modelID: String
    /// Larger request bodies get 413.
    public var maxBodyBytes: Int
    /// Seconds a client has to send a request's headers, and then its body (else 408), and that
    /// a connection may stay idle between requests; answers being written are never cut.
    public var timeout: Double

    public init(host: String = "127.0.0.1", port: Int = 8080, apiKey: String? = nil, modelID: String,
                maxBodyBytes: Int = 4 << 20, timeout: Double = 30) {
        self.host = host
        self.port = port
        self.apiKey = apiKey
        self.modelID = modelID
        self.maxBodyBytes = maxBodyBytes
        self.timeout = timeout
    }
}

/// OpenAI's HTTP API on rank 0, in front of a `BatchEngine`:
///
/// - `POST /v1/chat/completions`, `POST /v1/completions`: OpenAI's request and response shapes,
///   server-sent events with `stream: true`;
/// - `GET /v1/models` (and `/v1/models/{id}`), `GET /health` (503 until every rank has loaded and
///   once shutdown began), `GET /metrics` (Prometheus text format).
///
/// Hummingbird runs on SwiftNIO's event loops and Swift's task pool; the engine runs on the
/// caller's thread (MPI's), so `start` returns once the port is bound and the caller then blocks in
/// `BatchEngine.run`. Every error is answered as an OpenAI error object; one request's failure
/// never affects another's.
public final class OpenAIServer: Sendable {
    public let configuration: ServerConfiguration
    let engine: BatchEngine
    let prompts: PromptEncoder
    let metricsExport: PrometheusMetrics?
    /// When the server started, in Unix seconds (`created` of the model object).
    let startedAt = Int(Date().timeIntervalSince1970)
    private let state = ServerState()

    public init(engine: BatchEngine, prompts: PromptEncoder, configuration: ServerConfiguration,
                metrics: PrometheusMetrics?) {
        self.engine = engine
        self.prompts = prompts
        self.configuration = configuration
        metricsExport = metrics
    }

    // MARK: - Life cycle

    /// Binds the port and starts answering; returns the bound port. Throws when the address cannot
    /// be bound (in use, not an address of this machine), with the address in the message.
    public func start() throws -> Int {
        var logger = Logger(label: "medusa-tp.server")
        logger.logLevel = .warning
        let bound = Latch<Result<Int, any Error>>()
        let app = Application(
            router: makeRouter(),
            server: GuardedHTTP1Channel.builder(timeout: configuration.timeout),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "medusa-tp"),
            onServerRunning: { channel in bound.set(.success(channel.localAddress?.port ?? 0)) },
            logger: logger)
        var groupConfiguration = ServiceGroupConfiguration(services: [app], logger: logger)
        // In-flight answers have ended by the time `stop` is called (the engine has stopped); a
        // connection that still does not close in this time is cut.
        groupConfiguration.maximumGracefulShutdownDuration = .seconds(10)
        let group = ServiceGroup(configuration: groupConfiguration)
        let finished = Latch<Void>()
        Task.detached {
            do {
                try await group.run()
                // Only reached after a shutdown: then `start` has long returned and this is a no-op.
                bound.set(.failure(ServerError(description: "the server stopped before it was listening")))
            } catch {
                bound.set(.failure(error))
            }
            finished.set(())
        }
        state.started(group: group, finished: finished)
        switch bound.wait() {
        case .success(let port): return port
        case .failure(let error):
            throw ServerError(description: "cannot listen on \(configuration.host):\(configuration.port): \(error)")
        }
    }

    /// From now on `/health` answers 503 "shutting down" (new completions are refused by the engine).
    public func beginShutdown() {
        state.beginShutdown()
    }

    /// Stops accepting connections, lets open ones finish their answers (at most 10 s), and returns
    /// when the server has stopped.
    public func stop() {
        state.beginShutdown()
        guard let (group, finished) = state.running else { return }
        Task.detached { await group.triggerGracefulShutdown() }
        finished.wait()
    }

    // MARK: - Routes

    func makeRouter() -> Router<BasicRequestContext> {
        // HEAD is answered wherever GET is (the GET answer's headers, no body).
        let router = Router(context: BasicRequestContext.self, options: .autoGenerateHeadEndpoints)
        router.add(middleware: APIMiddleware(counter: HTTPRequestCounter()))
        router.get("health") { _, _ in self.health() }
        router.get("metrics") { _, _ in self.metrics() }
        // Every /v1 route is added through this group, whose middleware wraps each of its
        // endpoints: the key is checked on whatever request the router dispatches to one of them,
        // however its path is spelt (the router skips empty segments, so `//v1/models` is
        // `/v1/models`), never by matching the path's text.
        let v1 = router.group("v1")
        if let apiKey = configuration.apiKey { v1.add(middleware: APIKeyMiddleware(key: apiKey)) }
        v1.get("models") { _, _ in try self.json(ModelList(ids: [self.configuration.modelID], created: self.startedAt)) }
        v1.get("models/:id") { _, context in
            let id = context.parameters.get("id") ?? ""
            try self.checkModel(id, param: nil)
            return try self.json(ModelList.Entry(id: id, created: self.startedAt))
        }
        v1.post("chat/completions") { request, _ in
            let parameters = try ChatCompletionParameters(json: try await self.body(of: request))
            try self.checkModel(parameters.options.model, param: "model")
            let prompt = try self.prompts.chat(parameters.messages)
            return try await self.complete(prompt: prompt, options: parameters.options, kind: .chat, promptParam: "messages")
        }
        v1.post("completions") { request, _ in
            let parameters = try TextCompletionParameters(json: try await self.body(of: request))
            try self.checkModel(parameters.options.model, param: "model")
            let prompt = self.prompts.text(parameters.prompt)
            return try await self.complete(prompt: prompt, options: parameters.options, kind: .text, promptParam: "prompt")
        }
        return router
    }

    func health() -> Response {
        let (status, text): (HTTPResponse.Status, String) =
            state.isShuttingDown ? (.serviceUnavailable, "shutting down")
            : engine.isReady ? (.ok, "ok")
            : (.serviceUnavailable, "loading")
        let body = #"{"status":"\#(text)"}"#
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(string: body)))
    }

    func metrics() -> Response {
        let text = metricsExport?.text() ?? "# no metrics backend was bootstrapped\n"
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                        body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    func body(of request: Request) async throws -> Data {
        var buffer = try await request.body.collect(upTo: configuration.maxBodyBytes)
        return buffer.readData(length: buffer.readableBytes) ?? Data()
    }

    func checkModel(_ model: String, param: String?) throws(APIError) {
        guard model == configuration.modelID else {
            throw APIError(status: 404, message: "the model \(model.quoted()) does not exist; this server serves \(configuration.modelID.quoted())",
                           param: param, code: "model_not_found")
        }
    }

    func json(_ value: some Encodable) throws -> Response {
        Response(status: .ok, headers: [.contentType: "application/json"],
                 body: .init(byteBuffer: ByteBuffer(data: try JSONEncoder.api.encode(value))))
    }

    // MARK: - Completions

    /// Submits the prompt and answers with the whole completion, or streams it as server-sent
    /// events. A request the engine refuses (context, queue, shutdown) is answered before anything
    /// is streamed, so its status is the refusal's.
    func complete(prompt: [Int32], options: GenerationOptions, kind: CompletionKind, promptParam: String) async throws -> Response {
        let request = CompletionRequest(
            prompt: prompt, maxTokens: options.maxTokens, sampling: options.sampling,
            seed: options.seed ?? UInt64.random(in: .min ... .max), stop: options.stop)
        let events: AsyncStream<CompletionEvent>
        do {
            events = try engine.submit(request)
        } catch {
            throw APIError(error, promptParam: promptParam)
        }
        let header = CompletionHeader(kind: kind, model: configuration.modelID)
        if options.stream {
            return stream(events, header: header, includeUsage: options.includeUsage)
        }
        return try await awaitCompletion(events, header: header)
    }

    /// Collects the whole completion. (A client that disconnects meanwhile is noticed only when
    /// the answer is written: its request runs to its end.)
    private func awaitCompletion(_ events: AsyncStream<CompletionEvent>, header: CompletionHeader) async throws -> Response {
        var text = ""
        for await event in events {
            switch event {
            case .text(let piece): text += piece
            case .finished(let outcome): return try json(CompletionResponse(header: header, text: text, outcome: outcome))
            }
        }
        throw ServerError(description: "request \(header.id) ended without an outcome (the server is stopping)")
    }

    /// Server-sent events in OpenAI's chunk format, ending with `data: [DONE]`. When the client
    /// goes away, the next write fails, the body closure ends and drops the event stream, and the
    /// engine frees the sequence at its next step.
    private func stream(_ events: AsyncStream<CompletionEvent>, header: CompletionHeader, includeUsage: Bool) -> Response {
        Response(
            status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
            body: ResponseBody { writer in
                func send(_ text: String) async throws { try await writer.write(ByteBuffer(string: text)) }
                if header.kind == .chat { try await send(CompletionChunk(header: header, .role).event()) }
                for await event in events {
                    switch event {
                    case .text(let piece):
                        try await send(CompletionChunk(header: header, .text(piece)).event())
                    case .finished(let outcome):
                        try await send(CompletionChunk(header: header, .finish(outcome.finishReason)).event())
                        if includeUsage { try await send(CompletionChunk(header: header, .usage(Usage(outcome))).event()) }
                    }
                }
                try await send(CompletionChunk.done)
                try await writer.finish(nil)
            })
    }
}

public struct ServerError: Error, CustomStringConvertible {
    public var description: String
}

/// `GET /v1/models`.
struct ModelList: Encodable {
    struct Entry: Encodable {
        var id: String
        var object = "model"
        var created: Int
        var ownedBy = "medusa-tp"

        init(id: String, created: Int) {
            self.id = id
            self.created = created
        }

        enum CodingKeys: String, CodingKey {
            case id, object, created, ownedBy = "owned_by"
        }
    }

    var object = "list"
    var data: [Entry]

    init(ids: [String], created: Int) {
        data = ids.map { Entry(id: $0, created: created) }
    }
}

/// Every request passes here: OpenAI-shaped errors for whatever a route, the key check or
/// Hummingbird throws, and the request counter (by the route the router dispatched to).
struct APIMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let counter: HTTPRequestCounter

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response: Response
        do {
            response = try await next(request, context)
        } catch {
            response = Self.response(for: Self.apiError(error, request: request))
        }
        counter.record(route: context.endpointPath, status: Int(response.status.code))
        return response
    }

    static func apiError(_ error: any Error, request: Request) -> APIError {
        switch error {
        case let error as APIError:
            return error
        case let error as HTTPError where error.status == .notFound:
            return APIError(status: 404, message: "unknown request URL: \(request.method) \(request.uri.path.quoted(limit: 200))", code: "unknown_url")
        case let error as HTTPError:
            return APIError(status: Int(error.status.code), message: (error.body ?? error.status.reasonPhrase).oneLine())
        case is NIOTooManyBytesError:
            return APIError(status: 413, message: "the request body is too large", code: "request_too_large")
        case let error as RequestBodyTimeout:
            return APIError(status: 408, message: "the request body did not arrive within \(error.seconds) s", code: "request_timeout")
        case let error as HTTPParserError:
            return HTTPProtocolGuard.answer(to: error).1
        case let error as any HTTPResponseError:
            return APIError(status: Int(error.status.code), message: error.status.reasonPhrase)
        default:
            return APIError(status: 500, message: "internal server error: \("\(error)".oneLine())", type: "server_error")
        }
    }

    static func response(for error: APIError) -> Response {
        var headers: HTTPFields = [.contentType: "application/json"]
        // A full queue drains in about one answer's time.
        if error.status == 429 { headers[.retryAfter] = "1" }
        return Response(status: .init(code: error.status), headers: headers, body: .init(byteBuffer: ByteBuffer(data: error.body())))
    }
}

/// The API key check on the routes it is added to: `Authorization: Bearer <key>`, else 401.
struct APIKeyMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let key: String

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard let header = request.headers[.authorization] else {
            throw APIError(status: 401, message: "no API key given: send the header 'Authorization: Bearer <key>' (this server was started with --api-key)",
                           code: "invalid_api_key")
        }
        let prefix = "Bearer "
        guard header.hasPrefix(prefix), Self.constantTimeEqual(Array(header.utf8.dropFirst(prefix.utf8.count)), Array(key.utf8)) else {
            throw APIError(status: 401, message: "incorrect API key", code: "invalid_api_key")
        }
        return try await next(request, context)
    }

    /// Compares all bytes whatever the first difference, so timing does not reveal the key.
    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        return zip(a, b).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }
}

/// A value set once by one thread and waited for by another (the synchronous engine thread waits
/// for Hummingbird's tasks).
final class Latch<Value: Sendable>: @unchecked Sendable {
    private let condition = NSCondition()
    private var value: Value?

    /// Sets the value unless it is already set.
    func set(_ newValue: Value) {
        condition.withLock {
            if value == nil { value = newValue }
            condition.broadcast()
        }
    }

    func wait() -> Value {
        condition.withLock {
            while value == nil { condition.wait() }
            return value!
        }
    }
}

/// What the server is doing, shared by the handlers and the engine thread.
private final class ServerState: @unchecked Sendable {
    private let lock = NSLock()
    private var group: ServiceGroup?
    private var finished: Latch<Void>?
    private var shuttingDown = false

    func started(group: ServiceGroup, finished: Latch<Void>) {
        lock.withLock {
            self.group = group
            self.finished = finished
        }
    }

    var running: (ServiceGroup, Latch<Void>)? {
        lock.withLock { group.flatMap { g in finished.map { (g, $0) } } }
    }

    func beginShutdown() { lock.withLock { shuttingDown = true } }

    var isShuttingDown: Bool { lock.withLock { shuttingDown } }
}
