import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A group of processes that run the same program and exchange tensors.
///
/// Rank 0 is the coordinator. Every collective call must be made by every rank, in the same order,
/// with matching sizes and the same root. Two implementations: `MPICommunicator` (under `mpirun`)
/// and `SingleProcessCommunicator` (the group of one); `MPIEnvironment.makeCommunicator()` picks.
///
/// Errors: a collective that throws leaves the group in an unknown state (other ranks may be
/// blocked in the same call, or may have got no error at all). Do not retry or carry on: end the
/// whole job with `fail(_:code:)`, which is what makes a failing rank stop every other rank.
public protocol Communicator: AnyObject, Sendable {
    /// This process's index in the group, 0 ..< size.
    var rank: Int { get }
    /// Number of processes in the group.
    var size: Int { get }

    /// Sums `buffer` elementwise across all ranks, leaving the result on every rank.
    func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws(CollectiveError)
    /// Copies `buffer` from `root` to every other rank (the same byte count on every rank).
    func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws(CollectiveError)
    /// Concatenates every rank's `send` bytes (the same count on every rank) on `root`, in rank
    /// order: rank r's bytes land at `receive[r * send.count ..< (r + 1) * send.count]`. On root,
    /// `receive` must hold at least `size * send.count` bytes (bytes after that are untouched); on
    /// the other ranks it is not used and may be empty.
    func gather(_ send: UnsafeRawBufferPointer, into receive: UnsafeMutableRawBufferPointer, root: Int) throws(CollectiveError)
    /// `broadcast` for a message that may be long in coming (a server's next step): ranks other
    /// than `root` wait without keeping a core busy. The same byte count on every rank; every rank
    /// must use this call (not `broadcast`) for the same message.
    func broadcastWaiting(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws(CollectiveError)
    /// Blocks until every rank has called it.
    func barrier() throws(CollectiveError)
    /// Ends every rank of the job with `code` (use a non-zero code: it becomes the job's exit
    /// status). Does not return. Prefer `fail(_:code:)`, which also says why.
    func abort(code: Int32) -> Never
    /// Leaves the group cleanly. Every rank calls it once, after its last collective and only on
    /// the success path; collectives after it throw. (Under MPI this is `MPI_Finalize`, which waits
    /// for every rank: never call it on an error path, call `fail` there.)
    func finalize() throws(CollectiveError)
    /// What this rank's collectives have carried so far (calls, payload bytes, seconds inside
    /// them), counted from the start; subtract two readings to measure a stretch of work.
    var traffic: CollectiveTraffic { get }
}

extension Communicator {
    public var isCoordinator: Bool { rank == 0 }

    /// Broadcasts a typed buffer of trivial values.
    public func broadcast<T: BitwiseCopyable>(
        _ buffer: UnsafeMutableBufferPointer<T>, root: Int
    ) throws(CollectiveError) {
        try broadcast(UnsafeMutableRawBufferPointer(buffer), root: root)
    }

    /// Gathers a typed buffer of trivial values: on `root`, `receive` (at least `size * send.count`
    /// elements) gets rank r's elements at `r * send.count`; elsewhere `receive` is unused.
    public func gather<T: BitwiseCopyable>(
        _ send: UnsafeBufferPointer<T>, into receive: UnsafeMutableBufferPointer<T>, root: Int
    ) throws(CollectiveError) {
        try gather(UnsafeRawBufferPointer(send), into: UnsafeMutableRawBufferPointer(receive), root: root)
    }

    /// Gathers `values` (the same count on every rank): on `root`, every rank's values
    /// concatenated in rank order; nil on the other ranks.
    public func gather<T: BitwiseCopyable>(_ values: [T], root: Int) throws(CollectiveError) -> [T]? {
        let isRoot = rank == root
        var all = [T]()
        if isRoot, !values.isEmpty {
            all = Array(unsafeUninitializedCapacity: size * values.count) { buffer, initialized in
                // Zero bytes until the gather below overwrites them (valid for BitwiseCopyable T).
                UnsafeMutableRawBufferPointer(buffer).initializeMemory(as: UInt8.self, repeating: 0)
                initialized = buffer.count
            }
        }
        try values.withUnsafeBufferPointer { (send) throws(CollectiveError) in
            try all.withUnsafeMutableBufferPointer { (receive) throws(CollectiveError) in
                try gather(send, into: receive, root: root)
            }
        }
        return isRoot ? all : nil
    }

