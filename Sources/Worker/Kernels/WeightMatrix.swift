import CKernels

/// A weight matrix of `rows` output features by `columns` input features, stored row by row in one
/// `TensorType` (GGML layout: a row is consecutive blocks).
///
/// Row r starts at `base + r * rowStride`. A column slice of a K-quant matrix may start inside a
/// 256-value super-block (on a 32-value group boundary, `TensorType.sliceGranularity`): its
/// column 0 is then column `firstColumn` of the first block. The matrix does not own its bytes;
/// `owner` keeps the mapping or allocation alive. Immutable and read-only, so it may be shared
/// across threads.
public struct WeightMatrix: @unchecked Sendable {
    public let type: TensorType
    /// Output features.
    public let rows: Int
    /// Input features; a multiple of `type.sliceGranularity` (of `type.blockSize` when `firstColumn` is 0 and
    /// the matrix is not a slice).
    public let columns: Int
    /// Where column 0 sits in the first block of each row: 0, or a multiple of 32 inside a K-quant
    /// super-block (a column slice's start).
    public let firstColumn: Int
    /// Bytes between the starts of consecutive rows (>= `type.rowBytes(columns)`).
    public let rowStride: Int
    public let base: UnsafeRawPointer
    /// Keeps the memory behind `base` alive.
    public let owner: AnyObject?
    /// The rows again in the layout of the AVX-512 VNNI integer kernels (`packedForVNNI`), which
    /// `MatMulInputs.int8` and `.int16` products then read instead of the rows; nil if not packed.
    public let packed: PackedRows?

    /// Rows in a kernel's own layout, in memory `owner` keeps alive.
    public struct PackedRows: @unchecked Sendable {
        public let base: UnsafeRawPointer
        let owner: AnyObject
    }

    public init(
        type: TensorType, rows: Int, columns: Int, base: UnsafeRawPointer, rowStride: Int? = nil,
        firstColumn: Int = 0, owner: AnyObject?, packed: PackedRows? = nil
    ) {
        precondition(rows >= 0 && columns >= 0, "negative matrix shape \(rows) x \(columns)")
        precondition(
            firstColumn >= 0 && firstColumn < type.blockSize && firstColumn % type.sliceGranularity == 0,
            "\(type) matrix cannot start at column \(firstColumn) of a block")
        precondition(
            columns % type.sliceGranularity == 0,
            "\(type) matrix needs columns in multiples of \(type.sliceGranularity), got \(columns)")
        let spanned = (firstColumn + columns + type.blockSize - 1) / type.blockSize * type.bytesPerBlock
        let stride = rowStride ?? spanned
        precondition(stride >= spanned, "row stride \(stride) shorter than a row")
        self.type = type
        self.rows = rows
        self.columns = columns
        self.firstColumn = firstColumn
        self.rowStride = stride
        self.base = base
        self.owner = owner
        self.packed = packed
    }

    /// Blocks of a row that hold its columns (a slice's first and last may hold others too).
    public var blocksPerRow: Int { (firstColumn + columns + type.blockSize - 1) / type.blockSize }

    /// Bytes of one row's blocks (without padding up to `rowStride`).
    public var rowBytes: Int { blocksPerRow * type.bytesPerBlock }

    /// Start of row `r`.
    @inline(__always)
    public func row(_ r: Int) -> UnsafeRawPointer { base + r * rowStride }

    /// The contiguous output rows `range` (a column-parallel shard). Keeps `packed` only when
    /// `range` is all the rows (pack the slice itself otherwise), as `columnSlice` does.
    public func rowSlice(_ range: Range<Int>) -> WeightMatrix {
        precondition(range.lowerBound >= 0 && range.upperBound <= rows, "rows \(range) outside 0..<\(rows)")
        if range == 0..<rows { return self }
        return WeightMatrix(
            type: type, rows: range.count, columns: columns, base: base + range.lowerBound * rowStride,
            rowStride: rowStride, firstColumn: firstColumn, owner: owner)
    }

