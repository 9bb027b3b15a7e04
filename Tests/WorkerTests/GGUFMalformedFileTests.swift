import Foundation
import Testing
@testable import Worker

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Every malformed file gives a typed `WeightFileError` naming the file and what is wrong, never a
/// crash, a hang or a huge allocation.
@Suite struct GGUFMalformedFileTests {
    /// Checks that `error` is `problem` and that its description names the file and each of `names`.
    func check(
        _ error: WeightFileError?, is problem: WeightFileError.Problem, path: String, naming names: [String] = [],
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        guard let error else {
            Issue.record("the file opened; expected \(problem)", sourceLocation: sourceLocation)
            return
        }
        #expect(error.problem == problem, sourceLocation: sourceLocation)
        #expect(error.path == path, sourceLocation: sourceLocation)
        #expect(error.description.hasPrefix(path + ": "), sourceLocation: sourceLocation)
        for name in names {
            #expect(error.description.contains(name), "\(error.description) should name \(name)", sourceLocation: sourceLocation)
        }
    }

    /// The `what` of a `.truncated` error, or nil for any other error.
    func truncatedWhat(_ error: WeightFileError?) -> String? {
        if case .truncated(let what, _, _, _)? = error?.problem { return what }
        return nil
    }

    /// A small but complete file: metadata of several kinds and three tensors.
    static func sampleFile() -> [UInt8] {
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("llama.block_count", .uint32(2))
        w.set("flag", .bool(true))
        w.set("eps", .float32(1e-5))
        w.set("tokens", .array(.string(["<s>", "a", "Ġb"])))
        w.set("scores", .array(.float32([0, -1, -2])))
        w.set("nested", .array(.array([.int16([1, 2]), .string(["x"])])))
        w.addTensor("token_embd.weight", dimensions: [32, 2], type: .q8_0, data: ggufTestBytes(68, seed: 1))
        w.addTensor("blk.0.attn_norm.weight", dimensions: [3], floats: [1, 2, 3])
        w.addTensor("output.weight", dimensions: [32, 1], type: .q4_1, data: ggufTestBytes(20, seed: 2))
        return w.serialized()
    }

    // MARK: Header

    @Test func wrongMagic() {
        let dir = GGUFTestDirectory()
        var bytes = Self.sampleFile()
        bytes.replaceSubrange(0..<4, with: Array("GGML".utf8))
        check(dir.openError(bytes), is: .badMagic(found: "\"GGML\""), path: dir.path("bad.gguf"), naming: ["GGML", "GGUF"])
        // Unprintable bytes are shown escaped.
        bytes.replaceSubrange(0..<4, with: [0x7F, 0x45, 0x4C, 0x46])
        check(dir.openError(bytes), is: .badMagic(found: "\"\\x7fELF\""), path: dir.path("bad.gguf"))
    }

    @Test func emptyFile() {
        let dir = GGUFTestDirectory()
        let error = dir.openError([])
        check(error, is: .truncated(what: "header", offset: 0, needed: 4, available: 0), path: dir.path("bad.gguf"))
    }

    /// The reader's error for the file at `path`, or nil when it opened.
    func openError(path: String) -> WeightFileError? {
        do throws(WeightFileError) { _ = try GGUFFile(path: path) } catch { return error }
        return nil
    }

    @Test func missingFileAndNonRegularFiles() throws {
        let dir = GGUFTestDirectory()
        let missing = dir.path("nope.gguf")
        check(openError(path: missing), is: .cannotOpen(reason: "No such file or directory"), path: missing)
        check(openError(path: dir.url.path), is: .cannotOpen(reason: "not a regular file"), path: dir.url.path)
        // A FIFO with no writer: opening it must not block.
        let fifo = dir.path("fifo.gguf")
        try #require(mkfifo(fifo, 0o600) == 0)
        check(openError(path: fifo), is: .cannotOpen(reason: "not a regular file"), path: fifo)
    }

    @Test(arguments: [UInt32(0), 1, 4, 0xFFFF_FFFF])
    func unsupportedVersion(version: UInt32) {
        let dir = GGUFTestDirectory()
        var b = GGUFBytes()
        b.header(version: version, tensorCount: 0, keyCount: 0)
        check(dir.openError(b.bytes), is: .unsupportedVersion(Int(version)), path: dir.path("bad.gguf"),
              naming: ["version \(version)"])
    }

