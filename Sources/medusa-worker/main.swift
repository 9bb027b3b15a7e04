import ArgumentParser

struct MedusaWorker: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "medusa-worker",
        abstract: "Tensor-parallel Llama inference (one process, or P under mpirun -np P); Medusa decoding comes next.",
        subcommands: [GenerateCommand.self, PerplexityCommand.self, TokenizeCommand.self, BenchCommand.self])
}

MedusaWorker.main()
