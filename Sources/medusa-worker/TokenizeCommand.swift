import ArgumentParser
import Coordinator
import Foundation
import Worker

struct TokenizeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize",
        abstract: "Print the token ids of a text (special tokens in the text are recognised).")

    @Option(help: "GGUF model file or Hugging Face checkpoint folder whose tokenizer to use (default: $MEDUSA_MODEL, else the cached SmolLM2).")
    var model: String?

    @Option(help: "Text to tokenize.")
    var text: String?

    @Option(help: "File whose text to tokenize.")
    var file: String?

    @Flag(help: "Do not add the BOS token even when the vocabulary asks for it.")
    var noBos = false

    @Flag(help: "Print one JSON object: token_ids.")
    var json = false

    func validate() throws {
        guard (text == nil) != (file == nil) else { throw ValidationError("give exactly one of --text or --file") }
    }

    func run() throws {
        let group = RankGroup.join()
        try group.run {
            // Only rank 0 tokenizes and prints; the other ranks just join and leave the group.
            guard group.isCoordinator else { return }
            let input = try text ?? readTextFile(file!)
            let path = model ?? DefaultModel.resolve()
            let tokenizer = try Tokenizer(model: path)
            let ids = tokenizer.encode(input, addSpecial: !noBos, parseSpecial: true)
            if json {
                struct Report: Encodable { var token_ids: [Int32] }
                try emitJSON(Report(token_ids: ids))
            } else {
                emit(ids.map(String.init).joined(separator: " ") + "\n")
            }
        }
    }
}