    @Test(arguments: [UInt32(2), 3])
    func bigEndianFile(version: UInt32) {
        let dir = GGUFTestDirectory()
        var b = GGUFBytes()
        b.header(version: version.byteSwapped, tensorCount: 0, keyCount: 0)
        check(dir.openError(b.bytes), is: .badValue(key: "version", reason: "big-endian GGUF files are not supported"),
              path: dir.path("bad.gguf"), naming: ["big-endian"])
    }

    // MARK: Truncation

    /// Cutting the file at every byte before the end of the last tensor's data gives a clean
    /// error: `.truncated` while the header is incomplete, then `.tensorOutOfBounds` once only
    /// tensor data is missing. (Cutting the last tensor's trailing padding leaves a valid file.)
    @Test func everyPrefixFailsCleanly() throws {
        let dir = GGUFTestDirectory()
        let full = Self.sampleFile()
        let complete = try dir.open(full, as: "full.gguf").get()
        let dataEnd = complete.tensors.map { $0.fileOffset + $0.byteCount }.max()!
        #expect(dir.openError(Array(full[..<dataEnd])) == nil)
        var firstOutOfBounds: Int?
        for cut in 0..<dataEnd {
            let path = dir.write(Array(full[..<cut]), to: "cut.gguf")
            let error: WeightFileError
            do throws(WeightFileError) {
                _ = try GGUFFile(path: path)
                Issue.record("a file cut at byte \(cut) of \(full.count) opened")
                continue
            } catch let e {
                error = e
            }
            #expect(error.path == path)
            switch error.problem {
            case .truncated(_, let offset, let needed, let available):
                #expect(firstOutOfBounds == nil, "cut \(cut): truncated after the header was complete")
                // A count is checked against the bytes after it, so offset + available may stop
                // short of the cut by the count's own 8 bytes.
                #expect(offset <= cut && offset + available <= cut, "cut \(cut): \(error)")
                #expect(needed > available, "cut \(cut): \(error)")
            case .tensorOutOfBounds(let tensor, _, _, let fileSize):
                if firstOutOfBounds == nil { firstOutOfBounds = cut }
                #expect(fileSize == cut)
                #expect(complete.tensorInfo(tensor) != nil)
                #expect(error.description.contains("'\(tensor)'"))
            default:
                Issue.record("cut \(cut): unexpected \(error)")
            }
        }
        // The header ends in the padding before the data section.
        let boundary = try #require(firstOutOfBounds)
        #expect(boundary <= complete.dataOffset && boundary > complete.dataOffset - 32)
    }

