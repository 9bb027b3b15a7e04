import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Several "machines" on this one, for multi-host tests: Linux network namespaces joined by a
/// switch (`scripts/emulated-hosts.sh`), with jobs started by the bare-metal launch recipe
/// (`deploy/bare-metal/launch.sh`, its Open MPI settings and all) from host 1, where `mpirun`
/// starts its remote daemons through the script's namespace-entering rsh agent instead of ssh.
/// Every multi-host test goes through this type: it owns how hosts and jobs start and stop.
///
/// Hosts are numbered from 1; host i is `host<i>` at `address(i)`. `shutDown()` (or deinit) kills
/// every process in the hosts and removes them; a run whose test process was killed before that is
/// removed by the next `init` on this machine (the script sweeps runs whose owner is gone).
public final class EmulatedHosts: @unchecked Sendable {
    // Used from one test at a time.

    /// `scripts/emulated-hosts.sh`.
    public static var script: String { TestData.repositoryRoot + "/scripts/emulated-hosts.sh" }
    /// `deploy/bare-metal/launch.sh`.
    public static var launchScript: String { TestData.repositoryRoot + "/deploy/bare-metal/launch.sh" }

    /// Why network namespaces cannot be used here (not root, no `ip`, a container that forbids
    /// them), or nil when they can. Checked once per process.
    public static var unavailableReason: String? { availability }
    private static let availability: String? = {
        guard let r = try? BinaryRunner.run(executable: script, arguments: ["check"], timeout: 30) else {
            return "\(script) check did not finish"
        }
        if r.status == 0 { return nil }
        var reason = r.stderr.trimmingCharacters(in: .whitespacesAndNewlines)
        if reason.hasPrefix("emulated-hosts: ") { reason.removeFirst("emulated-hosts: ".count) }
        return reason.isEmpty ? "\(script) check exited with \(r.status)" : reason
    }()

    private static let counter = Atomic<Int>(0)

    /// The run's name (`<this pid>-<n>`): its namespaces are `mtp-<run>-h<i>` and `mtp-<run>-sw`.
    public let run: String
    public let count: Int
    /// The hosts' network, e.g. 10.231.0.0/24.
    public let network: String
    private var removed = false
    private let directory: String

    /// Creates `count` hosts; `rate` (tc syntax: `1gbit`, `10gbit`) limits every link both ways.
    public init(count: Int, rate: String? = nil) throws {
        precondition(count >= 1)
        if let reason = Self.unavailableReason {
            throw MissingTestData(description: "emulated hosts are not available: \(reason)")
        }
        run = "\(getpid())-\(Self.counter.add(1, ordering: .relaxed).newValue)"
        self.count = count
        directory = try makeTemporaryDirectory()
        let net = try Self.script(["network"])
        network = net.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        _ = try Self.script(["up", run, String(count)] + (rate.map { [$0] } ?? []))
    }

    deinit { shutDown() }

    /// Kills every process left in the hosts and removes them (idempotent).
    public func shutDown() {
        guard !removed else { return }
        removed = true
        _ = try? Self.script(["down", run])
        try? FileManager.default.removeItem(atPath: directory)
    }

    public func hostname(_ host: Int) -> String { "host\(host)" }

    /// Host i's address (the network's .i).
    public func address(_ host: Int) -> String {
        network.split(separator: ".").prefix(3).joined(separator: ".") + ".\(host)"
    }

    /// The command that runs `program arguments` as `hosts` x `ranksPerHost` ranks through the
    /// bare-metal launch script, started in host 1: rank r on host r / ranksPerHost + 1.
    public func launchCommand(hosts: Int? = nil, ranksPerHost: Int = 1, program: String, arguments: [String],
                              launcherOptions: [String] = []) throws -> [String] {
        let used = hosts ?? count
        precondition((1...count).contains(used) && ranksPerHost >= 1)
        let hostfile = directory + "/hostfile-\(used)"
        try (1...used).map { hostname($0) + "\n" }.joined().write(toFile: hostfile, atomically: true, encoding: .utf8)
        return [Self.script, "exec", run, "1", Self.launchScript, "--hostfile", hostfile, "--network", network,
                "--ranks-per-node", String(ranksPerHost), "--rsh-agent", "\(Self.script) rsh-agent \(run)",
                // Every host shares this machine's cores with the others (and other tests).
                "--shared-cores"] + launcherOptions + ["--", program] + arguments
    }

    /// Runs a job to its end (see `launchCommand`); kills it after `timeout` seconds and throws
    /// `ProcessTimedOut`. `status` is mpirun's.
    public func launch(hosts: Int? = nil, ranksPerHost: Int = 1, program: String = BinaryRunner.binaryPath,
                       arguments: [String], timeout: TimeInterval = 180) throws -> BinaryRunner.Result {
        let command = try launchCommand(hosts: hosts, ranksPerHost: ranksPerHost, program: program, arguments: arguments)
        return try BinaryRunner.run(executable: command[0], arguments: Array(command.dropFirst()),
                                    environment: MPIRunner.environment, timeout: timeout)
    }