    /// Says why this rank gives up and ends the whole job: prints `error: rank R: <reason>` (just
    /// `error: <reason>` in a group of one) as one line on stderr, then `abort(code:)`. Under
    /// `mpirun` every other rank is killed and `mpirun` exits with `code` (see `MPICommunicator`).
    public func fail(_ reason: String, code: Int32 = 1) -> Never {
        let line = size > 1 ? "error: rank \(rank): \(reason)\n" : "error: \(reason)\n"
        writeToStandardError(line)
        abort(code: code == 0 ? 1 : code)
    }
}

/// Writes `text` to file descriptor 2 (unbuffered) after flushing stdio, so that what this process
/// printed before reaches its destination ahead of an abort.
func writeToStandardError(_ text: String) {
    fflush(nil)
    let bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let written = bytes.withUnsafeBytes { write(2, $0.baseAddress! + offset, $0.count - offset) }
        if written < 0 {
            if errno == EINTR { continue }
            return
        }
        offset += written
    }
}

/// What a rank's collective calls carried: per kind of collective, the calls made, the payload
/// bytes this rank sent and received, and the seconds spent inside the calls (waiting for the
/// other ranks included).
///
/// Payload is the data that has to leave or reach this rank, not what the MPI library puts on the
/// wire (that depends on its algorithm: recursive doubling sends a whole allreduce buffer log2(P)
/// times, a ring about twice, and a broadcast tree forwards through intermediate ranks). Per call
/// of n bytes: allreduce sends and receives n (this rank's contribution out, the sum in);
/// broadcast, the root sends n and every other rank receives n; gather, every rank but the root
/// sends n and the root receives (P - 1) n.
public struct CollectiveTraffic: Sendable, Equatable, Codable {
    public struct Counter: Sendable, Equatable, Codable {
        public var calls = 0
        public var sent = 0
        public var received = 0
        public var seconds = 0.0

        public init(calls: Int = 0, sent: Int = 0, received: Int = 0, seconds: Double = 0) {
            self.calls = calls
            self.sent = sent
            self.received = received
            self.seconds = seconds
        }

        public static func - (a: Counter, b: Counter) -> Counter {
            Counter(calls: a.calls - b.calls, sent: a.sent - b.sent, received: a.received - b.received,
                    seconds: a.seconds - b.seconds)
        }

        public static func + (a: Counter, b: Counter) -> Counter {
            Counter(calls: a.calls + b.calls, sent: a.sent + b.sent, received: a.received + b.received,
                    seconds: a.seconds + b.seconds)
        }
    }

    /// `allreduceSum` (whatever its payload encoding: the bytes are the encoded bytes).
    public var allreduce = Counter()
    /// `broadcast` and `broadcastWaiting`.
    public var broadcast = Counter()
    public var gather = Counter()
    public var barrier = Counter()

    public init() {}

    public var total: Counter { allreduce + broadcast + gather + barrier }

    public static func - (a: CollectiveTraffic, b: CollectiveTraffic) -> CollectiveTraffic {
        var d = CollectiveTraffic()
        d.allreduce = a.allreduce - b.allreduce
        d.broadcast = a.broadcast - b.broadcast
        d.gather = a.gather - b.gather
        d.barrier = a.barrier - b.barrier
        return d
    }

    public static func + (a: CollectiveTraffic, b: CollectiveTraffic) -> CollectiveTraffic {
        var d = CollectiveTraffic()
        d.allreduce = a.allreduce + b.allreduce
        d.broadcast = a.broadcast + b.broadcast
        d.gather = a.gather + b.gather
        d.barrier = a.barrier + b.barrier
        return d
    }
}

/// Counts a communicator's collectives. Calls come from one thread (the engine's); the lock only
/// keeps a reading from another thread consistent.
final class TrafficMeter: Sendable {
    enum Kind { case allreduce, broadcast, gather, barrier }

    private let state = Mutex(CollectiveTraffic())

    var reading: CollectiveTraffic { state.withLock { $0 } }

