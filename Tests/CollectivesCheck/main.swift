// collectives-check: the rank-side program of the multi-process Collectives tests
// (Tests/CollectivesTests/MPIRunTests.swift launches it under `mpirun -np P`). Not a product.
//
//   collectives-check report [--max-count N]   run every collective, print one JSON line per rank
//   collectives-check <failure> [--rank R]     rank R (default 1) fails in the way named, while
//                                              the other ranks wait in an allreduce:
//       abort          fail("injected failure", code: 3) (prints the line, then MPI_Abort)
//       exit           prints an error line, exit(4) without MPI_Finalize
//       exit-zero      exit(0) without MPI_Finalize
//       signal         SIGKILL to itself
//       before-init    prints an error line, exit(5) before MPI is initialised
//       throw          a Swift error escapes main before MPI is initialised (a runtime trap)
//       hang           sleeps for an hour (only a timeout ends this job)
import Collectives

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

struct Usage: Error { var message: String }

var arguments = Array(CommandLine.arguments.dropFirst())
let command = arguments.isEmpty ? "report" : arguments.removeFirst()
var maximumCount: Int?
var failingRank = 1
while !arguments.isEmpty {
    let flag = arguments.removeFirst()
    guard let value = arguments.first.flatMap({ Int($0) }) else {
        writeLine(2, "error: \(flag) needs an integer value")
        exit(64)
    }
    arguments.removeFirst()
    switch flag {
    case "--max-count": maximumCount = value
    case "--rank": failingRank = value
    default:
        writeLine(2, "error: unknown option \(flag)")
        exit(64)
    }
}

func writeLine(_ fd: Int32, _ text: String) {
    let bytes = Array((text + "\n").utf8)
    var offset = 0
    while offset < bytes.count {
        let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, $0.count - offset) }
        if n <= 0 { return }
        offset += n
    }
}

// MARK: Failures

let launcherRank = MPIEnvironment.launcherRank ?? 0
if launcherRank == failingRank {
    switch command {
    case "before-init":
        writeLine(2, "error: rank \(launcherRank): injected failure before MPI_Init")
        exit(5)
    case "throw":
        throw Usage(message: "injected Swift error before MPI_Init on rank \(launcherRank)")
    default: break
    }
}

let communicator: any Communicator
do {
    if let maximumCount {
        communicator = try MPICommunicator.initialize(maximumCountPerCall: maximumCount)
    } else {
        communicator = try MPIEnvironment.makeCommunicator()
    }
} catch {
    writeLine(2, "error: rank \(launcherRank): \(error)")
    exit(2)
}

if command != "report" {
    let rank = communicator.rank
    try? communicator.barrier()  // every rank is past MPI_Init
    if rank == failingRank {
        switch command {
        case "abort":
            communicator.fail("injected failure", code: 3)
        case "exit":
            writeLine(2, "error: rank \(rank): injected exit(4) without MPI_Finalize")
            exit(4)
        case "exit-zero":
            exit(0)
        case "signal":
            raise(SIGKILL)
        case "hang":
            sleep(3600)
        case "before-init", "throw":
            break
        default:
            communicator.fail("unknown command \(command)", code: 64)
        }
    }
    // The other ranks wait for the failing one in a collective it never joins.
    var value: [Float] = [1]
    do {
        try value.withUnsafeMutableBufferPointer { (buffer) throws(CollectiveError) in try communicator.allreduceSum(buffer) }
    } catch {
        communicator.fail("\(error)")
    }
    communicator.fail("the allreduce returned although rank \(failingRank) never joined it", code: 70)
}

// MARK: Report

/// One rank's findings, printed as one JSON object.
struct Report {
    var fields: [(String, String)] = []
    var failures: [String] = []

    mutating func set(_ key: String, _ value: Int) { fields.append((key, String(value))) }
    mutating func set(_ key: String, _ value: String) { fields.append((key, quoted(value))) }
    mutating func set(_ key: String, _ values: [Int]) {
        fields.append((key, "[" + values.map(String.init).joined(separator: ",") + "]"))
    }
    mutating func expect(_ condition: Bool, _ what: @autoclosure () -> String) {
        if !condition { failures.append(what()) }
    }

