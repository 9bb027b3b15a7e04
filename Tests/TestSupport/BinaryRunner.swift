import Foundation

/// Runs a built executable (by default `medusa-worker`), capturing its output, with a timeout.
public struct BinaryRunner {
    public struct Result {
        public var status: Int32
        public var stdout: String
        public var stderr: String
        /// Wall-clock time from launch to exit.
        public var seconds: Double

        /// The last line of stdout parsed as a JSON object.
        public func json() throws -> [String: Any] {
            let line = stdout.split(separator: "\n").last.map(String.init) ?? ""
            return try Self.parseObject(line)
        }

        /// Every stdout line that starts with `{`, parsed as a JSON object (one per rank under mpirun).
        public func jsonLines() throws -> [[String: Any]] {
            try stdout.split(separator: "\n").filter { $0.hasPrefix("{") }.map { try Self.parseObject(String($0)) }
        }

        static func parseObject(_ line: String) throws -> [String: Any] {
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                throw MissingTestData(description: "stdout line is not a JSON object: \(line)")
            }
            return object
        }
    }

    /// `$MEDUSA_WORKER_BINARY`, else `medusa-worker` next to the test bundle.
    public static var binaryPath: String {
        if let env = ProcessInfo.processInfo.environment["MEDUSA_WORKER_BINARY"], !env.isEmpty { return env }
        return builtExecutable(named: "medusa-worker")
    }

    /// The executable `name` of this package as built alongside the test bundle (the build folder,
    /// `.build/<configuration>/`, searched upwards from the test binary).
    public static func builtExecutable(named name: String) -> String {
        var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = dir.appendingPathComponent(name)
            if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate.path }
            dir = dir.deletingLastPathComponent()
        }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(name).path
    }

    /// Runs `medusa-worker` with `arguments`; kills it after `timeout` seconds.
    public static func run(_ arguments: [String], environment: [String: String] = [:], timeout: TimeInterval = 300) throws -> Result {
        try run(executable: binaryPath, arguments: arguments, environment: environment, timeout: timeout)
    }

    /// Runs `executable` with `arguments` and this process's environment plus `environment`, stdin
    /// empty. After `timeout` seconds it sends SIGTERM, then SIGKILL to it and every process it
    /// started (mpirun's ranks) if it is still there 5 s later, and throws `ProcessTimedOut`.
    public static func run(executable: String, arguments: [String], environment: [String: String] = [:],
                           timeout: TimeInterval) throws -> Result {
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw MissingTestData(description: "\(executable) is not an executable: build first (`swift build -c release -Xswiftc -enable-testing --build-tests`, or `make test`)")
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        // Output goes to files (no pipe buffers to drain while waiting).
        let dir = try makeTemporaryDirectory()
        let outPath = dir + "/stdout", errPath = dir + "/stderr"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        let err = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        defer {
            try? out.close()
            try? err.close()
            try? FileManager.default.removeItem(atPath: dir)
        }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = out
        process.standardError = err
        let start = Date()
        try withDefaultSignalMask { try process.run() }
        let deadline = start.addingTimeInterval(timeout)
        func output() -> (String, String) {
            (String(decoding: FileManager.default.contents(atPath: outPath) ?? Data(), as: UTF8.self),
             String(decoding: FileManager.default.contents(atPath: errPath) ?? Data(), as: UTF8.self))
        }
        while process.isRunning {
            if Date() > deadline {
                let pid = process.processIdentifier
                let children = descendants(of: pid)
                process.terminate()
                let grace = Date().addingTimeInterval(5)
                while process.isRunning && Date() < grace { usleep(10_000) }
                let forced = process.isRunning
                if forced { kill(pid, SIGKILL) }
                for child in children { kill(child, SIGKILL) }
                process.waitUntilExit()
                let (stdout, stderr) = output()
                throw ProcessTimedOut(command: ([executable] + arguments).joined(separator: " "), timeout: timeout,
                                      neededSIGKILL: forced, stdout: stdout, stderr: stderr)
            }
            usleep(10_000)
        }
        process.waitUntilExit()
        let seconds = Date().timeIntervalSince(start)
        let (stdout, stderr) = output()
        return Result(status: process.terminationStatus, stdout: stdout, stderr: stderr, seconds: seconds)
    }

    /// Runs `body` with no signal blocked on this thread. A child inherits the signal mask of the
    /// thread that spawns it, and the threads that run tests (libdispatch's workers) block SIGTERM
    /// and most other signals: a child started from one would ignore `terminate()` (measured:
    /// mpirun then outlived SIGTERM until SIGKILL), and mpirun could not forward it to its ranks.
    static func withDefaultSignalMask<R>(_ body: () throws -> R) rethrows -> R {
        var none = sigset_t(), saved = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, &saved)
        defer { pthread_sigmask(SIG_SETMASK, &saved, nil) }
        return try body()
    }

    /// The processes below `pid` (children, grandchildren, ...), from /proc; empty elsewhere.
    static func descendants(of pid: Int32) -> [Int32] {
        var parents: [Int32: Int32] = [:]
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let child = Int32(entry),
                  let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { continue }
            // Fields after the command name: state, ppid, ...
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 1, let parent = Int32(fields[1]) { parents[child] = parent }
        }
        var found: [Int32] = []
        var frontier: Set<Int32> = [pid]
        while !frontier.isEmpty {
            let next = parents.filter { frontier.contains($0.value) }.map(\.key)
            found += next
            frontier = Set(next)
        }
        return found
    }
}