    /// Truncation errors say what was being read. Counts are checked against the bytes left
    /// before anything is read, so some cuts surface as the enclosing count's error.
    @Test func truncationNamesWhatWasBeingRead() {
        let dir = GGUFTestDirectory()
        func what(_ bytes: [UInt8], cut: Int) -> String? {
            let error = dir.openError(Array(bytes[..<cut]))
            if let error { #expect(error.description.contains(truncatedWhat(error) ?? "?"), "\(error)") }
            return truncatedWhat(error)
        }

        // Header, then one metadata key: general.name = "tiny".
        var m = GGUFBytes()
        m.header(tensorCount: 0, keyCount: 1)      // bytes 0..<24
        m.key("general.name", type: .string)       // length 24..<32, key 32..<44, type 44..<48
        m.string("tiny")                           // length 48..<56, bytes 56..<60
        let meta = m.bytes
        #expect(what(meta, cut: 2) == "magic")
        #expect(what(meta, cut: 6) == "version")
        #expect(what(meta, cut: 10) == "tensor count")
        #expect(what(meta, cut: 20) == "metadata count")
        #expect(what(meta, cut: 30) == "metadata count of 1")  // a key needs at least 13 bytes
        #expect(what(meta, cut: 46) == "type of metadata key 'general.name'")
        #expect(what(meta, cut: 51) == "length of value of metadata key 'general.name'")
        #expect(what(meta, cut: 58) == "length of value of metadata key 'general.name' of 4")

        // Header, then one tensor info.
        let name = "model.layers.7.self_attn.q_proj.weight"  // 38 bytes
        var t = GGUFBytes()
        t.header(tensorCount: 1, keyCount: 0)      // bytes 0..<24
        t.tensorInfo(name, dims: [32, 4], type: 0, offset: 0)
        // name length 24..<32, name 32..<70, dimension count 70..<74, dimensions 74..<90,
        // type 90..<94, offset 94..<102
        let info = t.bytes
        #expect(info.count == 102)
        #expect(what(info, cut: 40) == "tensor count of 1")  // a tensor info needs at least 32 bytes
        #expect(what(info, cut: 60) == "length of tensor name of 38")
        #expect(what(info, cut: 72) == "dimension count of tensor '\(name)'")
        #expect(what(info, cut: 83) == "dimensions of tensor '\(name)'")
        #expect(what(info, cut: 92) == "type of tensor '\(name)'")
        #expect(what(info, cut: 101) == "data offset of tensor '\(name)'")
    }

    @Test func truncatedTensorData() throws {
        let dir = GGUFTestDirectory()
        let full = GGUFBytes.singleTensor(name: "blk.0.ffn_up.weight", dims: [32, 4], type: TensorType.q8_0.rawValue)
        let dataOffset = try dir.open(full, as: "full.gguf").get().dataOffset
        let cut = Array(full.dropLast(1))
        let error = dir.openError(cut)
        // 4 rows of one Q8_0 block (34 bytes each).
        check(error, is: .tensorOutOfBounds(tensor: "blk.0.ffn_up.weight", offset: dataOffset, size: 136, fileSize: cut.count),
              path: dir.path("bad.gguf"), naming: ["'blk.0.ffn_up.weight'", "136 bytes"])
        #expect(dir.openError(full) == nil)
    }

    @Test(arguments: [UInt64(64), 1 << 20, 1 << 61, .max - 31, .max])
    func tensorOffsetPastTheEnd(offset: UInt64) {
        let dir = GGUFTestDirectory()
        let bytes = GGUFBytes.singleTensor(name: "output.weight", dims: [4, 4], type: 0, offset: offset)
        let error = dir.openError(bytes)
        guard case .tensorOutOfBounds(let tensor, _, let size, let fileSize)? = error?.problem else {
            Issue.record("expected tensorOutOfBounds, got \(String(describing: error))")
            return
        }
        #expect(tensor == "output.weight" && size <= 64 && fileSize == bytes.count)
        #expect(error!.description.contains("'output.weight'"))
    }

    @Test func misalignedTensorOffset() {
        let dir = GGUFTestDirectory()
        let bytes = GGUFBytes.singleTensor(name: "blk.3.attn_v.weight", dims: [4], type: 0, offset: 16, dataBytes: 64)
        check(dir.openError(bytes), is: .misalignedTensor(tensor: "blk.3.attn_v.weight", offset: 16, alignment: 32),
              path: dir.path("bad.gguf"), naming: ["'blk.3.attn_v.weight'", "16", "32"])
    }

    // MARK: Tensor infos

    @Test func unsupportedTensorType() {
        let dir = GGUFTestDirectory()
        let iq4 = GGUFBytes.singleTensor(name: "blk.0.ffn_down.weight", dims: [32, 2], type: 20, dataBytes: 36)
        check(dir.openError(iq4), is: .unsupportedTensorType(tensor: "blk.0.ffn_down.weight", type: "IQ4_NL"),
              path: dir.path("bad.gguf"), naming: ["'blk.0.ffn_down.weight'", "IQ4_NL"])
        let unknown = GGUFBytes.singleTensor(name: "w", dims: [32], type: 99)
        check(dir.openError(unknown), is: .unsupportedTensorType(tensor: "w", type: "unknown type id 99"),
              path: dir.path("bad.gguf"), naming: ["99"])
    }

    @Test(arguments: [(UInt32(8), UInt64(48)), (2, 16), (3, 33), (8, 1)])
    func rowLengthNotAMultipleOfTheBlockSize(type: UInt32, rowLength: UInt64) {
        let dir = GGUFTestDirectory()
        let bytes = GGUFBytes.singleTensor(name: "blk.1.attn_k.weight", dims: [rowLength, 2], type: type, dataBytes: 256)
        let name = TensorType(rawValue: type)!.description
        check(dir.openError(bytes), is: .badTensorShape(
            tensor: "blk.1.attn_k.weight", reason: "row length \(rowLength) is not a multiple of the \(name) block size 32"),
              path: dir.path("bad.gguf"), naming: ["'blk.1.attn_k.weight'", "\(rowLength)", name])
    }

    @Test func badDimensions() {
        let dir = GGUFTestDirectory()
        let path = dir.path("bad.gguf")
        check(dir.openError(GGUFBytes.singleTensor(dims: [], type: 0, dataBytes: 32)),
              is: .badTensorShape(tensor: "t", reason: "0 dimensions (expected 1 to 4)"), path: path)
        check(dir.openError(GGUFBytes.singleTensor(dims: [1, 1, 1, 1, 1], type: 0)),
              is: .badTensorShape(tensor: "t", reason: "5 dimensions (expected 1 to 4)"), path: path)
        check(dir.openError(GGUFBytes.singleTensor(dims: [4, 0], type: 0, dataBytes: 32)),
              is: .badTensorShape(tensor: "t", reason: "dimension 0"), path: path)
        check(dir.openError(GGUFBytes.singleTensor(dims: [1 << 40], type: 0, dataBytes: 32)),
              is: .badTensorShape(tensor: "t", reason: "dimension \(1 << 40)"), path: path)
        // Each dimension is plausible; their product is not.
        let error = dir.openError(GGUFBytes.singleTensor(dims: [1 << 39, 1 << 39, 1 << 39], type: 0, dataBytes: 32))
        guard case .badTensorShape("t", let reason)? = error?.problem else {
            Issue.record("expected badTensorShape, got \(String(describing: error))")
            return
        }
        #expect(reason.contains("too many elements"))
    }

    @Test func duplicateTensor() {
        let dir = GGUFTestDirectory()
        var b = GGUFBytes()
        b.header(tensorCount: 2, keyCount: 0)
        b.tensorInfo("blk.0.attn_q.weight", dims: [8], type: 0, offset: 0)
        b.tensorInfo("blk.0.attn_q.weight", dims: [8], type: 0, offset: 32)
        b.pad(to: 32)
        b.raw([UInt8](repeating: 0, count: 64))
        check(dir.openError(b.bytes), is: .duplicateTensor("blk.0.attn_q.weight"), path: dir.path("bad.gguf"),
              naming: ["'blk.0.attn_q.weight'"])
    }

    // MARK: Metadata

    @Test func duplicateKey() {
        let dir = GGUFTestDirectory()
        var b = GGUFBytes()
        b.header(tensorCount: 0, keyCount: 3)
        b.key("llama.block_count", type: .uint32); b.append(UInt32(30))
        b.key("general.name", type: .string); b.string("x")
        b.key("llama.block_count", type: .string); b.string("thirty")
        check(dir.openError(b.bytes), is: .duplicateKey("llama.block_count"), path: dir.path("bad.gguf"),
              naming: ["'llama.block_count'"])
    }

    @Test(arguments: [UInt32(13), 255, 0xFFFF_FFFF])
    func invalidValueType(typeID: UInt32) {
        let dir = GGUFTestDirectory()
        var b = GGUFBytes()
        b.header(tensorCount: 0, keyCount: 1)
        b.key("general.odd", typeID: typeID)
        b.append(UInt64(0))
        check(dir.openError(b.bytes), is: .invalidValueType(key: "general.odd", type: typeID), path: dir.path("bad.gguf"),
              naming: ["'general.odd'", "\(typeID)"])

        // The same id as an array's element type.
        b = GGUFBytes()
        b.header(tensorCount: 0, keyCount: 1)
        b.key("tokenizer.ggml.scores", type: .array)
        b.append(typeID)
        b.append(UInt64(1))
        b.append(UInt64(0))
        check(dir.openError(b.bytes), is: .invalidValueType(key: "tokenizer.ggml.scores", type: typeID),
              path: dir.path("bad.gguf"), naming: ["'tokenizer.ggml.scores'"])
    }

    @Test func boolByteSeven() {
        let dir = GGUFTestDirectory()
        var b = GGUFBytes()
        b.header(tensorCount: 0, keyCount: 1)
        b.key("tokenizer.ggml.add_bos_token", type: .bool)
        b.append(UInt8(7))
        check(dir.openError(b.bytes), is: .badValue(key: "tokenizer.ggml.add_bos_token", reason: "bool byte 7 is neither 0 nor 1"),
              path: dir.path("bad.gguf"), naming: ["'tokenizer.ggml.add_bos_token'", "7"])

        b = GGUFBytes()
        b.header(tensorCount: 0, keyCount: 1)
        b.key("flags", type: .array)
        b.append(GGUFValue.Kind.bool.rawValue)
        b.append(UInt64(3))
        b.raw([1, 0, 7])
        check(dir.openError(b.bytes), is: .badValue(key: "flags", reason: "bool array holds a byte that is neither 0 nor 1"),
              path: dir.path("bad.gguf"), naming: ["'flags'"])
    }

    @Test func arraysNestedTooDeep() {
        let dir = GGUFTestDirectory()
        var b = GGUFBytes()
        b.header(tensorCount: 0, keyCount: 1)
        b.key("deep", type: .array)
        for _ in 0..<100 {
            b.append(GGUFValue.Kind.array.rawValue)
            b.append(UInt64(1))
        }
        check(dir.openError(b.bytes), is: .badValue(key: "deep", reason: "arrays nested deeper than 8 levels"),
              path: dir.path("bad.gguf"), naming: ["'deep'"])
    }

    @Test func badAlignment() {
        let dir = GGUFTestDirectory()
        let path = dir.path("bad.gguf")
        for (value, shown) in [(GGUFValue.uint32(0), 0), (.uint32(3), 3), (.uint32(48), 48), (.int32(-32), -32)] {
            var w = GGUFWriter()
            w.set("general.alignment", value)
            w.addTensor("x", dimensions: [4], floats: [1, 2, 3, 4])
            check(dir.openError(w.serialized()), is: .badAlignment(shown), path: path, naming: ["general.alignment", "\(shown)"])
        }
        for (value, found) in [(GGUFValue.float32(32), "float32"), (.string("32"), "string"), (.uint64(.max), "uint64")] {
            var w = GGUFWriter()
            w.set("general.alignment", value)
            check(dir.openError(w.serialized()),
                  is: .wrongKeyType(key: "general.alignment", expected: "an integer", found: found), path: path,
                  naming: ["general.alignment"])
        }
    }

    // MARK: Absurd counts

    /// A u64 count that the file could not possibly hold fails before anything is allocated.
    @Test(arguments: [UInt64(1) << 60, .max, UInt64(Int.max), 1 << 40])
    func absurdCounts(count: UInt64) {
        let dir = GGUFTestDirectory()
        let path = dir.path("bad.gguf")
        func expectTruncated(_ bytes: [UInt8], _ what: String, at offset: Int, sourceLocation: SourceLocation = #_sourceLocation) {
            let error = dir.openError(bytes)
            guard case .truncated(let w, let o, let needed, let available)? = error?.problem else {
                Issue.record("expected truncated, got \(String(describing: error))", sourceLocation: sourceLocation)
                return
            }
            #expect(w == what, sourceLocation: sourceLocation)
            #expect(o == offset, sourceLocation: sourceLocation)
            #expect(needed > available, "\(error!)", sourceLocation: sourceLocation)
            #expect(error!.path == path, sourceLocation: sourceLocation)
            #expect(error!.description.contains(String(count)), sourceLocation: sourceLocation)
        }
        let tail = [UInt8](repeating: 0, count: 100)

        var b = GGUFBytes()
        b.header(tensorCount: count, keyCount: 0)
        b.raw(tail)
        expectTruncated(b.bytes, "tensor count of \(count)", at: 8)

        b = GGUFBytes()
        b.header(tensorCount: 0, keyCount: count)
        b.raw(tail)
        expectTruncated(b.bytes, "metadata count of \(count)", at: 16)

        b = GGUFBytes()
        b.header(tensorCount: 0, keyCount: 1)
        b.append(count)
        b.raw(tail)
        expectTruncated(b.bytes, "length of metadata key of \(count)", at: 24)

        b = GGUFBytes()
        b.header(tensorCount: 0, keyCount: 1)
        b.key("general.name", type: .string)
        b.append(count)
        b.raw(tail)
        expectTruncated(b.bytes, "length of value of metadata key 'general.name' of \(count)", at: 48)

        b = GGUFBytes()
        b.header(tensorCount: 1, keyCount: 0)
        b.append(count)
        b.raw(tail)
        expectTruncated(b.bytes, "length of tensor name of \(count)", at: 24)

        for kind in [GGUFValue.Kind.uint8, .int8, .uint16, .int16, .uint32, .int32, .float32, .bool, .string, .array, .uint64, .int64, .float64] {
            b = GGUFBytes()
            b.header(tensorCount: 0, keyCount: 1)
            b.key("tokenizer.ggml.tokens", type: .array)
            b.append(kind.rawValue)
            b.append(count)
            b.raw(tail)
            expectTruncated(b.bytes, "element count of array of metadata key 'tokenizer.ggml.tokens' of \(count)", at: 61)
        }
    }

    /// A plausible count whose elements then run out is still a clean `.truncated`.
    @Test func arrayElementsRunOut() {
        let dir = GGUFTestDirectory()
        var b = GGUFBytes()
        b.header(tensorCount: 0, keyCount: 1)
        b.key("tokenizer.ggml.tokens", type: .array)
        b.append(GGUFValue.Kind.string.rawValue)
        b.append(UInt64(2))
        b.string("a")
        b.append(UInt64(5))  // the second string claims 5 bytes; 2 remain
        b.raw([0x62, 0x63])
        let error = dir.openError(b.bytes)
        #expect(truncatedWhat(error) == "length of element of array of metadata key 'tokenizer.ggml.tokens' of 5")
    }

    // MARK: Error text

    /// One line, no control or format characters, at most `limit` characters.
    static func expectPrintableLine(_ text: String, limit: Int = 1000, sourceLocation: SourceLocation = #_sourceLocation) {
        // Shown through oneLine, so that a failure's own message stays readable.
        let short = text.count <= limit
        #expect(short, "\(text.utf8.count) bytes: \(text.oneLine(limit: 200))", sourceLocation: sourceLocation)
        let bad = text.unicodeScalars.filter {
            $0.value < 0x20 || (0x7F...0x9F).contains($0.value) || $0.properties.generalCategory == .format
        }
        let printable = bad.isEmpty
        #expect(printable, "unprintable \(bad.prefix(5).map { String($0.value, radix: 16) }) in \(text.oneLine(limit: 200))",
                sourceLocation: sourceLocation)
    }

