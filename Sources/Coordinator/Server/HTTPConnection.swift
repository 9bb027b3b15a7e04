import Foundation
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Worker

/// Hummingbird's HTTP/1 connection (`HTTP1Channel`: NIO's HTTP/1 parser, the conversion to Swift
/// HTTP Types, Hummingbird's idle timeout) with `HTTPProtocolGuard` between the parser and the
/// conversion, where the request's HTTP version is still known (Swift HTTP Types drop it).
struct GuardedHTTP1Channel: ServerChildChannel, HTTPChannelHandler {
    typealias Value = NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>

    let responder: HTTPChannelHandler.Responder
    /// See `ServerConfiguration.timeout` (seconds).
    let timeout: Double

    static func builder(timeout: Double) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in GuardedHTTP1Channel(responder: responder, timeout: timeout) }
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let pipeline = channel.pipeline.syncOperations
            // As HTTP1Channel does: Hummingbird answers parse errors itself; Swift HTTP Types have
            // validated the outbound headers already.
            try pipeline.configureHTTPServerPipeline(
                withPipeliningAssistance: false, withErrorHandling: false, withOutboundHeaderValidation: false,
                withEncoderConfiguration: .init(), withDecoderLimitConfiguration: .init())
            let nanoseconds = Int64(timeout * 1e9)
            try pipeline.addHandler(HTTPProtocolGuard(bodyTimeout: .nanoseconds(nanoseconds)))
            try pipeline.addHandler(HTTP1ToHTTPServerCodec(secure: false))
            // Closes a connection that has sent no complete request head (or nothing after its last
            // answer) for `timeout`; never while an answer is being written.
            try pipeline.addHandler(HTTPConnectionStateHandler(idleTimeout: .nanoseconds(nanoseconds), logger: logger))
            return try NIOAsyncChannel(wrappingChannelSynchronously: channel, configuration: .init(isOutboundHalfClosureEnabled: true))
        }
    }

    func handle(value: Value, logger: Logger) async {
        await handleHTTP(asyncChannel: value, logger: logger)
    }
}

/// A request body that had not arrived in full within the server's timeout (answered 408).
struct RequestBodyTimeout: Error {
    let seconds: Double
}

/// HTTP/1 manners the layers above cannot see, on one connection:
///
/// - an HTTP/1.0 request is answered in HTTP/1.0 with `Connection: close`, never chunked (the end
///   of a streamed answer is the end of the connection), and the connection closes after it;
/// - an answer that ends before its request's body did (a refusal, an error) closes the
///   connection, so that an unread body is never parsed as the next request nor trickled in;
/// - a body that has not ended `bodyTimeout` after its request's head fails the request
///   (`RequestBodyTimeout`, which the API answers with 408);
/// - a request NIO cannot parse is answered with an OpenAI error object (400; 431 for headers
///   beyond the parser's limits) instead of Hummingbird's empty 400.
final class HTTPProtocolGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    /// A request read (or being read) and not yet answered; several when a client pipelines.
    private struct Pending {
        var version: HTTPVersion
        var bodyEnded = false
    }

    private let bodyTimeout: TimeAmount
    private var pending: [Pending] = []
    private var bodyDeadline: Scheduled<Void>?
    private var parserError: HTTPParserError?
    /// Set from an answer's head to its end.
    private var closeAfterAnswer = false
    private var errorBody: ByteBuffer?

    init(bodyTimeout: TimeAmount) {
        self.bodyTimeout = bodyTimeout
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(var head):
            pending.append(Pending(version: head.version))
            if Self.predatesHTTP11(head.version) {
                // Hummingbird ends the connection after answering a request that says so.
                head.headers.replaceOrAdd(name: "connection", value: "close")
                context.fireChannelRead(wrapInboundOut(.head(head)))
            } else {
                context.fireChannelRead(data)
            }
            bodyDeadline?.cancel()
            let seconds = Double(bodyTimeout.nanoseconds) / 1e9
            bodyDeadline = context.eventLoop.assumeIsolated().scheduleTask(in: bodyTimeout) {
                context.fireErrorCaught(RequestBodyTimeout(seconds: seconds))
            }
        case .body:
            context.fireChannelRead(data)
        case .end:
            bodyDeadline?.cancel()
            bodyDeadline = nil
            if !pending.isEmpty { pending[pending.count - 1].bodyEnded = true }
            context.fireChannelRead(data)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let error = error as? HTTPParserError { parserError = error }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        bodyDeadline?.cancel()
        bodyDeadline = nil
        context.fireChannelInactive()
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        switch unwrapOutboundIn(data) {
        case .head(var head):
            let request = pending.first
            if let error = parserError, head.status == .badRequest {
                // Hummingbird's answer to a parse error: an empty 400 before closing.
                let (status, apiError) = Self.answer(to: error)
                let body = ByteBuffer(data: apiError.body())
                head.status = status
                head.headers.replaceOrAdd(name: "content-type", value: "application/json")
                head.headers.replaceOrAdd(name: "content-length", value: String(body.readableBytes))
                errorBody = body
            }
            closeAfterAnswer = parserError != nil || request.map { Self.predatesHTTP11($0.version) || !$0.bodyEnded } ?? false
            if let request, Self.predatesHTTP11(request.version) {
                head.version = request.version
                head.headers.remove(name: "transfer-encoding")
            }
            if closeAfterAnswer { head.headers.replaceOrAdd(name: "connection", value: "close") }
            context.write(wrapOutboundOut(.head(head)), promise: promise)
        case .body:
            if errorBody == nil { context.write(data, promise: promise) } else { promise?.succeed() }
        case .end:
            if let body = errorBody {
                context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
                errorBody = nil
            }
            if !pending.isEmpty { pending.removeFirst() }
            if closeAfterAnswer {
                context.writeAndFlush(data, promise: promise)
                context.close(promise: nil)
            } else {
                context.write(data, promise: promise)
            }
        }
    }

    /// HTTP/1.0 (or 0.9): no chunked encoding, no persistent connection unless negotiated.
    static func predatesHTTP11(_ version: HTTPVersion) -> Bool {
        version.major < 1 || (version.major == 1 && version.minor == 0)
    }

    /// The status and OpenAI error for a request NIO could not parse.
    static func answer(to error: HTTPParserError) -> (HTTPResponseStatus, APIError) {
        switch error {
        case .headerOverflow:
            return (.requestHeaderFieldsTooLarge,
                    APIError(status: 431, message: "the request's headers are too large", code: "request_headers_too_large"))
        default:
            return (.badRequest, APIError(status: 400, message: "malformed HTTP request (\("\(error)".oneLine(limit: 200)))",
                                          code: "malformed_request"))
        }
    }
}
