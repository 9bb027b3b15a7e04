import Foundation
import TestSupport
import Testing

/// Real multi-process jobs: `collectives-check` (Tests/CollectivesCheck) started by
/// `mpirun --oversubscribe -np P`. Each rank runs every collective, checks what it got and prints
/// one JSON line; these tests check those lines and mpirun's exit status. Serialized so that at
/// most one job (up to 4 ranks) runs at a time next to the other suites on 2 cores; every job has
/// its own timeout, so a hang fails the test instead of blocking the run.
@Suite(.serialized, .timeLimit(.minutes(3)))
struct MPIRunTests {
    static var check: String { BinaryRunner.builtExecutable(named: "collectives-check") }

    /// Runs `collectives-check report` on `np` ranks and returns the reports ordered by rank.
    func reports(np: Int, extra: [String] = []) throws -> [[String: Any]] {
        let r = try MPIRunner.run(np: np, executable: Self.check, arguments: ["report"] + extra, timeout: 60)
        #expect(r.status == 0, "mpirun exited with \(r.status); stderr:\n\(r.stderr)")
        let lines = try r.jsonLines()
        #expect(lines.count == np, "expected one report per rank; stdout:\n\(r.stdout)")
        return lines.sorted { ($0["rank"] as? Int ?? -1) < ($1["rank"] as? Int ?? -1) }
    }

    /// What every rank's report must say in a group of `np` MPI ranks.
    func expectConsistent(_ reports: [[String: Any]], np: Int) {
        #expect(reports.map { $0["rank"] as? Int ?? -1 } == Array(0..<np))
        let expectedGather = (0..<np).flatMap { [$0, 10 * $0 + 1] }
        for (rank, report) in reports.enumerated() {
            let label = "rank \(rank): \(report)"
            #expect(report["failures"] as? [String] == [], "\(label)")
            #expect(report["size"] as? Int == np, "\(label)")
            #expect(report["launcher_rank"] as? Int == rank, "\(label)")
            #expect(report["launcher_size"] as? Int == np, "\(label)")
            #expect(report["communicator"] as? String == "MPICommunicator", "\(label)")
            #expect(report["sum_of_rank_plus_one"] as? Int == np * (np + 1) / 2, "\(label)")
            #expect(report["broadcast_roots_received"] as? [Int] == Set([0, np - 1, np / 2]).sorted(), "\(label)")
            if rank == 0 {
                #expect(report["gathered_at_first"] as? [Int] == expectedGather, "\(label)")
                #expect((report["barrier_wait_ms"] as? Int ?? -1) >= 0, "\(label)")
            }
            if rank == np - 1 {
                #expect(report["gathered_at_last"] as? [Int] == expectedGather, "\(label)")
            }
            if rank != 0 && rank != np - 1 {
                #expect(report["gathered_at_first"] == nil && report["gathered_at_last"] == nil, "\(label)")
            }
            // MPI checks the root itself and returns MPI_ERR_ROOT (MPI_ERRORS_RETURN, no crash);
            // the error carries MPI_Error_string's text.
            for key in ["broadcast_root_size_error", "broadcast_root_negative_error", "gather_root_size_error"] {
                let text = report[key] as? String ?? ""
                #expect(text.hasPrefix("mpi ") && text.contains("MPI_ERR_ROOT: invalid root"), "\(key): \(label)")
            }
            #expect((report["other_thread_error"] as? String ?? "").contains("MPI_THREAD_FUNNELED"), "\(label)")
            #expect((report["after_finalize_error"] as? String ?? "").contains("after finalize()"), "\(label)")
        }
    }

    @Test(arguments: 1...4)
    func collectivesAgreeOnEveryRank(np: Int) throws {
        let reports = try reports(np: np)
        expectConsistent(reports, np: np)
        #expect(reports.allSatisfy { $0["max_count"] as? Int == Int(Int32.max) })
    }

    /// Counts above Int32.max are split into several MPI calls; a lowered limit runs that code on
    /// buffers of megabytes: allreduce of 2^20 + 5 floats = 20 x 50000 + 48581, broadcast of
    /// 2^20 + 3 bytes, gather of 100003 bytes per rank in pieces of 50000, 50000 and 3 landing at
    /// rank * 100003 + k * 50000 on root. (Not much lower: thousands of collectives take tens of
    /// seconds when the oversubscribed ranks compete with the other suites for 2 cores.)
    @Test func longBuffersGoInSeveralCalls() throws {
        let reports = try reports(np: 3, extra: ["--max-count", "50000"])
        expectConsistent(reports, np: 3)
        #expect(reports.allSatisfy { $0["max_count"] as? Int == 50000 })
    }

