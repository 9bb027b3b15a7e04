import ArgumentParser

struct MedusaWorker: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "medusa-worker",
        abstract: "Tensor-parallel Llama inference with Medusa speculative decoding (one process, or P under mpirun -np P).",
        discussion: """
            Without a subcommand it serves: `mpirun -np P medusa-worker` is the cluster's main job, \
            `serve` on the default model (options after the bare binary are serve's).
            """,
        subcommands: [GenerateCommand.self, PerplexityCommand.self, TokenizeCommand.self, BenchCommand.self, TrainHeadsCommand.self, EvalHeadsCommand.self, TuneTreeCommand.self, ServeCommand.self],
        // The design's own usage line, `mpirun -np P medusa-worker`, starts the server.
        defaultSubcommand: ServeCommand.self)
}

MedusaWorker.main()
