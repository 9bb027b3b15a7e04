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
        for key in ["OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE"] {
            if let raw = getenv(key), let size = Int(String(cString: raw)) { return size }
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
