import ArgumentParser
import Coordinator
import Dispatch
import Foundation
import Medusa
import Worker

#if canImport(Glibc)
import Glibc
#endif

struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the model over OpenAI's HTTP API (chat and text completions, streaming, /health, /metrics).",
        discussion: """
            Rank 0 listens and schedules; under mpirun every rank computes its shard of each step. \
            SIGTERM or SIGINT to rank 0 stops admitting requests, lets those in flight finish (at most \
            --shutdown-grace seconds), ends every rank and exits 0. Ranks other than 0 ignore both \
            signals: they leave when rank 0 ends the group.
            """)

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Address to listen on (default: loopback only; 0.0.0.0 for every interface).")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on; 0 picks a free one (the bound port is printed on stderr).")
    var port = 8080

    @Option(help: "Require 'Authorization: Bearer KEY' on /v1 requests (default: $MEDUSA_API_KEY if set, else no key).")
    var apiKey: String?

    @Option(help: "Requests decoded together, each in its own KV cache of --ctx tokens.")
    var maxSequences = 8

    @Option(help: "Requests that may wait for a free sequence; beyond them the server answers 429.")
    var maxQueued = 64

    @Option(help: "Prompt tokens a joining request puts into each step while others are decoding (a long prompt then does not stall their next token).")
    var prefillChunk = 64

    @Option(help: "Seconds in-flight requests get to finish after SIGTERM/SIGINT; then they end with finish_reason 'length'.")
    var shutdownGrace: Double = 5

    @Option(help: "Seconds a client has to send a request's headers, then its body (else 408), and that an idle connection stays open; answers being written are never cut.")
    var httpTimeout: Double = 30

    @Option(help: "Chat template override: chatml, llama2 or vicuna (default: detected from the model).")
    var chatTemplate: String?

    @OptionGroup(title: "Medusa decoding") var medusaOptions: MedusaOptions

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535, got \(port)") }
        guard (1...256).contains(maxSequences) else { throw ValidationError("--max-sequences must be between 1 and 256, got \(maxSequences)") }
        guard maxQueued >= 0 else { throw ValidationError("--max-queued must be at least 0, got \(maxQueued)") }
        guard prefillChunk >= 1 else { throw ValidationError("--prefill-chunk must be at least 1, got \(prefillChunk)") }
        guard shutdownGrace >= 0, shutdownGrace.isFinite else {
            throw ValidationError("--shutdown-grace must be a number of seconds >= 0, got \(shutdownGrace)")
        }
        guard httpTimeout > 0, httpTimeout <= 86400 else {
            throw ValidationError("--http-timeout must be a number of seconds in (0, 86400], got \(httpTimeout)")
        }
        if let apiKey, apiKey.isEmpty { throw ValidationError("--api-key must not be empty") }
        if let accept = medusaOptions.accept, accept != "typical" {
            throw ValidationError(
                "serve picks the acceptance rule from each request's temperature (greedy at 0, lossless sampling above); --accept takes only 'typical' here")
        }
        if let chatTemplate, ChatTemplate(rawValue: chatTemplate) == nil {
            throw ValidationError("--chat-template must be one of \(ChatTemplate.allCases.map(\.rawValue).joined(separator: ", ")), got '\(chatTemplate)'")
        }
    }

    /// The API key: the option, else `$MEDUSA_API_KEY` (which keeps the key out of `ps`).
    var resolvedAPIKey: String? {
        if let apiKey { return apiKey }
        let env = ProcessInfo.processInfo.environment["MEDUSA_API_KEY"] ?? ""
        return env.isEmpty ? nil : env
    }

    func run() throws {
        let group = RankGroup.join()
        if !group.isCoordinator {
            // mpirun passes a signal sent to the job on to every rank, but only rank 0 may end the
            // group: it finishes its requests and then ends every rank's serving loop.
            signal(SIGTERM, SIG_IGN)
            signal(SIGINT, SIG_IGN)
        }
        try group.run {
            // Before the engine exists: it makes its counters and timers when it is created.
            let metrics = group.isCoordinator ? PrometheusMetrics.bootstrap() : nil
            let loaded = try group.loadModel(
                modelOptions, sequences: maxSequences, chatTemplate: chatTemplate.flatMap(ChatTemplate.init(rawValue:)))
            // Only rank 0 gets here; the other ranks serve steps inside loadModel until the end.
            let engine = try BatchEngine(
                model: loaded.model, tokenizer: loaded.tokenizer, medusa: medusaOptions.setup(model: loaded.model),
                configuration: .init(maxSequences: maxSequences, maxQueued: maxQueued, prefillChunk: prefillChunk))
            let modelID = Self.modelID(path: loaded.path)
            let server = OpenAIServer(
                engine: engine, prompts: PromptEncoder(loaded),
                configuration: ServerConfiguration(host: host, port: port, apiKey: resolvedAPIKey, modelID: modelID,
                                                   timeout: httpTimeout),
                metrics: metrics)
            let boundPort = try server.start()
            let grace = shutdownGrace
            let signals = ShutdownSignals { name in
                progress("serve: \(name): not admitting requests; finishing those in flight (at most \(grace) s)\n")
                server.beginShutdown()
                engine.shutdown(grace: grace)
            }
            progress("serve: listening on http://\(host):\(boundPort) (model \(modelID), \(group.communicator.size) rank(s), "
                + "\(maxSequences) sequences of \(engine.contextLength) tokens\(medusaOptions.heads == nil ? "" : ", Medusa heads"); "
                + "rank 0 pid \(getpid()))\n")
            try engine.run()
            _ = try group.finish(loaded.model)
            server.stop()
            signals.cancel()
            progress("serve: stopped\n")
        }
    }

    /// The name requests give as `model`: the file name without `.gguf`, or the folder's name.
    static func modelID(path: String) -> String {
        let name = URL(fileURLWithPath: path).standardizedFileURL.lastPathComponent
        return name.hasSuffix(".gguf") ? String(name.dropLast(5)) : name
    }
}

extension MedusaOptions {
    /// Rank 0: the heads (checked against `model`) and the tree (checked against the heads) for
    /// every request the engine decodes; nil without `--heads`.
    func setup(model: LlamaModel) throws -> MedusaSetup? {
        guard let heads else { return nil }
        let source = try MedusaHeads(weights: MedusaHeadWeights(path: heads), model: model)
        let tree = try CandidateTree(argument: treeArgument, headCount: source.depth)
        let typical = accept == "typical" ? AcceptanceRule.typical(epsilon: typicalEps, delta: typicalDelta) : nil
        return MedusaSetup(source: source, tree: tree, typical: typical)
    }
}

/// SIGTERM and SIGINT, delivered to a handler on a queue of their own. The engine keeps rank 0's
/// main thread (MPI's) busy, so a plain signal handler could do nothing safe there; the default
/// action, which ends the process, is turned off while these sources watch.
final class ShutdownSignals {
    private let sources: [any DispatchSourceSignal]

    init(_ handler: @escaping @Sendable (String) -> Void) {
        let queue = DispatchQueue(label: "medusa-tp.signals")
        sources = [(SIGTERM, "SIGTERM"), (SIGINT, "SIGINT")].map { number, name in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { handler(name) }
            source.resume()
            return source
        }
    }

    func cancel() {
        for source in sources { source.cancel() }
    }
}
