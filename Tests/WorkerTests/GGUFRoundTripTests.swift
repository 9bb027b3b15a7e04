import Testing
@testable import Worker

/// Files written by GGUFWriter read back with the same metadata, tensor infos and bytes.
@Suite struct GGUFRoundTripTests {
    /// One value of every scalar type, at the edges of its range.
    static let scalars: [(String, GGUFValue)] = [
        ("u8.min", .uint8(0)), ("u8.max", .uint8(.max)),
        ("i8.min", .int8(.min)), ("i8.max", .int8(.max)),
        ("u16.max", .uint16(.max)), ("i16.min", .int16(.min)),
        ("u32.max", .uint32(.max)), ("i32.min", .int32(.min)),
        ("u64.max", .uint64(.max)), ("i64.min", .int64(.min)), ("i64.max", .int64(.max)),
        ("f32.pi", .float32(.pi)), ("f32.negzero", .float32(-0.0)), ("f32.inf", .float32(-.infinity)),
        ("f32.tiny", .float32(.leastNonzeroMagnitude)), ("f32.max", .float32(.greatestFiniteMagnitude)),
        ("f64.e", .float64(2.718281828459045)), ("f64.tiny", .float64(.leastNonzeroMagnitude)),
        ("f64.inf", .float64(.infinity)),
        ("bool.true", .bool(true)), ("bool.false", .bool(false)),
        ("str.empty", .string("")), ("str.ascii", .string("llama")),
        ("str.unicode", .string("naïve — 日本語 🦙 Ġhello")),
        ("str.decomposed", .string("e\u{301}")), ("str.nul", .string("a\u{0}b")),
        ("str.long", .string(String(repeating: "0123456789", count: 2_000))),
    ]

    /// An array of every element type, an empty one of each, and nested arrays.
    static let arrays: [(String, GGUFArray)] = [
        ("a.u8", .uint8([0, 1, 255])), ("a.i8", .int8([-128, 0, 127])),
        ("a.u16", .uint16([0, 65535])), ("a.i16", .int16([-32768, 32767])),
        ("a.u32", .uint32([0, .max, 7])), ("a.i32", .int32([.min, -1, .max])),
        ("a.u64", .uint64([0, .max])), ("a.i64", .int64([.min, .max])),
        ("a.f32", .float32([1.5, -0.0, .infinity, .leastNormalMagnitude / 4])), ("a.f64", .float64([1e300, -2.5])),
        ("a.bool", .bool([true, false, true])),
        ("a.str", .string(["", "a", "Ġthe", "<|im_start|>", "日本"])),
        ("a.u8.empty", .uint8([])), ("a.i8.empty", .int8([])), ("a.u16.empty", .uint16([])),
        ("a.i16.empty", .int16([])), ("a.u32.empty", .uint32([])), ("a.i32.empty", .int32([])),
        ("a.u64.empty", .uint64([])), ("a.i64.empty", .int64([])), ("a.f32.empty", .float32([])),
        ("a.f64.empty", .float64([])), ("a.bool.empty", .bool([])), ("a.str.empty", .string([])),
        ("a.arr.empty", .array([])),
        ("a.nested", .array([.int32([1, 2]), .string(["x", ""]), .array([]), .bool([true])])),
        ("a.deep", .array([.array([.array([.array([.string(["bottom"])])])]), .array([.uint8([9])])])),
    ]

    static func writer(version: UInt32) -> GGUFWriter {
        var w = GGUFWriter()
        w.version = version
        for (k, v) in scalars { w.set(k, v) }
        for (k, a) in arrays { w.set(k, .array(a)) }
        return w
    }

    @Test(arguments: [UInt32(2), 3])
    func everyScalarTypeRoundTrips(version: UInt32) throws {
        let dir = GGUFTestDirectory()
        let file = try dir.open(Self.writer(version: version).serialized()).get()
        #expect(file.version == Int(version))
        for (key, value) in Self.scalars {
            #expect(file.metadata[key] == value, "\(key)")
            // String equality is canonical equivalence; the bytes must survive too.
            if case .string(let s) = value, case .string(let read)? = file.metadata[key] {
                #expect(Array(read.utf8) == Array(s.utf8), "\(key)")
            }
        }
        #expect(file.metadataKeys == (Self.scalars.map(\.0) + Self.arrays.map(\.0)))
        #expect(file.tensors.isEmpty)
        #expect(file.alignment == 32)
    }

