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

    @Test func linkedAgainstOpenMPI() {
        // Proves the CMPI system-library target links: the version call works before MPI_Init.
        #expect(MPIEnvironment.libraryVersion.contains("Open MPI"))
    }
}
