import CMPI
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `MPI_COMM_WORLD` of a job started by `mpirun`.
///
/// Threads: MPI is initialised with `MPI_THREAD_FUNNELED`, so every call must come from the thread
/// that called `initialize` (the engine thread; worker threads of the kernels never touch MPI).
/// Calls from another thread throw rather than risk undefined behaviour.
///
/// Errors: `MPI_ERRORS_RETURN` is set on the world communicator, so MPI reports a bad argument
/// (an invalid root, say) as a return code; each one becomes a `CollectiveError` carrying
/// `MPI_Error_string`'s text. Counts above `Int32.max` (MPI counts are C `int`) are split into
/// several calls.
///
/// How a failing rank ends the job (Open MPI 4.1.4 as packaged by Debian, measured with `mpirun
/// --oversubscribe -np 3` on one machine; see `Tests/CollectivesTests/MPIRunTests.swift`):
/// - A rank that calls `MPI_Abort` (here `abort(code:)` / `fail(_:code:)`): every rank is killed
///   at once (~0.4 s end to end) and `mpirun` exits with the abort code. Open MPI's own "MPI_ABORT
///   was invoked on rank R" banner is not reliable (it is sometimes replaced by "ORTE_ERROR_LOG:
///   Out of resource in file show_help.c"), which is one reason `fail` prints its own line first.
///   The rank's stderr written before the abort was always delivered in our runs.
/// - A rank that exits with a non-zero status without `MPI_Finalize` (before `MPI_Init`, after it,
///   or while the others wait in a collective; a Swift error escaping `main`, an ArgumentParser
///   validation error): `mpirun` kills the others and exits with that status in ~1.2-1.5 s
///   ("mpirun detected that one or more processes exited with non-zero status").
/// - A rank killed by a signal (SIGKILL, SIGSEGV, a Swift trap): the same, `mpirun` exits with
///   128 + signal (137, 139, ...) in ~1.5 s.
/// - A rank that exits with status 0 without `MPI_Finalize` (before or after `MPI_Init`): `mpirun`
///   treats it as abnormal ("exiting improperly"), kills the others and exits with 1 in ~1.5-2 s.
/// - A rank that calls `MPI_Finalize` while others still wait in a collective: everything hangs,
///   the finalizing rank included (Open MPI's finalize waits for every rank), whatever its exit
///   status would have been. Hence `finalize()` is explicit and only for the agreed, successful
///   end of the job; `deinit` never finalizes (it would run while an error unwinds), and an error
///   path must call `fail`, never `finalize`.
/// - A rank that is alive but never reaches the collective (an infinite loop) cannot be told apart
///   from a slow one; nothing but a timeout ends that job.
public final class MPICommunicator: Communicator {
    public let rank: Int
    public let size: Int
    /// Largest element count passed to one MPI call; longer buffers go in several calls.
    /// `Int32.max` unless lowered at `initialize` (tests lower it to exercise the split).
    public let maximumCountPerCall: Int
    /// The thread level MPI granted (at least `MPI_THREAD_FUNNELED`).
    public let providedThreadLevel: Int32

    private let initializingThread: UInt
    private let finalized = Atomic<Bool>(false)
    private let meter = TrafficMeter()

    public var traffic: CollectiveTraffic { meter.reading }
    private static let initialized = Atomic<Bool>(false)

    private init(rank: Int, size: Int, maximumCountPerCall: Int, providedThreadLevel: Int32) {
        self.rank = rank
        self.size = size
        self.maximumCountPerCall = maximumCountPerCall
        self.providedThreadLevel = providedThreadLevel
        self.initializingThread = currentThreadID()
    }

    /// Initialises MPI (`MPI_Init_thread`, `MPI_THREAD_FUNNELED`) and returns the world group.
    /// Call it once per process, from the thread that will make every collective call: MPI cannot
    /// be initialised twice, so a second call throws.
    public static func initialize(maximumCountPerCall: Int = Int(Int32.max)) throws(CollectiveError) -> MPICommunicator {
        guard (1...Int(Int32.max)).contains(maximumCountPerCall) else {
            throw .usage("MPI_Init_thread", "maximumCountPerCall must be in 1...\(Int32.max), got \(maximumCountPerCall)")
        }
        guard initialized.compareExchange(expected: false, desired: true, ordering: .sequentiallyConsistent).exchanged else {
            throw .usage("MPI_Init_thread", "MPI is already initialised in this process (it can be initialised only once)")
        }
        // Before MPI_Init the default handler (MPI_ERRORS_ARE_FATAL) applies: if initialisation
        // itself fails, Open MPI prints why and aborts the process, and mpirun ends the job.
        var provided: Int32 = 0
        try check(MPI_Init_thread(nil, nil, cmpi_thread_funneled(), &provided), "MPI_Init_thread")
        try check(MPI_Comm_set_errhandler(cmpi_comm_world(), cmpi_errors_return()), "MPI_Comm_set_errhandler")
        guard provided >= cmpi_thread_funneled() else {
            throw .usage("MPI_Init_thread", "MPI provides thread level \(provided), below MPI_THREAD_FUNNELED (\(cmpi_thread_funneled()))")
        }
        var rank: Int32 = 0, size: Int32 = 0
        try check(MPI_Comm_rank(cmpi_comm_world(), &rank), "MPI_Comm_rank")
        try check(MPI_Comm_size(cmpi_comm_world(), &size), "MPI_Comm_size")
        return MPICommunicator(rank: Int(rank), size: Int(size), maximumCountPerCall: maximumCountPerCall,
                               providedThreadLevel: provided)
    }

