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

    func validate() throws {
        guard (prompt == nil) != (chat == nil) else { throw ValidationError("give exactly one of --prompt or --chat") }
        guard maxTokens >= 0 else { throw ValidationError("--max-tokens must be at least 0, got \(maxTokens)") }
        guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be >= 0, got \(temperature)") }
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
    }

    func run() throws {
        let group = RankGroup.join()
        try group.run {
            let loaded = try group.loadModel(modelOptions, chatTemplate: chatTemplate.flatMap(ChatTemplate.init(rawValue:)))
            let text = try chat.map { try loaded.chatPrompt([ChatMessage(role: "user", content: $0)]) } ?? prompt!
            let promptTokens = loaded.tokenizer.encode(text, addSpecial: true, parseSpecial: true)
            var sampler = Sampler(parameters: SamplingParameters(temperature: temperature, topK: topK, topP: topP), seed: seed)
            var decoder = StreamingDecoder(tokenizer: loaded.tokenizer)
            let generator = Generator(model: loaded.model)
            let tokenizer = loaded.tokenizer
            let result = try generator.generate(
                prompt: promptTokens, maxTokens: maxTokens, sampler: &sampler,
                stopAt: { ignoreEos ? false : tokenizer.isEndOfGeneration($0) },
                onToken: { token in
                    emit(decoder.append(token))
                    return true
                })
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
                    rank_peak_rss_bytes: peakMemory))
            } else {
                emit("\n")
            }
        }
    }
}
