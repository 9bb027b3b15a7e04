import ArgumentParser
import Coordinator
import Foundation
import Worker

struct PerplexityCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "perplexity",
        abstract: "Perplexity of a text file, with llama.cpp's chunking convention.",
        discussion: """
            The tokenized file is split into consecutive chunks of --ctx tokens; each chunk is evaluated \
            from an empty cache and the negative log-likelihood of its second half is scored.
            """)

    @Option(help: "GGUF model file or Hugging Face checkpoint folder (default: $MEDUSA_MODEL, else the cached SmolLM2-135M-Instruct Q4_1).")
    var model: String?

    @Option(help: "Text file to score.")
    var file: String

    @Option(help: "Chunk size in tokens.")
    var ctx: Int = 512

    @Option(help: "Score at most this many chunks.")
    var chunks: Int?

    @Option(help: "Worker threads (default: the cores this process may use).")
    var threads: Int?

    @Option(help: ArgumentHelp(matmulInputsHelp, valueName: "fp32|int16|int8"))
    var matmulInputs: MatMulInputs = .int16

    @Option(help: ArgumentHelp(cacheTypeHelp, valueName: "f32|f16"))
    var cacheType: KVCacheType = .f16

    @Flag(help: "Print one JSON object: ppl, tokens_scored, chunks.")
    var json = false

    func validate() throws {
        guard ctx >= 4 else { throw ValidationError("--ctx must be at least 4, got \(ctx)") }
        if let chunks, chunks < 1 { throw ValidationError("--chunks must be at least 1, got \(chunks)") }
        if let threads, threads < 1 || threads > 512 { throw ValidationError("--threads must be between 1 and 512, got \(threads)") }
    }

    func run() throws {
        let group = RankGroup.join()
        try group.run {
            let text = try readTextFile(file)
            let loaded = try group.loadModel(
                path: model ?? DefaultModel.resolve(), contextLength: ctx,
                threads: threads ?? ProcessInfo.processInfo.activeProcessorCount, matmulInputs: matmulInputs,
                kvCacheType: cacheType)
            guard ctx <= loaded.model.contextLength else {
                throw CommandError("--ctx \(ctx) exceeds the model's context length \(loaded.model.contextLength)")
            }
            let tokens = loaded.tokenizer.encode(text, addSpecial: true, parseSpecial: false)
            let bos = loaded.tokenizer.addBOS ? loaded.tokenizer.bosToken : nil
            let result = try Perplexity.evaluate(
                model: loaded.model, tokens: tokens, context: ctx, maxChunks: chunks, bos: bos,
                onChunk: { done, ppl in
                    if !json { progress("[\(done)] \(String(format: "%.4f", ppl))\n") }
                })
            let peakMemory = try group.finish(loaded.model)
            if json {
                struct Report: Encodable {
                    var ppl: Double, mean_nll: Double, tokens_scored: Int, chunks: Int
                    var ranks: Int, rank_peak_rss_bytes: [Int]
                }
                try emitJSON(Report(
                    ppl: result.ppl, mean_nll: result.meanNLL, tokens_scored: result.tokensScored, chunks: result.chunks,
                    ranks: group.communicator.size, rank_peak_rss_bytes: peakMemory))
            } else {
                emit("perplexity: \(String(format: "%.4f", result.ppl)) over \(result.tokensScored) tokens in \(result.chunks) chunks of \(ctx)\n")
            }
        }
    }
}