    // MARK: Collectives

    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws(CollectiveError) {
        let operation = "allreduceSum"
        try checkUsable(operation)
        guard let base = buffer.baseAddress, buffer.count > 0 else { return }
        let bytes = buffer.count * MemoryLayout<Float>.size
        try meter.measure(.allreduce, sent: bytes, received: bytes) { () throws(CollectiveError) in
            for chunk in chunkRanges(count: buffer.count, limit: maximumCountPerCall) {
                try Self.check(MPI_Allreduce(cmpi_in_place(), base + chunk.lowerBound, Int32(chunk.count), cmpi_float(),
                                             cmpi_op_sum(), cmpi_comm_world()), operation)
            }
        }
    }

    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws(CollectiveError) {
        let operation = "broadcast"
        try checkUsable(operation)
        var placeholder: UInt8 = 0
        try meter.measure(.broadcast, sent: rank == root ? buffer.count : 0, received: rank == root ? 0 : buffer.count) { () throws(CollectiveError) in
            try withUnsafeMutablePointer(to: &placeholder) { (empty) throws(CollectiveError) in
                let base = buffer.baseAddress ?? UnsafeMutableRawPointer(empty)
                for chunk in chunkRanges(count: buffer.count, limit: maximumCountPerCall) {
                    try Self.check(MPI_Bcast(base + chunk.lowerBound, Int32(chunk.count), cmpi_byte(),
                                             Int32(clamping: root), cmpi_comm_world()), operation)
                }
            }
        }
    }

