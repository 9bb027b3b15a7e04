import ArgumentParser
import Coordinator

struct MedusaWorker: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "medusa-worker",
        abstract: "Tensor-parallel LLM inference with Medusa speculative decoding.")
}

MedusaWorker.main()
