import CMPI

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Facts about the MPI library this binary is linked against and the launcher that started it.
public enum MPIEnvironment {
    /// The MPI library's own version string (callable before `MPI_Init`).
    public static var libraryVersion: String {
        var length: Int32 = 0
        var buffer = [CChar](repeating: 0, count: Int(cmpi_max_library_version_string()) + 1)
        let code = MPI_Get_library_version(&buffer, &length)
        guard code == cmpi_success() else { return "unknown (MPI_Get_library_version returned \(code))" }
        return String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            .trimmingTrailingWhitespace()
    }

    /// The world size announced by an MPI launcher (Open MPI's `mpirun` or a PMIx launcher), if any.
    public static var launcherWorldSize: Int? {
        integer(in: ["OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"])
    }

    /// This process's rank as announced by the launcher, if any: known before MPI is initialised,
    /// so an error found before `makeCommunicator()` can still name its rank.
    public static var launcherRank: Int? {
        integer(in: ["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK"])
    }

    /// The world group: an initialised `MPICommunicator` when the process was started by an MPI
    /// launcher (`launcherWorldSize != nil`, even for `mpirun -np 1`), else a
    /// `SingleProcessCommunicator`, so the binary run on its own is the group of one.
    ///
    /// Call it once per process, from the thread that will make every collective call. Under MPI,
    /// end the job with `finalize()` on success and `fail(_:code:)` on any error. If it throws,
    /// print the error and exit non-zero: `mpirun` then ends the other ranks.
    public static func makeCommunicator() throws(CollectiveError) -> any Communicator {
        if launcherWorldSize != nil { return try MPICommunicator.initialize() }
        return SingleProcessCommunicator()
    }

    private static func integer(in keys: [String]) -> Int? {
        for key in keys {
            if let raw = getenv(key), let value = Int(String(cString: raw)) { return value }
        }
        return nil
    }
}

extension String {
    fileprivate func trimmingTrailingWhitespace() -> String {
        var s = Substring(self)
        while let last = s.last, last.isWhitespace || last == "\0" { s = s.dropLast() }
        return String(s)
    }
}