    /// `MPI_Ibcast`, then: the root waits (`MPI_Wait`); the others poll (`MPI_Test`), spinning for
    /// the first 2 ms (steps follow each other within that) and then sleeping between polls,
    /// 100 us at first and 1 ms after 50 ms of quiet. A blocking `MPI_Bcast` would spin a core at
    /// 100% for as long as an idle server waits for its next request.
    public func broadcastWaiting(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws(CollectiveError) {
        let operation = "broadcastWaiting"
        try checkUsable(operation)
        guard buffer.count <= maximumCountPerCall else {
            throw .usage(operation, "\(buffer.count) bytes exceed one call's limit of \(maximumCountPerCall)")
        }
        var placeholder: UInt8 = 0
        try meter.measure(.broadcast, sent: rank == root ? buffer.count : 0, received: rank == root ? 0 : buffer.count) { () throws(CollectiveError) in
            try withUnsafeMutablePointer(to: &placeholder) { (empty) throws(CollectiveError) in
                let base = buffer.baseAddress ?? UnsafeMutableRawPointer(empty)
                var request: MPI_Request? = nil
                try Self.check(MPI_Ibcast(base, Int32(buffer.count), cmpi_byte(), Int32(clamping: root), cmpi_comm_world(), &request),
                               operation)
                if rank == root {
                    try Self.check(MPI_Wait(&request, cmpi_status_ignore()), operation)
                    return
                }
                let start = monotonicNanoseconds()
                var done: Int32 = 0
                while true {
                    try Self.check(MPI_Test(&request, &done, cmpi_status_ignore()), operation)
                    if done != 0 { return }
                    let waited = monotonicNanoseconds() &- start
                    if waited < 2_000_000 { continue }
                    var pause = timespec(tv_sec: 0, tv_nsec: waited < 50_000_000 ? 100_000 : 1_000_000)
                    nanosleep(&pause, nil)
                }
            }
        }
    }

    public func gather(_ send: UnsafeRawBufferPointer, into receive: UnsafeMutableRawBufferPointer, root: Int) throws(CollectiveError) {
        let operation = "gather"
        try checkUsable(operation)
        let n = send.count
        let isRoot = rank == root
        if isRoot, receive.count < n * size {
            throw .usage(operation, "the receive buffer holds \(receive.count) bytes, \(size) ranks send \(n) each")
        }
        var placeholder: UInt8 = 0
        try meter.measure(.gather, sent: isRoot ? 0 : n, received: isRoot ? (size - 1) * n : 0) { () throws(CollectiveError) in
            try withUnsafeMutablePointer(to: &placeholder) { (empty) throws(CollectiveError) in
                let sendBase = UnsafeRawPointer(send.baseAddress ?? UnsafeRawPointer(empty))
                let receiveBase = isRoot ? (receive.baseAddress ?? UnsafeMutableRawPointer(empty)) : nil
                let chunks = chunkRanges(count: n, limit: maximumCountPerCall)
                if chunks.count == 1 {
                    try Self.check(MPI_Gather(sendBase, Int32(n), cmpi_byte(), receiveBase, Int32(n), cmpi_byte(),
                                              Int32(clamping: root), cmpi_comm_world()), operation)
                    return
                }
                for chunk in chunks {
                    // Piece k of every rank's block: rank r's bytes must land at r * n + chunk.lowerBound,
                    // an offset an `int` displacement cannot hold. On root, receive one element of a
                    // type that is `chunk.count` bytes long with an extent (MPI_Aint) of n, so
                    // consecutive ranks land n bytes apart.
                    var slot = cmpi_datatype_null()
                    if isRoot {
                        var piece = cmpi_datatype_null()
                        try Self.check(MPI_Type_contiguous(Int32(chunk.count), cmpi_byte(), &piece), operation)
                        defer { _ = MPI_Type_free(&piece) }
                        try Self.check(MPI_Type_create_resized(piece, 0, MPI_Aint(n), &slot), operation)
                        try Self.check(MPI_Type_commit(&slot), operation)
                    }
                    defer { if isRoot { _ = MPI_Type_free(&slot) } }
                    try Self.check(MPI_Gather(sendBase + chunk.lowerBound, Int32(chunk.count), cmpi_byte(),
                                              receiveBase.map { $0 + chunk.lowerBound }, 1, slot,
                                              Int32(clamping: root), cmpi_comm_world()), operation)
                }
            }
        }
    }

    public func barrier() throws(CollectiveError) {
        try checkUsable("barrier")
        try meter.measure(.barrier, sent: 0, received: 0) { () throws(CollectiveError) in
            try Self.check(MPI_Barrier(cmpi_comm_world()), "barrier")
        }
    }

    /// `MPI_Abort` on the world: Open MPI kills every rank and `mpirun` exits with `code`.
    public func abort(code: Int32) -> Never {
        fflush(nil)
        if !finalized.load(ordering: .sequentiallyConsistent) {
            _ = MPI_Abort(cmpi_comm_world(), code)
        }
        // MPI_Abort returned (it should not) or MPI is already finalized: end this process at
        // least; mpirun sees the non-zero status and ends the others.
        _exit(code)
    }

    /// `MPI_Finalize`. Only on the successful end of the job, on every rank: it waits for all of them.
    public func finalize() throws(CollectiveError) {
        try checkThread("finalize")
        guard !finalized.exchange(true, ordering: .sequentiallyConsistent) else { return }
        try Self.check(MPI_Finalize(), "finalize")
    }

    // MARK: Checks

    private func checkUsable(_ operation: String) throws(CollectiveError) {
        try checkThread(operation)
        if finalized.load(ordering: .relaxed) {
            throw .usage(operation, "called after finalize()")
        }
    }

    private func checkThread(_ operation: String) throws(CollectiveError) {
        guard currentThreadID() == initializingThread else {
            throw .usage(operation, "called from a thread other than the one that initialised MPI (MPI_THREAD_FUNNELED)")
        }
    }

    static func check(_ code: Int32, _ operation: String) throws(CollectiveError) {
        guard code != cmpi_success() else { return }
        throw CollectiveError(operation: operation, code: code, message: errorString(code))
    }

    /// `MPI_Error_string`'s text for `code` (callable in any state, even before MPI_Init).
    static func errorString(_ code: Int32) -> String {
        var length: Int32 = 0
        var buffer = [CChar](repeating: 0, count: Int(cmpi_max_error_string()) + 1)
        guard MPI_Error_string(code, &buffer, &length) == cmpi_success() else { return "unknown MPI error \(code)" }
        return String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

private func currentThreadID() -> UInt {
    #if canImport(Darwin)
    UInt(bitPattern: pthread_self())
    #else
    UInt(pthread_self())
    #endif
}
