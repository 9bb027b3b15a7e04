import ArgumentParser

struct MedusaWorker: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "medusa-worker",
        abstract: "Tensor-parallel Llama inference with Medusa speculative decoding (one process, or P under mpirun -np P).",
        subcommands: [GenerateCommand.self, PerplexityCommand.self, TokenizeCommand.self, BenchCommand.self, TrainHeadsCommand.self, EvalHeadsCommand.self, TuneTreeCommand.self, ServeCommand.self])
}

MedusaWorker.main()