    /// The input columns `range` of every row (a row-parallel shard). Both ends must sit on
    /// `type.sliceGranularity` boundaries: a 32-value block never straddles two shards, and a
    /// K-quant super-block may be shared by two, each reading its own groups of it.
    public func columnSlice(_ range: Range<Int>) -> WeightMatrix {
        precondition(
            range.lowerBound >= 0 && range.upperBound <= columns, "columns \(range) outside 0..<\(columns)")
        let granularity = type.sliceGranularity
        precondition(
            range.lowerBound % granularity == 0 && range.upperBound % granularity == 0,
            "column slice \(range) of a \(type) matrix must be aligned to \(granularity)-value groups")
        if range == 0..<columns { return self }
        let start = firstColumn + range.lowerBound
        return WeightMatrix(
            type: type, rows: rows, columns: range.count, base: base + start / type.blockSize * type.bytesPerBlock,
            rowStride: rowStride, firstColumn: start % type.blockSize, owner: owner)
    }

    /// A copy of the rows `rows`, in that order, in memory of its own (e.g. the LM head's rows of a
    /// candidate vocabulary); packed if this matrix is.
    public func gatheringRows(_ rows: [Int]) -> WeightMatrix {
        let bytes = rowBytes
        let storage = OwnedBytes(count: max(1, rows.count * bytes))
        for (i, r) in rows.enumerated() {
            precondition(r >= 0 && r < self.rows, "row \(r) outside 0..<\(self.rows)")
            (storage.pointer + i * bytes).copyMemory(from: row(r), byteCount: bytes)
        }
        let copy = WeightMatrix(type: type, rows: rows.count, columns: columns, base: UnsafeRawPointer(storage.pointer),
                                firstColumn: firstColumn, owner: storage)
        return packed == nil ? copy : copy.packedForVNNI()
    }

    /// The matrix as `MatMul` reads it fastest with `inputs`: packed (`packedForVNNI`) for the
    /// integer inputs, as it is for fp32.
    public func prepared(for inputs: MatMulInputs) -> WeightMatrix { inputs == .fp32 ? self : packedForVNNI() }

    /// This matrix with `packed` attached (its rows copied into `ck_pack`'s layout: the same bits,
    /// rearranged), when this CPU runs the AVX-512 VNNI integer kernels and the type is quantized;
    /// the matrix unchanged otherwise. The copy costs as much memory as the rows (a column slice's
    /// own columns only: a K-quant super-block cut by the slice keeps its scales in both slices);
    /// when the rows are a file mapping's (`ResidentPagesReleasing`, e.g. a GGUF file), their pages
    /// are given back, so the packed copy replaces them in memory (reading the rows again pages
    /// them back in).
    public func packedForVNNI(variant: IntegerKernels.Variant = IntegerKernels.variant) -> WeightMatrix {
        guard variant == .avx512VNNI, packed == nil, IntegerKernels.handles(type) else { return self }
        let format = IntegerKernels.format(type)
        let firstGroup = IntegerKernels.firstGroup(self), groups = Int32(columns / 32)
        let storage = OwnedBytes(count: max(64, ck_packed_bytes(format, Int32(rows), firstGroup, groups)))
        ck_pack(format, base.assumingMemoryBound(to: UInt8.self), rowStride, Int32(rows), firstGroup, groups,
                storage.pointer.assumingMemoryBound(to: UInt8.self))
        if let file = owner as? ResidentPagesReleasing, rows > 0 {
            file.dropResidentPages(base, count: (rows - 1) * rowStride + rowBytes)
        }
        return WeightMatrix(type: type, rows: rows, columns: columns, base: base, rowStride: rowStride,
                            firstColumn: firstColumn, owner: owner,
                            packed: PackedRows(base: UnsafeRawPointer(storage.pointer), owner: storage))
    }

    /// Writes row `row` as `columns` fp32 values; exact (every format's values are fp32-representable
    /// products as the reference dequantizer computes them). Used for embedding lookup.
    public func dequantizeRow(_ row: Int, into destination: UnsafeMutablePointer<Float>) {
        precondition(row >= 0 && row < rows, "row \(row) outside 0..<\(rows)")
        Dequantize.row(type, self.row(row), firstColumn: firstColumn, count: columns, into: destination)
    }
}

/// An allocation that lives as long as the matrices viewing it.
final class OwnedBytes {
    let pointer: UnsafeMutableRawPointer

    init(count: Int) {
        pointer = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 64)
    }

    deinit { pointer.deallocate() }
}
