import ArgumentParser
import Coordinator
import Foundation
import Medusa
import Worker

struct EvalHeadsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "eval-heads",
        abstract: "Per-head top-1 and top-5 accuracy of Medusa heads on the model's own greedy answers to held-out prompts.",
        discussion: """
            The model answers each prompt (chat template applied, greedy); at every answer row, head k's guesses are \
            compared with the token k + 2 places after the row's position. Default prompts: MT-Bench's first turns \
            (../shared/data/mt_bench_question.jsonl), which training never uses.
            """)

    @OptionGroup var modelOptions: ModelOptions

    @Option(help: "Medusa heads: a folder or a safetensors file.")
    var heads: String

    @Option(help: "JSON Lines prompts (\"prompt\" strings or MT-Bench \"turns\") (default: MT-Bench first turns).")
    var prompts: String?

    @Option(help: "Use at most this many prompts.")
    var limit: Int = 80

    @Option(help: "Longest answer per prompt, in tokens.")
    var maxTokens: Int = 256

    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    func validate() throws {
        guard limit >= 1 else { throw ValidationError("--limit must be at least 1, got \(limit)") }
        guard maxTokens >= 2 else { throw ValidationError("--max-tokens must be at least 2, got \(maxTokens)") }
    }

    func run() throws {
        let group = RankGroup.join()
        try group.run {
            let loaded = try group.loadModel(modelOptions)
            defer { _ = try? group.finish(loaded.model) }
            let source = try MedusaHeads(weights: MedusaHeadWeights(path: heads), model: loaded.model)
            let texts = try BenchPrompts.load(path: prompts, limit: limit)
            let generator = Generator(model: loaded.model)
            let tokenizer = loaded.tokenizer
            var accuracy = HeadAccuracy(heads: source.depth)
            for (i, text) in texts.enumerated() {
                let tokens = loaded.userMessageTokens(text)
                guard tokens.count + 2 < loaded.model.contextLength else { continue }
                try accuracy.score(prompt: tokens, heads: source, generator: generator, maxTokens: maxTokens,
                                   stopAt: { tokenizer.isEndOfGeneration($0) })
                if !json { progress("\r[eval] \(i + 1)/\(texts.count) answers, \(accuracy.rows) rows   ") }
            }
            if json {
                struct Report: Encodable {
                    var answers: Int, rows: Int
                    var top1_accuracy: [Double], top5_accuracy: [Double], rows_per_head: [Int]
                }
                try emitJSON(Report(answers: accuracy.answers, rows: accuracy.rows, top1_accuracy: accuracy.top1Accuracy,
                                    top5_accuracy: accuracy.top5Accuracy, rows_per_head: accuracy.counts))
            } else {
                progress("\n")
                emit("\(accuracy.answers) answers, \(accuracy.rows) rows\nhead  top-1  top-5\n")
                for k in 0..<source.depth {
                    emit(String(format: "%4d  %.3f  %.3f\n", k + 1, accuracy.top1Accuracy[k], accuracy.top5Accuracy[k]))
                }
            }
        }
    }
}
