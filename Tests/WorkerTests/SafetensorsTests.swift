import Foundation
import Testing
@testable import Worker

/// Safetensors files and sharded checkpoints: what opens, and a typed `WeightFileError` naming the
/// file, the tensor and what was expected for every malformed input.
@Suite struct SafetensorsTests {
    /// Checks that `body` throws `problem` for `path`, and that the message names the file and `names`.
    func expect(
        _ problem: WeightFileError.Problem, path: String, naming names: [String] = [],
        sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
    ) {
        do {
            try body()
            Issue.record("no error; expected \(problem)", sourceLocation: sourceLocation)
        } catch let error as WeightFileError {
            #expect(error.problem == problem, sourceLocation: sourceLocation)
            #expect(error.path == path, sourceLocation: sourceLocation)
            #expect(error.description.hasPrefix(path + ": "), sourceLocation: sourceLocation)
            for name in names {
                #expect(error.description.contains(name), "\(error.description) should name \(name)", sourceLocation: sourceLocation)
            }
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }

    /// The error `body` throws, or nil.
    func error(_ body: () throws -> Void) -> WeightFileError? {
        do { try body() } catch { return error as? WeightFileError }
        return nil
    }

    static func sample() -> SafetensorsWriter {
        var w = SafetensorsWriter()
        w.metadata = ["format": "pt"]
        w.add("model.layers.0.mlp.up_proj.weight", shape: [3, 4], values: (0..<12).map { Float($0) - 5.5 })
        w.add("half", shape: [2, 2], values: [1, -2, 0.5, 65504], type: .f16)
        w.add("brain", shape: [4], values: [1, -3, 0.25, 1e30], type: .bf16)
        w.add("step", dtype: "I64", shape: [1], data: [7, 0, 0, 0, 0, 0, 0, 0])
        w.add("empty", dtype: "F32", shape: [0, 4], data: [])
        return w
    }

    func row(_ m: WeightMatrix, _ r: Int) -> [Float] {
        var out = [Float](repeating: 0, count: m.columns)
        out.withUnsafeMutableBufferPointer { m.dequantizeRow(r, into: $0.baseAddress!) }
        return out
    }

    // MARK: Reading

    @Test func readsTensorsAsZeroCopyMatrices() throws {
        let dir = GGUFTestDirectory()
        let path = dir.write(Self.sample().serialized(), to: "model.safetensors")
        let file = try SafetensorsFile(path: path)
        #expect(file.tensors.map(\.name) == ["model.layers.0.mlp.up_proj.weight", "half", "brain", "step", "empty"])
        #expect(file.dataOffset % 8 == 0)
        let up = try #require(file.tensorInfo("model.layers.0.mlp.up_proj.weight"))
        #expect(up.dtype == "F32" && up.type == .f32 && up.shape == [3, 4] && up.byteCount == 48)
        #expect(up.fileOffset == file.dataOffset)

        let m = try file.matrix("model.layers.0.mlp.up_proj.weight", shape: [3, 4])
        #expect(m.rows == 3 && m.columns == 4 && m.type == .f32)
        #expect(m.base == file.data(of: up).baseAddress, "the matrix points into the mapping")
        #expect(row(m, 2) == [2.5, 3.5, 4.5, 5.5])
        #expect(row(try file.matrix("half", shape: [2, 2]), 1) == [0.5, 65504])
        #expect(row(try file.matrix("brain", shape: [4]), 0) == [1, -3, 0.25, Float(bitPattern: HalfPrecision.bfloat16Bits(from: 1e30).asFloatBits)])
        #expect(try file.matrix("empty", shape: [0, 4]).rows == 0)
    }

    @Test func otherDTypesAreNamedWhenUsedAsWeights() throws {
        let dir = GGUFTestDirectory()
        let path = dir.write(Self.sample().serialized(), to: "model.safetensors")
        let file = try SafetensorsFile(path: path)
        #expect(file.tensorInfo("step")?.type == nil)
        expect(.unsupportedDType(tensor: "step", dtype: "I64"), path: path, naming: ["'step'", "I64", "F32, F16, BF16"]) {
            _ = try file.matrix("step", shape: [1])
        }
        expect(.shapeMismatch(tensor: "half", expected: [4], found: [2, 2]), path: path, naming: ["'half'", "[2, 2]", "[4]"]) {
            _ = try file.matrix("half", shape: [4])
        }
        expect(.missingTensor("lm_head.weight"), path: path, naming: ["'lm_head.weight'"]) {
            _ = try file.matrix("lm_head.weight", shape: [1])
        }
    }

    // MARK: Malformed files

    @Test func headerLengthPastTheEnd() {
        let dir = GGUFTestDirectory()
        var bytes = Self.sample().serialized()
        let real = Int(bytes[0]) | Int(bytes[1]) << 8
        bytes.replaceSubrange(0..<8, with: [0xE8, 0x03, 0, 0, 0, 0, 0, 0])  // 1000
        let path = dir.write(Array(bytes[..<(8 + real / 2)]), to: "cut.safetensors")
        expect(.truncated(what: "safetensors header", offset: 8, needed: 1000, available: real / 2), path: path,
               naming: ["safetensors header", "1000"]) { _ = try SafetensorsFile(path: path) }

        let short = dir.write([1, 2, 3], to: "short.safetensors")
        expect(.truncated(what: "safetensors header length", offset: 0, needed: 8, available: 3), path: short) {
            _ = try SafetensorsFile(path: short)
        }
        var huge = bytes
        huge.replaceSubrange(0..<8, with: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        let hugePath = dir.write(huge, to: "huge.safetensors")
        #expect(error { _ = try SafetensorsFile(path: hugePath) }.map { "\($0.problem)".hasPrefix("truncated") } == true)
    }

    @Test func badJSON() {
        let dir = GGUFTestDirectory()
        for (name, header, reason) in [
            ("garbage", "{\"w\": {\"dtype\": \"F32\", ", nil),
            ("text", "hello", nil),
            ("array", "[1, 2]", "expected an object, found an array"),
            ("binary", "\u{1}\u{2}{}", nil),
        ] as [(String, String, String?)] {
            let path = dir.write(SafetensorsWriter.assemble(header: header, data: []), to: name + ".safetensors")
            let e = error { _ = try SafetensorsFile(path: path) }
            guard case .invalidJSON(let what, let why)? = e?.problem else {
                Issue.record("\(name): expected invalidJSON, got \(String(describing: e))")
                continue
            }
            #expect(what == "the safetensors header")
            #expect(!why.isEmpty)
            if let reason { #expect(why == reason) }
            #expect(e!.description.hasPrefix(path + ": the safetensors header is not valid JSON"), "\(e!)")
            #expect(!e!.description.contains("\n"), "one line: \(e!)")
        }
    }

    @Test func badTensorEntries() {
        let dir = GGUFTestDirectory()
        let data = [UInt8](repeating: 0, count: 64)
        let cases: [(String, WeightFileError.Problem)] = [
            (#"{"w": 5}"#, .badTensorHeader(tensor: "w", reason: "expected an object, found an integer")),
            (#"{"w": {"shape": [2], "data_offsets": [0, 8]}}"#, .badTensorHeader(tensor: "w", reason: "no dtype")),
            (#"{"w": {"dtype": 32, "shape": [2], "data_offsets": [0, 8]}}"#,
             .badTensorHeader(tensor: "w", reason: "dtype is an integer, expected a string")),
            (#"{"w": {"dtype": "F32", "data_offsets": [0, 8]}}"#, .badTensorHeader(tensor: "w", reason: "no shape")),
            (#"{"w": {"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 8]}}"#,
             .badTensorHeader(tensor: "w", reason: "shape [2, -1] holds -1, expected non-negative integers")),
            (#"{"w": {"dtype": "F32", "shape": [2, 1.5], "data_offsets": [0, 8]}}"#,
             .badTensorHeader(tensor: "w", reason: "shape [2, 1.5] holds 1.5, expected non-negative integers")),
            (#"{"w": {"dtype": "F32", "shape": [2]}}"#, .badTensorHeader(tensor: "w", reason: "no data_offsets")),
            (#"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}"#,
             .badTensorHeader(tensor: "w", reason: "data_offsets is [8, 0], expected [begin, end] with 0 <= begin <= end")),
            (#"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0]}}"#,
             .badTensorHeader(tensor: "w", reason: "data_offsets is [0], expected [begin, end] with 0 <= begin <= end")),
            (#"{"w": {"dtype": "Q4_K", "shape": [2], "data_offsets": [0, 8]}}"#, .unsupportedDType(tensor: "w", dtype: "Q4_K")),
        ]
        for (i, (header, problem)) in cases.enumerated() {
            let path = dir.write(SafetensorsWriter.assemble(header: header, data: data), to: "bad\(i).safetensors")
            expect(problem, path: path, naming: ["'w'"]) { _ = try SafetensorsFile(path: path) }
        }
    }

    @Test func offsetsOutsideTheData() {
        let dir = GGUFTestDirectory()
        let header = #"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "w": {"dtype": "F16", "shape": [2, 3], "data_offsets": [8, 20]}}"#
        let bytes = SafetensorsWriter.assemble(header: header, data: [UInt8](repeating: 0, count: 16))
        let path = dir.write(bytes, to: "bad.safetensors")
        let dataOffset = bytes.count - 16
        expect(.tensorOutOfBounds(tensor: "w", offset: dataOffset + 8, size: 12, fileSize: bytes.count), path: path,
               naming: ["'w'", "12 bytes", "\(bytes.count) bytes"]) { _ = try SafetensorsFile(path: path) }
    }

    @Test func spansThatDoNotMatchTheShape() {
        let dir = GGUFTestDirectory()
        let header = #"{"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}}"#
        let path = dir.write(SafetensorsWriter.assemble(header: header, data: [UInt8](repeating: 0, count: 24)), to: "bad.safetensors")
        expect(.tensorSizeMismatch(tensor: "w", shape: [2, 3], dtype: "F32", expected: 24, found: 20), path: path,
               naming: ["'w'", "20 bytes", "[2, 3]", "F32", "24"]) { _ = try SafetensorsFile(path: path) }
        let bf16 = #"{"w": {"dtype": "BF16", "shape": [5], "data_offsets": [0, 12]}}"#
        let path2 = dir.write(SafetensorsWriter.assemble(header: bf16, data: [UInt8](repeating: 0, count: 24)), to: "bad2.safetensors")
        expect(.tensorSizeMismatch(tensor: "w", shape: [5], dtype: "BF16", expected: 10, found: 12), path: path2) {
            _ = try SafetensorsFile(path: path2)
        }
    }

    @Test func overlappingTensors() {
        let dir = GGUFTestDirectory()
        let header = #"{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}, "z": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]}}"#
        let path = dir.write(SafetensorsWriter.assemble(header: header, data: [UInt8](repeating: 0, count: 24)), to: "bad.safetensors")
        expect(.overlappingTensors("a", "b"), path: path, naming: ["'a'", "'b'", "overlap"]) { _ = try SafetensorsFile(path: path) }
        let same = #"{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]}}"#
        let path2 = dir.write(SafetensorsWriter.assemble(header: same, data: [UInt8](repeating: 0, count: 8)), to: "same.safetensors")
        expect(.overlappingTensors("a", "b"), path: path2) { _ = try SafetensorsFile(path: path2) }
    }

    @Test func metadataIsReadAndGapsAreAllowed() throws {
        let dir = GGUFTestDirectory()
        let header = #"{"__metadata__": {"format": "pt", "note": "a \"b\""}, "w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}"#
        let path = dir.write(SafetensorsWriter.assemble(header: header, data: [0, 0, 0, 0, 0, 0, 0x80, 0x3F]), to: "ok.safetensors")
        let file = try SafetensorsFile(path: path)
        #expect(file.tensors.map(\.name) == ["w"])
        #expect(file.metadata == ["format": "pt", "note": "a \"b\""])
        #expect(row(try file.matrix("w", shape: [1]), 0) == [1])

        let plain = dir.write(SafetensorsWriter.assemble(header: #"{"__metadata__": null}"#, data: []), to: "plain.safetensors")
        #expect(try SafetensorsFile(path: plain).metadata.isEmpty)
        #expect(try SafetensorsFile(path: dir.write(Self.sample().serialized(), to: "sample.safetensors")).metadata == ["format": "pt"])
    }

    @Test func metadataOtherThanStringsIsAnError() {
        let dir = GGUFTestDirectory()
        let odd = dir.write(SafetensorsWriter.assemble(header: #"{"__metadata__": {"format": "pt", "odd": [1]}}"#, data: []), to: "odd.safetensors")
        expect(.wrongKeyType(key: "__metadata__.odd", expected: "a string", found: "an array"), path: odd,
               naming: ["'__metadata__.odd'", "should be a string"]) { _ = try SafetensorsFile(path: odd) }
        let list = dir.write(SafetensorsWriter.assemble(header: #"{"__metadata__": ["pt"]}"#, data: []), to: "list.safetensors")
        expect(.wrongKeyType(key: "__metadata__", expected: "an object", found: "an array"), path: list) {
            _ = try SafetensorsFile(path: list)
        }
    }

    // MARK: Checkpoint folders

    /// A folder with two shards and an index; returns the folder and the index path.
    static func shardedFolder(_ dir: GGUFTestDirectory, weightMap: String? = nil) throws -> String {
        var a = SafetensorsWriter()
        a.add("x", shape: [2, 2], values: [1, 2, 3, 4])
        a.add("y", shape: [2], values: [5, 6])
        var b = SafetensorsWriter()
        b.add("z", shape: [1, 2], values: [7, 8], type: .bf16)
        try a.write(to: dir.path("model-00001-of-00002.safetensors"))
        try b.write(to: dir.path("model-00002-of-00002.safetensors"))
        let map = weightMap ?? #"{"x": "model-00001-of-00002.safetensors", "y": "model-00001-of-00002.safetensors", "z": "model-00002-of-00002.safetensors"}"#
        let index = dir.path(SafetensorsCheckpoint.indexFileName)
        try Data(#"{"metadata": {"total_size": 28}, "weight_map": \#(map)}"#.utf8).write(to: URL(fileURLWithPath: index))
        return index
    }

    @Test func shardedCheckpoint() throws {
        let dir = GGUFTestDirectory()
        _ = try Self.shardedFolder(dir)
        let checkpoint = try SafetensorsCheckpoint(directory: dir.url.path)
        #expect(checkpoint.tensorNames == ["x", "y", "z"])
        #expect(checkpoint.shards.count == 2)
        #expect(row(try checkpoint.matrix("x", shape: [2, 2]), 1) == [3, 4])
        #expect(row(try checkpoint.matrix("z", shape: [1, 2]), 0) == [7, 8])
        #expect(checkpoint.tensor("z")?.file.path == dir.path("model-00002-of-00002.safetensors"))
    }

    @Test func singleFileCheckpoint() throws {
        let dir = GGUFTestDirectory()
        try Self.sample().write(to: dir.path("model.safetensors"))
        let checkpoint = try SafetensorsCheckpoint(directory: dir.url.path)
        #expect(checkpoint.path == dir.path("model.safetensors"))
        #expect(checkpoint.tensorNames.count == 5)
        expect(.missingTensor("model.norm.weight"), path: dir.path("model.safetensors"), naming: ["'model.norm.weight'"]) {
            _ = try checkpoint.matrix("model.norm.weight", shape: [4])
        }
    }

    @Test func shardedCheckpointErrors() throws {
        let missingDir = GGUFTestDirectory()
        let index = try Self.shardedFolder(missingDir)
        try FileManager.default.removeItem(atPath: missingDir.path("model-00002-of-00002.safetensors"))
        expect(.missingShard(shard: "model-00002-of-00002.safetensors", reason: "no such file (it holds 'z')"), path: index,
               naming: ["model-00002-of-00002.safetensors", "'z'"]) { _ = try SafetensorsCheckpoint(directory: missingDir.url.path) }

        let wrongDir = GGUFTestDirectory()
        let wrong = try Self.shardedFolder(wrongDir, weightMap: #"{"x": "model-00001-of-00002.safetensors", "z": "model-00001-of-00002.safetensors"}"#)
        expect(.tensorNotInShard(tensor: "z", shard: "model-00001-of-00002.safetensors"), path: wrong, naming: ["'z'"]) {
            _ = try SafetensorsCheckpoint(directory: wrongDir.url.path)
        }

        let escapeDir = GGUFTestDirectory()
        let escape = try Self.shardedFolder(escapeDir, weightMap: #"{"x": "../elsewhere.safetensors"}"#)
        expect(.badValue(key: "weight_map.x", reason: "'../elsewhere.safetensors' is not a file name in the checkpoint folder"),
               path: escape) { _ = try SafetensorsCheckpoint(directory: escapeDir.url.path) }

        let typeDir = GGUFTestDirectory()
        let typed = try Self.shardedFolder(typeDir, weightMap: #"{"x": 1}"#)
        expect(.wrongKeyType(key: "weight_map.x", expected: "a string", found: "an integer"), path: typed) {
            _ = try SafetensorsCheckpoint(directory: typeDir.url.path)
        }

        let noMapDir = GGUFTestDirectory()
        let noMap = noMapDir.path(SafetensorsCheckpoint.indexFileName)
        try Data(#"{"metadata": {}}"#.utf8).write(to: URL(fileURLWithPath: noMap))
        expect(.missingKey("weight_map"), path: noMap, naming: ["weight_map"]) { _ = try SafetensorsCheckpoint(directory: noMapDir.url.path) }
        try Data(#"{"weight_map": {"#.utf8).write(to: URL(fileURLWithPath: noMap))
        #expect(error { _ = try SafetensorsCheckpoint(directory: noMapDir.url.path) }.map { "\($0.problem)".hasPrefix("invalidJSON") } == true)

        let emptyDir = GGUFTestDirectory()
        expect(.notACheckpoint(reason: "neither model.safetensors nor model.safetensors.index.json is there"), path: emptyDir.url.path) {
            _ = try SafetensorsCheckpoint(directory: emptyDir.url.path)
        }

        let shapeDir = GGUFTestDirectory()
        _ = try Self.shardedFolder(shapeDir)
        let checkpoint = try SafetensorsCheckpoint(directory: shapeDir.url.path)
        expect(.shapeMismatch(tensor: "x", expected: [4, 1], found: [2, 2]), path: shapeDir.path("model-00001-of-00002.safetensors"),
               naming: ["'x'"]) { _ = try checkpoint.matrix("x", shape: [4, 1]) }
        expect(.missingTensor("w"), path: shapeDir.path(SafetensorsCheckpoint.indexFileName)) { _ = try checkpoint.matrix("w", shape: [1]) }
    }

    @Test func aShardThatIsItselfMalformedIsNamed() throws {
        let dir = GGUFTestDirectory()
        _ = try Self.shardedFolder(dir)
        let shard = dir.path("model-00002-of-00002.safetensors")
        try Data(SafetensorsWriter.assemble(header: "{", data: [])).write(to: URL(fileURLWithPath: shard))
        let e = error { _ = try SafetensorsCheckpoint(directory: dir.url.path) }
        #expect(e?.path == shard)
    }
}

private extension UInt16 {
    /// A bf16 bit pattern widened to fp32 bits.
    var asFloatBits: UInt32 { UInt32(self) << 16 }
}