    @Test(arguments: [UInt32(2), 3])
    func arraysOfEveryElementTypeRoundTrip(version: UInt32) throws {
        let dir = GGUFTestDirectory()
        let file = try dir.open(Self.writer(version: version).serialized()).get()
        for (key, array) in Self.arrays {
            #expect(try file.array(key) == array, "\(key)")
            #expect(try file.array(key).count == array.count, "\(key)")
        }
        guard case .array(let deep) = try file.array("a.deep"), case .array(let l1) = deep[0],
              case .array(let l2) = l1[0], case .array(let l3) = l2[0], case .string(let bottom) = l3[0] else {
            Issue.record("a.deep lost its nesting")
            return
        }
        #expect(bottom == ["bottom"])
    }

    @Test func floatBitPatternsSurvive() throws {
        // NaN is not equal to itself, so compare bits: payload and sign must be kept.
        let nan32 = Float(bitPattern: 0xFFC0_1234)
        let nan64 = Double(bitPattern: 0x7FF8_0000_DEAD_BEEF)
        var w = GGUFWriter()
        w.set("nan32", .float32(nan32))
        w.set("nan64", .float64(nan64))
        w.set("nans", .array(.float32([nan32, .signalingNaN])))
        let dir = GGUFTestDirectory()
        let file = try dir.open(w.serialized()).get()
        guard case .float32(let a)? = file.metadata["nan32"], case .float64(let b)? = file.metadata["nan64"],
              case .array(.float32(let c))? = file.metadata["nans"] else {
            Issue.record("NaN values changed type")
            return
        }
        #expect(a.bitPattern == nan32.bitPattern)
        #expect(b.bitPattern == nan64.bitPattern)
        #expect(c.map(\.bitPattern) == [nan32.bitPattern, Float.signalingNaN.bitPattern])
    }

    /// One tensor of every supported type, with 1 to 4 dimensions.
    static let tensorSpecs: [(String, [Int], TensorType)] = [
        ("f32.vec", [7], .f32),
        ("f16.mat", [5, 3], .f16),
        ("bf16.cube", [4, 3, 2], .bf16),
        ("q8_0.mat", [64, 3], .q8_0),
        ("q4_0.4d", [32, 2, 2, 3], .q4_0),
        ("q4_1.vec", [96], .q4_1),
        ("f32.scalar", [1], .f32),
    ]