    var json: String {
        let all = fields + [("failures", "[" + failures.map(quoted).joined(separator: ",") + "]")]
        return "{" + all.map { quoted($0.0) + ":" + $0.1 }.joined(separator: ",") + "}"
    }
}

func quoted(_ s: String) -> String {
    var out = "\""
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case _ where scalar.value < 0x20:
            let hex = String(scalar.value, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}

func now() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_REALTIME, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
}

/// "no error", "usage: <message>" or "mpi <code>: <MPI_Error_string>".
func errorText(_ body: () throws(CollectiveError) -> Void) -> String {
    do {
        try body()
        return "no error"
    } catch {
        return error.code == CollectiveError.usageCode ? "usage: \(error.message)" : "mpi \(error.code): \(error.message)"
    }
}

/// A collective made from a thread other than the one that initialised MPI.
final class ThreadProbe: @unchecked Sendable {
    let comm: any Communicator
    var text = ""
    init(_ comm: any Communicator) { self.comm = comm }
}

/// Runs every collective on `comm` and checks the results on this rank.
func runReport(_ comm: any Communicator) -> Report {
    let rank = comm.rank, size = comm.size
    var report = Report()
    report.set("rank", rank)
    report.set("size", size)
    report.set("launcher_rank", MPIEnvironment.launcherRank ?? -1)
    report.set("launcher_size", MPIEnvironment.launcherWorldSize ?? -1)
    report.set("communicator", String(describing: type(of: comm)))
    report.set("max_count", (comm as? MPICommunicator)?.maximumCountPerCall ?? -1)

    func attempt(_ what: String, _ body: () throws(CollectiveError) -> Void) {
        do { try body() } catch { report.failures.append("\(what): \(error)") }
    }

    // allreduceSum: rank r contributes (r + 1) * (i % 17) + i % 5 at index i; every value is a small
    // integer, so the float sums are exact: (P(P+1)/2) * (i % 17) + P * (i % 5).
    let triangle = size * (size + 1) / 2
    let beforeAllreduce = comm.traffic
    for count in [0, 1, 7, 1023, 4097, 1 << 20 + 5] {
        var values = (0..<count).map { Float((rank + 1) * ($0 % 17) + $0 % 5) }
        attempt("allreduceSum(\(count))") { () throws(CollectiveError) in
            try values.withUnsafeMutableBufferPointer { (b) throws(CollectiveError) in try comm.allreduceSum(b) }
        }
        let wrong = (0..<count).filter { values[$0] != Float(triangle * ($0 % 17) + size * ($0 % 5)) }
        report.expect(wrong.isEmpty, "allreduceSum(\(count)): \(wrong.count) wrong sums, first at \(wrong.first ?? -1): \(wrong.first.map { values[$0] } ?? 0)")
    }
    var single: [Float] = [Float(rank + 1)]
    attempt("allreduceSum(rank + 1)") { () throws(CollectiveError) in
        try single.withUnsafeMutableBufferPointer { (b) throws(CollectiveError) in try comm.allreduceSum(b) }
    }
    report.set("sum_of_rank_plus_one", Int(single[0]))

    // traffic: one call per allreduceSum that has values (however many MPI calls a long buffer
    // takes), its bytes, time spent; nothing else counted. Zero on the group of one.
    let counted = comm.traffic - beforeAllreduce
    let moving = comm is SingleProcessCommunicator ? 0 : 1
    let expectedBytes = 4 * (1 + 7 + 1023 + 4097 + (1 << 20 + 5) + 1)
    report.set("traffic_allreduce_calls", counted.allreduce.calls)
    report.set("traffic_allreduce_bytes", counted.allreduce.sent)
    report.expect(counted.allreduce == .init(calls: 6 * moving, sent: expectedBytes * moving, received: expectedBytes * moving,
                                             seconds: counted.allreduce.seconds),
                  "traffic: allreduce \(counted.allreduce), expected \(6 * moving) calls of \(expectedBytes * moving) bytes each way")
    report.expect((counted.allreduce.seconds > 0) == (moving == 1), "traffic: \(counted.allreduce.seconds) s in allreduce")
    report.expect(counted.broadcast == .init() && counted.gather == .init() && counted.barrier == .init(),
                  "traffic: other collectives counted during the allreduces: \(counted)")
    let beforeBroadcast = comm.traffic

    // broadcast: from root 0, the last rank and the middle one; bytes and a typed Int64 buffer.
    func pattern(_ i: Int, _ root: Int) -> UInt8 { UInt8(truncatingIfNeeded: i &* 31 &+ root &* 7 &+ 1) }
    var broadcastValues: [Int] = []
    for root in Set([0, size - 1, size / 2]).sorted() {
        for count in [0, 13, 1 << 20 + 3] {
            var bytes = (0..<count).map { rank == root ? pattern($0, root) : 0xEE }
            attempt("broadcast(\(count), root \(root))") { () throws(CollectiveError) in
                try bytes.withUnsafeMutableBufferPointer { (b) throws(CollectiveError) in try comm.broadcast(b, root: root) }
            }
            let wrong = (0..<count).filter { bytes[$0] != pattern($0, root) }
            report.expect(wrong.isEmpty, "broadcast(\(count), root \(root)): \(wrong.count) wrong bytes")
        }
        var typed: [Int64] = rank == root ? [Int64(root) * 1_000_000_007, -Int64(root) - 1, Int64.max] : [0, 0, 0]
        attempt("typed broadcast, root \(root)") { () throws(CollectiveError) in
            try typed.withUnsafeMutableBufferPointer { (b) throws(CollectiveError) in try comm.broadcast(b, root: root) }
        }
        report.expect(typed == [Int64(root) * 1_000_000_007, -Int64(root) - 1, Int64.max], "typed broadcast, root \(root): got \(typed)")
        broadcastValues.append(Int(typed[0] / 1_000_000_007))
    }
    report.set("broadcast_roots_received", broadcastValues)
    let roots = Set([0, size - 1, size / 2]).count
    let broadcasts = comm.traffic - beforeBroadcast
    // Each root broadcasts 0, 13, 2^20 + 3 and 24 bytes: sent by the root, received by the others.
    let perRoot = 13 + (1 << 20 + 3) + 24
    let asRoot = Set([0, size - 1, size / 2]).contains(rank) ? 1 : 0
    report.expect(broadcasts.broadcast.calls == 4 * roots * moving
                      && broadcasts.broadcast.sent == asRoot * perRoot * moving
                      && broadcasts.broadcast.received == (roots - asRoot) * perRoot * moving,
                  "traffic: broadcast \(broadcasts.broadcast) for \(roots) roots")

    // broadcastWaiting: the root is 80 ms late; the others must get the bytes without spinning
    // a core all that time (they sleep between polls after the first 2 ms).
    do {
        var bytes = (0..<4096).map { rank == 0 ? pattern($0, 5) : 0xEE }
        func seconds(_ clock: clockid_t) -> Double {
            var ts = timespec()
            clock_gettime(clock, &ts)
            return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
        }
        if rank == 0 { usleep(80_000) }
        let cpuBefore = seconds(CLOCK_THREAD_CPUTIME_ID), wallBefore = seconds(CLOCK_MONOTONIC)
        attempt("broadcastWaiting(4096)") { () throws(CollectiveError) in
            try bytes.withUnsafeMutableBufferPointer { (b) throws(CollectiveError) in
                try comm.broadcastWaiting(UnsafeMutableRawBufferPointer(b), root: 0)
            }
        }
        let cpu = seconds(CLOCK_THREAD_CPUTIME_ID) - cpuBefore, wall = seconds(CLOCK_MONOTONIC) - wallBefore
        report.expect((0..<4096).allSatisfy { bytes[$0] == pattern($0, 5) }, "broadcastWaiting: wrong bytes")
        if rank != 0 && size > 1 {
            report.expect(wall < 0.04 || cpu < 0.5 * wall, "broadcastWaiting kept a core busy: \(cpu) s of CPU in \(wall) s")
        }
    }

    // gather: rank r's block of n bytes is (r, i) -> pattern; root 0 and the last rank collect.
    func block(_ r: Int, _ i: Int) -> UInt8 { UInt8(truncatingIfNeeded: r &* 101 &+ i &* 13 &+ 5) }
    for root in Set([0, size - 1]).sorted() {
        for count in [0, 5, 100_003] {
            let mine = (0..<count).map { block(rank, $0) }
            var all = [UInt8](repeating: 0xEE, count: rank == root ? size * count + 3 : 0)
            attempt("gather(\(count), root \(root))") { () throws(CollectiveError) in
                try mine.withUnsafeBufferPointer { (send) throws(CollectiveError) in
                    try all.withUnsafeMutableBufferPointer { (receive) throws(CollectiveError) in
                        try comm.gather(UnsafeRawBufferPointer(send), into: UnsafeMutableRawBufferPointer(receive), root: root)
                    }
                }
            }
            if rank == root {
                let wrong = (0..<(size * count)).filter { all[$0] != block($0 / count, $0 % count) }
                report.expect(wrong.isEmpty, "gather(\(count), root \(root)): \(wrong.count) wrong bytes")
                report.expect(all.suffix(3) == [0xEE, 0xEE, 0xEE], "gather(\(count), root \(root)) wrote past size * count")
            }
        }
        // The typed array form: [rank, 10 * rank + 1] from every rank.
        do {
            let gathered = try comm.gather([Int32(rank), Int32(10 * rank + 1)], root: root)
            if rank == root {
                let values = gathered.map { $0.map(Int.init) } ?? []
                if root == 0 { report.set("gathered_at_first", values) }
                if root == size - 1 { report.set("gathered_at_last", values) }
            } else {
                report.expect(gathered == nil, "typed gather returned values on non-root rank \(rank)")
            }
        } catch {
            report.failures.append("typed gather, root \(root): \(error)")
        }
    }

    // barrier: rank r arrives 40 r ms late; nobody may leave before the last one has arrived.
    usleep(UInt32(40_000 * rank))
    let arrived = now()
    attempt("barrier") { () throws(CollectiveError) in try comm.barrier() }
    let left = now()
    do {
        if let times = try comm.gather([arrived, left], root: 0) {
            let lastArrival = stride(from: 0, to: times.count, by: 2).map { times[$0] }.max()!
            let firstDeparture = stride(from: 1, to: times.count, by: 2).map { times[$0] }.min()!
            report.set("barrier_wait_ms", Int(((firstDeparture - lastArrival) * 1000).rounded(.down)))
            report.expect(firstDeparture >= lastArrival, "a rank left the barrier \(lastArrival - firstDeparture) s before the last one arrived")
        }
    } catch {
        report.failures.append("gather of barrier times: \(error)")
    }

    // Typed errors. An invalid root is caught by MPI's argument checks on every rank, so every rank
    // gets the error and the group stays consistent.
    var probe: [UInt8] = [1, 2, 3]
    report.set("broadcast_root_size_error", errorText { () throws(CollectiveError) in
        try probe.withUnsafeMutableBufferPointer { (b) throws(CollectiveError) in try comm.broadcast(b, root: size) }
    })
    report.set("broadcast_root_negative_error", errorText { () throws(CollectiveError) in
        try probe.withUnsafeMutableBufferPointer { (b) throws(CollectiveError) in try comm.broadcast(b, root: -1) }
    })
    report.set("gather_root_size_error", errorText { () throws(CollectiveError) in
        var received = [UInt8](repeating: 0, count: 3 * size)
        try probe.withUnsafeBufferPointer { (s) throws(CollectiveError) in
            try received.withUnsafeMutableBufferPointer { (r) throws(CollectiveError) in try comm.gather(s, into: r, root: size) }
        }
    })
    // MPI_THREAD_FUNNELED: a call from another thread is refused before it reaches MPI.
    let fromThread = ThreadProbe(comm)
    var thread = pthread_t()
    let context = Unmanaged.passRetained(fromThread).toOpaque()
    pthread_create(&thread, nil, { raw in
        let probe = Unmanaged<ThreadProbe>.fromOpaque(raw!).takeRetainedValue()
        var values: [Float] = [1]
        probe.text = errorText { () throws(CollectiveError) in
            try values.withUnsafeMutableBufferPointer { (b) throws(CollectiveError) in try probe.comm.allreduceSum(b) }
        }
        return nil
    }, context)
    pthread_join(thread, nil)
    report.set("other_thread_error", fromThread.text)

    attempt("barrier before finalize") { () throws(CollectiveError) in try comm.barrier() }
    attempt("finalize") { () throws(CollectiveError) in try comm.finalize() }
    report.set("after_finalize_error", errorText { () throws(CollectiveError) in try comm.barrier() })
    return report
}

let report = runReport(communicator)
writeLine(1, report.json)
exit(report.failures.isEmpty ? 0 : 1)