    /// Starts a job in the background (see `launchCommand`).
    public func start(hosts: Int? = nil, ranksPerHost: Int = 1, program: String = BinaryRunner.binaryPath,
                      arguments: [String]) throws -> BackgroundProcess {
        let command = try launchCommand(hosts: hosts, ranksPerHost: ranksPerHost, program: program, arguments: arguments)
        return try BackgroundProcess(command, environment: MPIRunner.environment)
    }

    /// Runs `command` on host i (its network, its hostname) to its end.
    public func exec(host: Int, _ command: [String], environment: [String: String] = [:],
                     timeout: TimeInterval = 60) throws -> BinaryRunner.Result {
        try BinaryRunner.run(executable: Self.script, arguments: ["exec", run, String(host)] + command,
                             environment: environment, timeout: timeout)
    }

    /// A process living in one of the hosts.
    public struct HostProcess: Sendable, CustomStringConvertible {
        public var host: Int
        public var pid: Int32
        public var command: String
        public var description: String { "host\(host) pid \(pid): \(command)" }
    }

    /// Every process in the hosts' namespaces now.
    public func processes() throws -> [HostProcess] {
        let r = try Self.script(["pids", run])
        return r.stdout.split(separator: "\n").compactMap { line in
            let fields = line.split(separator: " ", maxSplits: 2)
            guard fields.count >= 2, let host = Int(fields[0]), let pid = Int32(fields[1]) else { return nil }
            return HostProcess(host: host, pid: pid, command: fields.count > 2 ? String(fields[2]) : "")
        }
    }

    /// Switches host i's link (its port on the switch) on or off.
    public func setLink(host: Int, up: Bool) throws {
        _ = try Self.script(["link", run, String(host), up ? "up" : "down"])
    }

    /// Limits every link to `rate` (tc syntax), or removes the limits (nil).
    public func setRate(_ rate: String?) throws {
        _ = try Self.script(["rate", run, rate ?? "unlimited"])
    }

    /// Runs the script; a non-zero exit throws with its stderr.
    @discardableResult
    static func script(_ arguments: [String]) throws -> BinaryRunner.Result {
        let r = try BinaryRunner.run(executable: script, arguments: arguments, timeout: 60)
        guard r.status == 0 else {
            throw MissingTestData(description: "emulated-hosts.sh \(arguments.joined(separator: " ")) exited with \(r.status): \(r.stderr)")
        }
        return r
    }
}

/// A process running in the background with its output in files: a job a test watches, breaks,
/// and waits for. Killed (with every process it started) when discarded unfinished.
public final class BackgroundProcess: @unchecked Sendable {
    // Used from one test at a time.
    public let process = Process()
    private let directory: String
    private let outPath: String
    private let errPath: String
    private let started = Date()

    public init(_ command: [String], environment: [String: String] = [:]) throws {
        guard FileManager.default.isExecutableFile(atPath: command[0]) else {
            throw MissingTestData(description: "\(command[0]) is not an executable")
        }
        directory = try makeTemporaryDirectory()
        outPath = directory + "/stdout"
        errPath = directory + "/stderr"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
        process.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
        try BinaryRunner.withDefaultSignalMask { try process.run() }
    }

    deinit {
        kill()
        try? FileManager.default.removeItem(atPath: directory)
    }

    public var stdout: String { String(decoding: FileManager.default.contents(atPath: outPath) ?? Data(), as: UTF8.self) }
    public var stderr: String { String(decoding: FileManager.default.contents(atPath: errPath) ?? Data(), as: UTF8.self) }
    public var isRunning: Bool { process.isRunning }

    /// Waits until `condition` holds (checked every 50 ms) or the process exits or `timeout`
    /// passes; returns whether it holds.
    public func wait(until condition: () throws -> Bool, timeout: TimeInterval) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if try condition() { return true }
            if !process.isRunning { return try condition() }
            usleep(50_000)
        }
        return try condition()
    }

    /// Waits for the exit; its status, or nil if it is still running after `timeout` seconds.
    public func waitForExit(timeout: TimeInterval) -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning { return nil }
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// SIGKILL to the process and every process it started (nothing if it has ended).
    public func kill() {
        guard process.isRunning else { return }
        let pid = process.processIdentifier
        let children = BinaryRunner.descendants(of: pid)
        Glibc.kill(pid, SIGKILL)
        for child in children { Glibc.kill(child, SIGKILL) }
        process.waitUntilExit()
    }
}