    @Test(arguments: [UInt32(2), 3])
    func tensorInfosAndDataViews(version: UInt32) throws {
        var w = GGUFWriter()
        w.version = version
        w.set("general.architecture", .string("llama"))
        var expected: [String: [UInt8]] = [:]
        for (i, (name, dims, type)) in Self.tensorSpecs.enumerated() {
            let rows = dims.dropFirst().reduce(1, *)
            let data = ggufTestBytes(type.rowBytes(dims[0]) * rows, seed: UInt64(i))
            expected[name] = data
            w.addTensor(name, dimensions: dims, type: type, data: data)
        }
        let dir = GGUFTestDirectory()
        let file = try dir.open(w.serialized()).get()

        #expect(file.tensors.map(\.name) == Self.tensorSpecs.map(\.0))
        #expect(file.dataOffset % 32 == 0)
        var next = file.dataOffset
        for (name, dims, type) in Self.tensorSpecs {
            let info = try file.requireTensor(name)
            #expect(info == file.tensorInfo(name))
            #expect(info.dimensions == dims)
            #expect(info.type == type)
            #expect(info.elementCount == dims.reduce(1, *))
            #expect(info.byteCount == expected[name]!.count)
            // The writer packs tensors in order, each padded to the alignment.
            #expect(info.fileOffset == next, "\(name)")
            next += (info.byteCount + 31) / 32 * 32
            #expect(Array(file.data(of: info)) == expected[name]!, "\(name)")
        }
        #expect(file.fileSize == next)
        #expect(file.tensorInfo("missing") == nil)
        #expect(throws: WeightFileError(path: file.path, problem: .missingTensor("output.weight"))) {
            try file.requireTensor("output.weight")
        }
    }

    @Test(arguments: [1, 2, 8, 16, 64, 256, 4096])
    func customAlignment(alignment: Int) throws {
        var w = GGUFWriter()
        w.alignment = alignment
        w.set("general.name", .string("odd"))  // makes the header length not a multiple of anything
        let a = ggufTestBytes(4 * 3, seed: 1), b = ggufTestBytes(34, seed: 2), c = ggufTestBytes(2 * 5, seed: 3)
        w.addTensor("a", dimensions: [3], type: .f32, data: a)
        w.addTensor("b", dimensions: [32], type: .q8_0, data: b)
        w.addTensor("c", dimensions: [5], type: .f16, data: c)
        let dir = GGUFTestDirectory()
        let file = try dir.open(w.serialized()).get()
        #expect(file.alignment == alignment)
        #expect(try file.integer("general.alignment") == alignment)
        #expect(file.dataOffset % alignment == 0)
        for (name, data) in [("a", a), ("b", b), ("c", c)] {
            let info = try file.requireTensor(name)
            #expect((info.fileOffset - file.dataOffset) % alignment == 0, "\(name)")
            #expect(Array(file.data(of: info)) == data, "\(name)")
        }
    }

    @Test func alignmentMayBeAnyIntegerType() throws {
        for value: GGUFValue in [.uint64(64), .int32(64), .uint16(64), .uint8(64)] {
            var w = GGUFWriter()
            w.alignment = 64
            w.set("general.alignment", value)
            w.addTensor("x", dimensions: [4], floats: [1, 2, 3, 4])
            let dir = GGUFTestDirectory()
            let file = try dir.open(w.serialized()).get()
            #expect(file.alignment == 64, "\(value)")
            #expect(file.dataOffset % 64 == 0)
            #expect(Array(file.data(of: file.tensors[0])) == w.tensors[0].data)
        }
    }

    @Test func typedAccessors() throws {
        var w = GGUFWriter()
        w.set("n.u32", .uint32(576))
        w.set("n.i64", .int64(-3))
        w.set("n.u64.huge", .uint64(.max))
        w.set("x.f32", .float32(1e-5))
        w.set("x.f64", .float64(100_000))
        w.set("s", .string("llama"))
        w.set("b", .bool(true))
        w.set("b.int", .uint8(0))
        w.set("a.str", .array(.string(["a", "b"])))
        w.set("a.i32", .array(.int32([3, -4])))
        w.set("a.f32", .array(.float32([0.5, 2])))
        w.set("a.u64.huge", .array(.uint64([1, .max])))
        let dir = GGUFTestDirectory()
        let file = try dir.open(w.serialized()).get()
        let path = file.path

        #expect(try file.integer("n.u32") == 576)
        #expect(try file.integer("n.i64") == -3)
        #expect(try file.number("n.u32") == 576)
        #expect(try file.number("x.f32") == Double(Float(1e-5)))
        #expect(try file.number("x.f64") == 100_000)
        #expect(try file.number("n.u64.huge") == Double(UInt64.max))
        #expect(try file.string("s") == "llama")
        #expect(try file.bool("b") == true)
        #expect(try file.bool("b.int") == false)  // integers are accepted as flags
        #expect(try file.stringArray("a.str") == ["a", "b"])
        #expect(try file.integerArray("a.i32") == [3, -4])
        #expect(try file.floatArray("a.i32") == [3, -4])
        #expect(try file.floatArray("a.f32") == [0.5, 2])
        #expect(try file.floatArray("a.u64.huge") == [1, Float(UInt64.max)])
        #expect(try file.value("s") == .string("llama"))

        func wrong(_ key: String, _ expected: String, _ found: String) -> WeightFileError {
            WeightFileError(path: path, problem: .wrongKeyType(key: key, expected: expected, found: found))
        }
        #expect(throws: wrong("s", "an integer", "string")) { try file.integer("s") }
        #expect(throws: wrong("x.f32", "an integer", "float32")) { try file.integer("x.f32") }
        // A u64 above Int.max is an integer, but not one this platform can hold.
        #expect(throws: wrong("n.u64.huge", "an integer", "uint64")) { try file.integer("n.u64.huge") }
        #expect(throws: wrong("b", "a number", "bool")) { try file.number("b") }
        #expect(throws: wrong("n.u32", "a string", "uint32")) { try file.string("n.u32") }
        #expect(throws: wrong("a.str", "a string", "array of string")) { try file.string("a.str") }
        #expect(throws: wrong("s", "a bool", "string")) { try file.bool("s") }
        #expect(throws: wrong("s", "an array", "string")) { try file.array("s") }
        #expect(throws: wrong("a.i32", "an array of strings", "array of int32")) { try file.stringArray("a.i32") }
        #expect(throws: wrong("a.str", "an array of numbers", "array of string")) { try file.floatArray("a.str") }
        #expect(throws: wrong("a.f32", "an array of integers", "array of float32")) { try file.integerArray("a.f32") }

        let missing = WeightFileError(path: path, problem: .missingKey("llama.block_count"))
        #expect(throws: missing) { try file.integer("llama.block_count") }
        #expect(throws: missing) { try file.value("llama.block_count") }
        #expect(throws: missing) { try file.stringArray("llama.block_count") }

        // Messages name the file and the key.
        do throws(WeightFileError) {
            _ = try file.string("n.u32")
            Issue.record("expected an error")
        } catch {
            #expect(error.description.hasPrefix(path + ": "))
            #expect(error.description.contains("'n.u32'") && error.description.contains("uint32"))
        }
        do throws(WeightFileError) {
            _ = try file.integer("llama.block_count")
            Issue.record("expected an error")
        } catch {
            #expect(error.description == "\(path): missing required metadata key 'llama.block_count'")
        }
    }
}