    /// A key length made huge by one flipped byte turns the rest of the header into the key's
    /// "name": the error quotes it escaped and cut, on one short line.
    @Test func namesFromTheFileAreQuotedEscapedAndCut() throws {
        let dir = GGUFTestDirectory()
        var b = GGUFBytes()
        b.header(tensorCount: 0, keyCount: 1)
        // A megabyte of every byte value: newlines, terminal escapes (0x1b), invalid UTF-8.
        let junk = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 167) }
        b.append(UInt64(junk.count))
        b.raw(junk)
        b.append(UInt32(99))  // an unknown value type: the error names the key
        let error = try #require(dir.openError(b.bytes))
        #expect(error.problem == .invalidValueType(key: String(decoding: junk, as: UTF8.self), type: 99))
        Self.expectPrintableLine(error.description, limit: 300)
        #expect(error.description.contains("unknown value type 99"))
        #expect(error.description.contains("(\(String(decoding: junk, as: UTF8.self).utf8.count) bytes)"))
        // Cut short of the type: the reader's "what" names the key the same way.
        let cut = try #require(dir.openError(Array(b.bytes.dropLast(2))))
        Self.expectPrintableLine(cut.description, limit: 400)
        #expect(cut.description.contains("needs 4 bytes but only 2 remain"))
    }

    /// Every single-byte change of a small file's header and tensor infos opens or fails with a
    /// short printable one-line error.
    @Test func everyFlippedByteGivesAShortPrintableError() throws {
        let dir = GGUFTestDirectory()
        let full = Self.sampleFile()
        let header = try dir.open(full, as: "full.gguf").get().dataOffset
        for position in 0..<header {
            for mask: UInt8 in [0x01, 0x80, 0xFF] {
                var bytes = full
                bytes[position] ^= mask
                if let error = dir.openError(bytes) { Self.expectPrintableLine(error.description, limit: 600) }
            }
        }
    }
}
