#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A read-only memory mapping of a whole file. Pages are read from disk only when touched, so a
/// rank that reads only its own weight slices keeps only those resident.
public final class MappedFile: @unchecked Sendable {
    // Immutable after init; the mapping is read-only, so sharing across threads is safe.
    public let path: String
    public let bytes: UnsafeRawBufferPointer

    public init(path: String) throws(WeightFileError) {
        self.path = path
        // O_NONBLOCK: opening a FIFO with no writer would otherwise block forever before the
        // regular-file check below can reject it. It changes nothing for regular files.
        let fd = open(path, O_RDONLY | O_NONBLOCK)
        guard fd >= 0 else {
            throw WeightFileError(path: path, problem: .cannotOpen(reason: String(cString: strerror(errno))))
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw WeightFileError(path: path, problem: .cannotOpen(reason: String(cString: strerror(errno))))
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw WeightFileError(path: path, problem: .cannotOpen(reason: "not a regular file"))
        }
        let size = Int(info.st_size)
        guard size > 0 else {
            throw WeightFileError(path: path, problem: .truncated(what: "header", offset: 0, needed: 4, available: 0))
        }
        guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED else {
            throw WeightFileError(path: path, problem: .cannotOpen(reason: "mmap failed: \(String(cString: strerror(errno)))"))
        }
        bytes = UnsafeRawBufferPointer(start: base, count: size)
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: bytes.baseAddress), bytes.count)
    }

    public var count: Int { bytes.count }

    /// Lets the kernel drop the resident pages wholly inside `start ..< start + count` (inside this
    /// mapping) from this process: the bytes stay readable, and reading them again faults them back
    /// in from the page cache or the file. For bytes that have been copied elsewhere.
    public func dropResidentPages(_ start: UnsafeRawPointer, count: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let base = Int(bitPattern: bytes.baseAddress!), first = Int(bitPattern: start)
        precondition(first >= base && first + count <= base + bytes.count, "pages outside the mapping")
        let lower = (first + page - 1) / page * page, upper = (first + count) / page * page
        guard upper > lower else { return }
        _ = madvise(UnsafeMutableRawPointer(bitPattern: lower), upper - lower, Int32(MADV_DONTNEED))
    }
}

/// An owner of weight bytes that can give their resident memory back once they have been copied
/// (`WeightMatrix.packedForVNNI`).
public protocol ResidentPagesReleasing: AnyObject {
    func dropResidentPages(_ start: UnsafeRawPointer, count: Int)
}