    /// Runs `body` (one collective that sends and receives these payload bytes on this rank) and
    /// counts it, also when it throws.
    @inline(__always)
    func measure<R>(_ kind: Kind, sent: Int, received: Int, _ body: () throws(CollectiveError) -> R) throws(CollectiveError) -> R {
        let start = monotonicNanoseconds()
        defer {
            let call = CollectiveTraffic.Counter(calls: 1, sent: sent, received: received,
                                                 seconds: Double(monotonicNanoseconds() &- start) * 1e-9)
            state.withLock { t in
                switch kind {
                case .allreduce: t.allreduce = t.allreduce + call
                case .broadcast: t.broadcast = t.broadcast + call
                case .gather: t.gather = t.gather + call
                case .barrier: t.barrier = t.barrier + call
                }
            }
        }
        return try body()
    }
}

func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// What went wrong in a collective call.
public struct CollectiveError: Error, CustomStringConvertible, Sendable {
    /// The call that failed (`allreduceSum`, `broadcast`, `MPI_Init_thread`, ...).
    public var operation: String
    /// MPI's error code, or `CollectiveError.usageCode` for a mistake caught before calling MPI.
    public var code: Int32
    /// MPI's own text for `code` (`MPI_Error_string`), or what the caller got wrong.
    public var message: String

    /// The code of errors detected by this module rather than returned by MPI.
    public static let usageCode: Int32 = -1

    public init(operation: String, code: Int32, message: String) {
        self.operation = operation
        self.code = code
        self.message = message
    }

    static func usage(_ operation: String, _ message: String) -> CollectiveError {
        CollectiveError(operation: operation, code: usageCode, message: message)
    }

    public var description: String {
        code == Self.usageCode ? "\(operation): \(message)" : "\(operation) failed (MPI error \(code)): \(message)"
    }
}

/// The group of one: collectives are identities (gather is a copy). Used when the binary runs
/// without `mpirun`. It checks what the MPI group checks (roots, buffer sizes, no use after
/// `finalize`), so code that runs on it follows the same rules.
public final class SingleProcessCommunicator: Communicator {
    private let finalized = Atomic<Bool>(false)

    public init() {}
    /// Always zero: nothing leaves the process.
    public var traffic: CollectiveTraffic { CollectiveTraffic() }
    public var rank: Int { 0 }
    public var size: Int { 1 }

    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws(CollectiveError) {
        try checkUsable("allreduceSum")
    }

    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws(CollectiveError) {
        try checkUsable("broadcast")
        try checkRoot(root, "broadcast")
    }

    public func gather(_ send: UnsafeRawBufferPointer, into receive: UnsafeMutableRawBufferPointer, root: Int) throws(CollectiveError) {
        try checkUsable("gather")
        try checkRoot(root, "gather")
        guard receive.count >= send.count else {
            throw .usage("gather", "the receive buffer holds \(receive.count) bytes, the group sends 1 x \(send.count)")
        }
        guard let source = send.baseAddress, let destination = receive.baseAddress, send.count > 0 else { return }
        destination.copyMemory(from: source, byteCount: send.count)
    }

    public func broadcastWaiting(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws(CollectiveError) {
        try broadcast(buffer, root: root)
    }

    public func barrier() throws(CollectiveError) {
        try checkUsable("barrier")
    }

    public func abort(code: Int32) -> Never {
        fflush(nil)
        exit(code)
    }

    public func finalize() throws(CollectiveError) {
        finalized.store(true, ordering: .sequentiallyConsistent)
    }

    private func checkUsable(_ operation: String) throws(CollectiveError) {
        if finalized.load(ordering: .relaxed) {
            throw .usage(operation, "called after finalize()")
        }
    }

    private func checkRoot(_ root: Int, _ operation: String) throws(CollectiveError) {
        guard root == 0 else {
            throw .usage(operation, "root \(root) is not a rank of a 1-process group")
        }
    }
}

/// Splits `count` elements into consecutive ranges of at most `limit` (MPI counts are `Int32`).
/// Always at least one range, possibly empty, so that a collective on an empty buffer still makes
/// its one MPI call (every rank takes part, and MPI still checks the arguments).
func chunkRanges(count: Int, limit: Int) -> [Range<Int>] {
    precondition(count >= 0 && limit > 0)
    if count <= limit { return [0..<count] }
    return stride(from: 0, to: count, by: limit).map { $0..<min($0 + limit, count) }
}
