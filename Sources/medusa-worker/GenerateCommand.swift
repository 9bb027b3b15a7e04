import ArgumentParser
import Coordinator
import Foundation
import Medusa
import Worker

struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate text from a prompt or a chat message, streaming it to stdout.")

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Raw prompt text; special tokens such as <|im_start|> are recognised.")
    var prompt: String?

    @Option(help: "One user message, wrapped in the model's chat template.")
    var chat: String?

    @Option(help: "Chat template override: chatml, llama2 or vicuna (default: detected from the model).")
    var chatTemplate: String?

    @Option(help: "Maximum tokens to generate.")
    var maxTokens: Int = 256

    @Option(help: "Sampling temperature; 0 is greedy.")
    var temperature: Float = 0

    @Option(help: "Sample among the K most likely tokens (0: all).")
    var topK: Int = 40

    @Option(help: "Sample among the most likely tokens whose probabilities sum to P.")
    var topP: Float = 0.95

    @Option(help: "Random seed for sampling.")
    var seed: UInt64 = 0

    @Flag(help: "Keep generating past end-of-generation tokens.")
    var ignoreEos = false

    @Flag(help: "End the output with one JSON object describing the run.")
    var json = false

    @OptionGroup(title: "Medusa decoding") var medusaOptions: MedusaOptions

    func validate() throws {
        guard (prompt == nil) != (chat == nil) else { throw ValidationError("give exactly one of --prompt or --chat") }
        guard maxTokens >= 0 else { throw ValidationError("--max-tokens must be at least 0, got \(maxTokens)") }
        guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be >= 0, got \(temperature)") }
        if medusaOptions.heads != nil { _ = try medusaOptions.rule(temperature: temperature) }
        guard topK >= 0 else { throw ValidationError("--top-k must be >= 0, got \(topK)") }
        guard topP > 0, topP <= 1 else { throw ValidationError("--top-p must be in (0, 1], got \(topP)") }
        if let chatTemplate, ChatTemplate(rawValue: chatTemplate) == nil {
            throw ValidationError("--chat-template must be one of \(ChatTemplate.allCases.map(\.rawValue).joined(separator: ", ")), got '\(chatTemplate)'")
        }
    }

    struct Report: Encodable {
        var text: String
        var token_ids: [Int32]
        var prompt_tokens: Int
        var completion_tokens: Int
        var finish_reason: String
        var seconds: Double
        var tokens_per_second: Double
        var prefill_seconds: Double
        var ranks: Int
        var rank_peak_rss_bytes: [Int]
        // With --heads.
        var steps: Int?
        var mean_accepted_tokens: Double?
        var accepted_histogram: [Int]?
        var per_head_acceptance: [Double]?
        var tree_nodes: Int?
    }

    func run() throws {
        let group = RankGroup.join()
        try group.run {
            let loaded = try group.loadModel(modelOptions, chatTemplate: chatTemplate.flatMap(ChatTemplate.init(rawValue:)))
            let text = try chat.map { try loaded.chatPrompt([ChatMessage(role: "user", content: $0)]) } ?? prompt!
            let promptTokens = loaded.tokenizer.encode(text, addSpecial: true, parseSpecial: true)
            var sampler = Sampler(parameters: SamplingParameters(temperature: temperature, topK: topK, topP: topP), seed: seed)
            var decoder = StreamingDecoder(tokenizer: loaded.tokenizer)
            let tokenizer = loaded.tokenizer
            let stop = { (token: Int32) in ignoreEos ? false : tokenizer.isEndOfGeneration(token) }
            let onToken = { (token: Int32) in
                emit(decoder.append(token))
                return true
            }
            let medusa = try medusaOptions.generator(model: loaded.model, temperature: temperature)
            let result = try medusa.map {
                try $0.generate(prompt: promptTokens, maxTokens: maxTokens, sampler: &sampler, stopAt: stop, onToken: onToken)
            } ?? Generator(model: loaded.model).generate(
                prompt: promptTokens, maxTokens: maxTokens, sampler: &sampler, stopAt: stop, onToken: onToken)
            emit(decoder.flush())
            let peakMemory = try group.finish(loaded.model)
            if json {
                emit("\n")
                let total = result.prefillSeconds + result.decodeSeconds
                try emitJSON(Report(
                    text: loaded.tokenizer.decode(result.tokens), token_ids: result.tokens,
                    prompt_tokens: result.promptTokens, completion_tokens: result.tokens.count,
                    finish_reason: result.finishReason.rawValue, seconds: total,
                    tokens_per_second: result.decodeSeconds > 0 ? Double(max(result.tokens.count - 1, 0)) / result.decodeSeconds : 0,
                    prefill_seconds: result.prefillSeconds, ranks: group.communicator.size,
                    rank_peak_rss_bytes: peakMemory, steps: result.medusa?.steps,
                    mean_accepted_tokens: result.medusa?.meanAcceptedTokens,
                    accepted_histogram: result.medusa?.acceptedHistogram,
                    per_head_acceptance: result.medusa?.perHeadAcceptance, tree_nodes: medusa?.tree.count))
            } else {
                emit("\n")
                // Timings on stderr, as llama.cpp prints its own: stdout stays the answer.
                let decodeRate = result.decodeSeconds > 0 ? Double(max(result.tokens.count - 1, 0)) / result.decodeSeconds : 0
                var summary = String(format: "[prompt %d tokens in %.2f s; %d tokens, %.1f tok/s", result.promptTokens,
                                     result.prefillSeconds, result.tokens.count, decodeRate)
                if let stats = result.medusa {
                    summary += String(format: "; Medusa: %d verify steps, %.2f tokens per step", stats.steps, stats.meanAcceptedTokens)
                }
                progress(summary + "]\n")
            }
        }
    }
}
