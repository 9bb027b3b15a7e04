/// A group of processes that run the same program and exchange tensors.
///
/// Rank 0 is the coordinator. Every collective call must be made by every rank in the same order.
/// This issue ships the single-process group; the MPI-backed one implements the same protocol.
public protocol Communicator: AnyObject, Sendable {
    /// This process's index in the group, 0 ..< size.
    var rank: Int { get }
    /// Number of processes in the group.
    var size: Int { get }

    /// Sums `buffer` elementwise across all ranks, leaving the result on every rank.
    func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws(CollectiveError)
    /// Copies `buffer` from `root` to every other rank.
    func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws(CollectiveError)
    /// Blocks until every rank has called it.
    func barrier() throws(CollectiveError)
    /// Ends every rank of the job with `code`. Does not return.
    func abort(code: Int32) -> Never
}

extension Communicator {
    public var isCoordinator: Bool { rank == 0 }

    /// Broadcasts a typed buffer of trivial values.
    public func broadcast<T: BitwiseCopyable>(
        _ buffer: UnsafeMutableBufferPointer<T>, root: Int
    ) throws(CollectiveError) {
        try broadcast(UnsafeMutableRawBufferPointer(buffer), root: root)
    }
}

/// What went wrong in a collective call.
public struct CollectiveError: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var code: Int32
    public var message: String

    public init(operation: String, code: Int32, message: String) {
        self.operation = operation
        self.code = code
        self.message = message
    }

    public var description: String { "\(operation) failed (code \(code)): \(message)" }
}

/// The group of one: collectives are identities. Used when the binary runs without `mpirun`.
public final class SingleProcessCommunicator: Communicator {
    public init() {}
    public var rank: Int { 0 }
    public var size: Int { 1 }
    public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws(CollectiveError) {}
    public func broadcast(_ buffer: UnsafeMutableRawBufferPointer, root: Int) throws(CollectiveError) {
        guard root == 0 else {
            throw CollectiveError(operation: "broadcast", code: -1, message: "root \(root) is not a rank of a 1-process group")
        }
    }
    public func barrier() throws(CollectiveError) {}
    public func abort(code: Int32) -> Never { exit(code) }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
