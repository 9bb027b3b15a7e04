import ArgumentParser
import Collectives
import Coordinator
import Foundation
import Worker

#if canImport(Glibc)
import Glibc
#endif

/// The processes a command runs on: one without a launcher, P under `mpirun -np P`.
///
/// Every rank parses the same arguments and loads its shard of the model; rank 0 runs the command
/// and drives the others through step plans (`LlamaModel.serve`); only rank 0 prints. Any error on
/// any rank ends the whole job at once with a line naming the rank (`Communicator.fail`), so no
/// rank is left waiting in a collective.
struct RankGroup {
    let communicator: any Communicator

    var isCoordinator: Bool { communicator.rank == 0 }

    /// Joins the group (initialises MPI under a launcher).
    static func join() -> RankGroup {
        do {
            return RankGroup(communicator: try MPIEnvironment.makeCommunicator())
        } catch {
            let rank = MPIEnvironment.launcherRank.map { "rank \($0): " } ?? ""
            FileHandle.standardError.write(Data("error: \(rank)cannot join the MPI group: \(error)\n".utf8))
            exit(1)
        }
    }

    /// Runs `body` on this rank; an error ends the job (every rank of it) with one clear line.
    func run(_ body: () throws -> Void) throws {
        do {
            try body()
        } catch let error as ExitCode {
            throw error
        } catch let error as CleanExit {
            throw error
        } catch {
            // One bounded line whatever the error carries (names from a damaged file, a client's text).
            communicator.fail("\(error)".oneLine(limit: 2000))
        }
        do { try communicator.finalize() } catch { communicator.fail("\(error)") }
    }

    /// Loads this rank's part of the model. On ranks other than 0 it then serves rank 0's steps
    /// until the end of the group, reports its peak memory, and exits: only rank 0 returns.
    func loadModel(_ options: ModelOptions, sequences: Int = 1, chatTemplate: ChatTemplate? = nil) throws -> LoadedModel {
        try loadModel(path: options.modelPath, contextLength: options.ctx, threads: options.threadCount,
                      sequences: sequences, chatTemplate: chatTemplate, matmulInputs: options.matmulInputs,
                      kvCacheType: options.cacheType)
    }

    func loadModel(
        path: String, contextLength: Int, threads: Int, sequences: Int = 1, chatTemplate: ChatTemplate? = nil,
        matmulInputs: MatMulInputs, kvCacheType: KVCacheType
    ) throws -> LoadedModel {
        if matmulInputs == .int8 && IntegerKernels.variant == .portable && isCoordinator {
            FileHandle.standardError.write(Data(
                "warning: --matmul-inputs int8 without AVX-512 VNNI runs the portable scalar kernels (slow); int16 is the fast choice on this CPU\n".utf8))
        }
        let loaded = try LoadedModel(
            path: path, contextLength: contextLength, threads: threads, sequences: sequences, chatTemplate: chatTemplate,
            communicator: communicator, matmulInputs: matmulInputs, kvCacheType: kvCacheType)
        if !isCoordinator {
            do {
                try loaded.model.serve()
                _ = try gatherPeakMemory()
                try communicator.finalize()
            } catch {
                communicator.fail("\(error)")
            }
            exit(0)
        }
        return loaded
    }

    /// Rank 0: ends the other ranks' serving and collects every rank's peak resident memory (bytes,
    /// in rank order). Call once, after the last step.
    func finish(_ model: LlamaModel) throws -> [Int] {
        try model.endGroup()
        return try gatherPeakMemory()
    }

    private func gatherPeakMemory() throws(CollectiveError) -> [Int] {
        try communicator.gather([Self.peakResidentBytes()], root: 0) ?? []
    }

    /// This process's peak resident set size (`getrusage`'s ru_maxrss, kilobytes on Linux).
    static func peakResidentBytes() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Int(usage.ru_maxrss) * 1024
    }
}
