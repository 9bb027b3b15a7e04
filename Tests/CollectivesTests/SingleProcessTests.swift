import Testing
@testable import Collectives

@Suite struct SingleProcessTests {
    @Test func groupOfOneLeavesBuffersUnchanged() throws {
        let comm = SingleProcessCommunicator()
        #expect(comm.rank == 0 && comm.size == 1 && comm.isCoordinator)
        var values: [Float] = [1, -2, 3.5]
        try values.withUnsafeMutableBufferPointer { try comm.allreduceSum($0) }
        #expect(values == [1, -2, 3.5])
        var ints: [Int32] = [7, 8]
        try ints.withUnsafeMutableBufferPointer { try comm.broadcast($0, root: 0) }
        #expect(ints == [7, 8])
        try comm.barrier()
    }

    @Test func broadcastFromAMissingRankIsAnError() {
        let comm = SingleProcessCommunicator()
        var bytes: [UInt8] = [1]
        #expect(throws: CollectiveError.self) {
            try bytes.withUnsafeMutableBufferPointer { try comm.broadcast($0, root: 1) }
        }
    }

    @Test func gatherInAGroupOfOneIsACopy() throws {
        let comm = SingleProcessCommunicator()
        let send: [UInt16] = [3, 1, 4, 1, 5]
        var receive = [UInt16](repeating: 9, count: 7)
        try send.withUnsafeBufferPointer { s in
            try receive.withUnsafeMutableBufferPointer { r in try comm.gather(s, into: r, root: 0) }
        }
        #expect(receive == [3, 1, 4, 1, 5, 9, 9])
        #expect(try comm.gather([Int64(-7), 8], root: 0) == [-7, 8])
        #expect(try comm.gather([Double](), root: 0) == [])
    }

    @Test func gatherChecksRootAndReceiveSize() {
        let comm = SingleProcessCommunicator()
        #expect(throws: CollectiveError.self) { _ = try comm.gather([1, 2] as [Int32], root: 1) }
        let send: [UInt8] = [1, 2, 3]
        var small = [UInt8](repeating: 0, count: 2)
        let error = #expect(throws: CollectiveError.self) {
            try send.withUnsafeBufferPointer { s in
                try small.withUnsafeMutableBufferPointer { r in try comm.gather(s, into: r, root: 0) }
            }
        }
        #expect(error?.code == CollectiveError.usageCode)
        #expect(error?.description == "gather: the receive buffer holds 2 bytes, the group sends 1 x 3")
        #expect(small == [0, 0])
    }

    @Test func collectivesAfterFinalizeAreErrors() throws {
        let comm = SingleProcessCommunicator()
        try comm.barrier()
        try comm.finalize()
        try comm.finalize()  // a second finalize is harmless
        let error = #expect(throws: CollectiveError.self) { try comm.barrier() }
        #expect(error?.message == "called after finalize()")
        var values: [Float] = [1]
        #expect(throws: CollectiveError.self) {
            try values.withUnsafeMutableBufferPointer { try comm.allreduceSum($0) }
        }
    }

    @Test func withoutALauncherTheFactoryGivesTheGroupOfOne() throws {
        // Under mpirun this process would be a rank itself: only meaningful without a launcher.
        guard MPIEnvironment.launcherWorldSize == nil else { return }
        #expect(MPIEnvironment.launcherRank == nil)
        let comm = try MPIEnvironment.makeCommunicator()
        #expect(comm is SingleProcessCommunicator)
        #expect(comm.size == 1 && comm.rank == 0)
    }

    @Test func errorsSayWhetherMPIReportedThem() {
        let mpi = CollectiveError(operation: "broadcast", code: 8, message: "MPI_ERR_ROOT: invalid root")
        #expect(mpi.description == "broadcast failed (MPI error 8): MPI_ERR_ROOT: invalid root")
        let usage = CollectiveError(operation: "gather", code: CollectiveError.usageCode, message: "bad")
        #expect(usage.description == "gather: bad")
    }

    /// MPI counts are Int32: buffers are cut into consecutive pieces of at most the limit.
    @Test func chunkRangesCoverTheBufferInOrder() {
        #expect(chunkRanges(count: 0, limit: 5) == [0..<0])
        #expect(chunkRanges(count: 5, limit: 5) == [0..<5])
        #expect(chunkRanges(count: 11, limit: 5) == [0..<5, 5..<10, 10..<11])
        let big = Int(Int32.max) * 2 + 3
        let ranges = chunkRanges(count: big, limit: Int(Int32.max))
        #expect(ranges.map(\.count) == [Int(Int32.max), Int(Int32.max), 3])
        #expect(ranges.first?.lowerBound == 0 && ranges.last?.upperBound == big)
        #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
    }

    @Test func linkedAgainstOpenMPI() {
        // Proves the CMPI system-library target links: the version call works before MPI_Init.
        #expect(MPIEnvironment.libraryVersion.contains("Open MPI"))
    }
}