    /// Without mpirun the factory gives the group of one, and the same checks hold there.
    @Test func withoutMPIRunTheProgramIsTheGroupOfOne() throws {
        let r = try BinaryRunner.run(executable: Self.check, arguments: ["report"], timeout: 30)
        #expect(r.status == 0, "\(r.stderr)")
        let report = try #require(try r.jsonLines().first)
        #expect(report["failures"] as? [String] == [], "\(report)")
        #expect(report["communicator"] as? String == "SingleProcessCommunicator")
        #expect(report["rank"] as? Int == 0 && report["size"] as? Int == 1)
        #expect(report["gathered_at_first"] as? [Int] == [0, 1])
        #expect(report["broadcast_root_size_error"] as? String == "usage: root 1 is not a rank of a 1-process group")
        #expect((report["after_finalize_error"] as? String ?? "").contains("after finalize()"))
    }

    @Test func failInAGroupOfOnePrintsTheReasonAndExits() throws {
        let r = try BinaryRunner.run(executable: Self.check, arguments: ["abort", "--rank", "0"], timeout: 30)
        #expect(r.status == 3)
        #expect(r.stderr == "error: injected failure\n")
    }

    struct Failure: CustomTestStringConvertible, Sendable {
        var mode: String
        var np: Int
        var failingRank: Int
        /// mpirun's exit status, when it is deterministic.
        var status: Int32?
        /// Every one of these must appear in the job's stderr.
        var stderr: [String]
        var testDescription: String { "\(mode) on rank \(failingRank) of \(np)" }
    }

    /// One rank fails while the others wait for it in an allreduce: mpirun must end the whole job
    /// with a non-zero status within seconds (measured: 0.5-1.5 s), and stderr must name the rank.
    @Test(arguments: [
        // The rank's own line (Communicator.fail), then MPI_Abort: mpirun exits with its code.
        Failure(mode: "abort", np: 3, failingRank: 1, status: 3, stderr: ["error: rank 1: injected failure\n"]),
        // The coordinator gives up (bad input on rank 0): the workers must not wait forever.
        Failure(mode: "abort", np: 2, failingRank: 0, status: 3, stderr: ["error: rank 0: injected failure\n"]),
        // exit(4) without MPI_Finalize: mpirun kills the others and passes the status on.
        Failure(mode: "exit", np: 3, failingRank: 1, status: 4, stderr: ["error: rank 1: injected exit(4)"]),
        // exit(0) without MPI_Finalize is abnormal too: mpirun exits with 1 and names the rank.
        Failure(mode: "exit-zero", np: 3, failingRank: 1, status: 1, stderr: ["process rank 1", "exiting improperly"]),
        // Killed by a signal: mpirun exits with 128 + 9 and says which rank and signal.
        Failure(mode: "signal", np: 3, failingRank: 1, status: 137, stderr: ["process rank 1", "signal 9"]),
        // A failure before MPI_Init (argument errors): the others are still inside MPI_Init.
        Failure(mode: "before-init", np: 3, failingRank: 2, status: 5, stderr: ["error: rank 2: injected failure before MPI_Init"]),
        // A Swift error escaping main: the runtime traps (SIGILL, 128 + 4).
        Failure(mode: "throw", np: 2, failingRank: 1, status: 132, stderr: ["Error raised at top level", "process rank 1"]),
    ])
    func aFailingRankEndsTheJob(_ failure: Failure) throws {
        let r = try MPIRunner.run(np: failure.np, executable: Self.check,
                                  arguments: [failure.mode, "--rank", String(failure.failingRank)], timeout: 30)
        #expect(r.status != 0)
        if let status = failure.status { #expect(r.status == status, "stderr:\n\(r.stderr)") }
        for text in failure.stderr {
            #expect(r.stderr.contains(text), "missing \"\(text)\" in stderr:\n\(r.stderr)")
        }
        #expect(r.seconds < 10, "mpirun took \(r.seconds) s to end the job")
        // No rank gets past the collective the failing rank never joined.
        #expect(!r.stderr.contains("the allreduce returned"), "\(r.stderr)")
    }

    /// A rank that is alive but never joins (MPI cannot tell it from a slow one): only a timeout
    /// ends the job. The runner's timeout must fail the test and leave no rank behind.
    @Test func aHungJobIsKilledByTheTimeout() throws {
        let start = Date()
        let error = #expect(throws: ProcessTimedOut.self) {
            try MPIRunner.run(np: 2, executable: Self.check, arguments: ["hang"], timeout: 3)
        }
        // SIGTERM is enough: mpirun forwards it to the ranks and exits.
        #expect(error?.neededSIGKILL == false)
        #expect(Date().timeIntervalSince(start) < 15)
        #expect(Self.processes(running: Self.check, with: "hang").isEmpty, "ranks left behind")
    }

    /// Live processes whose command line has `executable` as its program and `argument`.
    static func processes(running executable: String, with argument: String) -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { entry -> String? in
            guard Int(entry) != nil,
                  let raw = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { return nil }
            let words = raw.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            return words.first == executable && words.contains(argument) ? entry : nil
        }
    }
}