/// A helper process that did not finish in time (and was killed), with what it printed.
public struct ProcessTimedOut: Error, CustomStringConvertible {
    public var command: String
    public var timeout: TimeInterval
    /// Whether the process outlived SIGTERM by 5 s and had to be killed.
    public var neededSIGKILL: Bool
    public var stdout: String
    public var stderr: String
    public var description: String {
        "\(command) did not finish in \(timeout) s; stderr:\n\(stderr.suffix(2000))"
    }
}

/// Runs a program under Open MPI's `mpirun` as the multi-rank tests need it (as root in a
/// container, more ranks than cores). One place for the launcher's command line, so multi-rank
/// CLI tests only say how many ranks and which arguments.
public enum MPIRunner {
    /// The `mpirun` options, each needed here:
    /// - `--oversubscribe`: the tests start up to 4 ranks on a 2-core machine; without it Open MPI
    ///   refuses to start more ranks than it counts slots (cores).
    /// - `--bind-to none`: for up to 2 ranks Open MPI binds each rank to one core, which would
    ///   confine a rank's kernel thread pool to that core and pin the ranks of concurrently
    ///   running tests onto the same cores. Let the kernel schedule instead.
    /// - `--mca btl_vader_single_copy_mechanism none`: defensive. The shared-memory transport
    ///   (vader) copies large messages straight between processes with CMA (`process_vm_readv`),
    ///   which some containers forbid (a seccomp profile without it, Yama ptrace_scope >= 2), and
    ///   then large collectives fail at run time. Here it works (even without CAP_SYS_PTRACE);
    ///   CI may differ, and copying through the shared segment always works.
    /// Not needed (checked with Open MPI 4.1.4 in a Debian 12 container): restricting `--mca btl
    /// self,vader` (no warnings from the other transports here, no startup time gained), a
    /// `TMPDIR` of its own (the session directory under /tmp works), `--host localhost:N`.
    public static let options = [
        "--oversubscribe", "--bind-to", "none", "--mca", "btl_vader_single_copy_mechanism", "none",
    ]

    /// The environment added for `mpirun`: Open MPI refuses to run as root (CI does) unless both
    /// variables are set (equivalent to `--allow-run-as-root`; harmless for other users).
    public static let environment = [
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
    ]

    /// `mpirun` from `$PATH` (Debian's `openmpi-bin`, installed by `make setup`).
    public static func mpirunPath() throws -> String {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":") {
            let candidate = "\(dir)/mpirun"
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
        }
        throw MissingTestData(description: "mpirun not found in PATH (install openmpi-bin: run `make setup`)")
    }

    /// The arguments given to `mpirun` to start `np` copies of `executable arguments`.
    public static func mpirunArguments(np: Int, executable: String, arguments: [String]) -> [String] {
        options + ["-np", String(np), executable] + arguments
    }

    /// Runs `executable arguments` (default: `medusa-worker`) as `np` ranks under `mpirun`; kills
    /// the job (mpirun and every rank) after `timeout` seconds and throws `ProcessTimedOut`.
    /// `status` is mpirun's exit status: 0 when every rank exited 0 after MPI_Finalize.
    public static func run(np: Int, executable: String = BinaryRunner.binaryPath, arguments: [String],
                           environment: [String: String] = [:], timeout: TimeInterval = 120) throws -> BinaryRunner.Result {
        precondition(np >= 1)
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw MissingTestData(description: "\(executable) is not an executable: build first (`swift build -c release -Xswiftc -enable-testing --build-tests`, or `make test`)")
        }
        return try BinaryRunner.run(
            executable: try mpirunPath(),
            arguments: mpirunArguments(np: np, executable: executable, arguments: arguments),
            environment: Self.environment.merging(environment) { $1 },
            timeout: timeout)
    }
}
