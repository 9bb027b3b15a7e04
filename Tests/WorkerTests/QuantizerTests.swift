import Foundation
import Testing
import TestSupport
@testable import Worker

/// The quantizers write llama.cpp's bytes (its `quantize_row_*_ref`, what `llama-quantize` runs
/// without an importance matrix), and every quantized type dequantizes as the `gguf` package's
/// numpy dequantizer does.
@Suite("Quantizers and dequantizers against llama.cpp and gguf")
struct QuantizerTests {
    /// The rows `scripts/llamacpp_quantizer_expectations.py` quantized with llama.cpp (its docstring
    /// defines them): the same float32 operations in the same order.
    static let rows: [[Float]] = {
        var rng = SplitMix64(seed: 0x51ab)
        return (0..<64).map { r in
            let kind = r % 8, scale = Float(sign: .plus, exponent: -(3 + r % 7), significand: 1)
            return (0..<512).map { i in
                let u = (0..<4).map { _ in rng.nextUnit() }
                let g = ((u[0] + u[1]) + (u[2] + u[3])) - 2
                switch kind {
                case 0: return g * scale
                case 1: return i % 32 == 7 ? (g * scale) * 16 : g * scale
                case 2: return 0
                case 3: return scale
                case 4: return g * Float(1e-20)
                case 5: return i % 13 == 0 ? g * scale : 0
                case 6: return abs(g) * scale
                default: return (-abs(g) * scale) - scale
                }
            }
        }
    }()

    static func fnv1a(_ bytes: [UInt8]) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }

    static let quantizedTypes = TensorType.allCases.filter(\.isQuantized)

    @Test("each row quantizes to llama.cpp's bytes (zero, constant, tiny, sparse, one-signed rows too)",
          arguments: quantizedTypes)
    func llamaCppBytes(type: TensorType) throws {
        let expected = try #require(LlamaCppQuantizerExpectations.rowHashes[type.description])
        #expect(expected.count == Self.rows.count)
        for (r, row) in Self.rows.enumerated() {
            let hash = Self.fnv1a(Quantizer.quantize(row, to: type))
            #expect(hash == expected[r], "\(type) row \(r) (kind \(r % 8)) differs from llama.cpp's bytes")
        }
    }

    @Test("quantizing then dequantizing stays close to the values", arguments: quantizedTypes)
    func roundTrip(type: TensorType) {
        // Relative RMS error over the Gaussian-like rows, per type: what 2-8 bits per value allow.
        let bound: Double = switch type {
        case .q2_K: 0.40
        case .q3_K: 0.25
        case .q4_0, .q4_1, .q4_K: 0.12
        case .q5_0, .q5_1, .q5_K: 0.06
        case .q6_K: 0.03
        default: 0.01
        }
        var error = 0.0, total = 0.0
        for row in Self.rows.enumerated().filter({ $0.offset % 8 == 0 }).map(\.element) {
            let back = Quantizer.quantize(row, to: type).withUnsafeBytes { ReferenceKernels.dequantize(type, $0, count: row.count) }
            for (a, b) in zip(row, back) {
                error += Double(a - b) * Double(a - b)
                total += Double(a) * Double(a)
            }
        }
        #expect((error / total).squareRoot() < bound, "\(type): relative RMS error \((error / total).squareRoot())")
    }

    @Test("dequantization equals the gguf package's numpy dequantizer: random blocks and real weights",
          .enabled(if: PythonRunner.hasNumpyAndGGUF, "needs python3 with numpy and gguf (make setup installs them)"))
    func ggufDequantizer() throws {
        var rng = SplitMix64(seed: 0xd0d0)
        var writer = GGUFWriter()
        var tensors: [(name: String, type: TensorType, bytes: [UInt8], count: Int)] = []
        // Real weights: a slice of SmolLM2's first FFN gate (dequantized Q4_1), quantized to each type.
        var real: [Float] = []
        if let path = try TestData.model() {
            let file = try GGUFFile(path: path)
            let info = try file.requireTensor("blk.0.ffn_gate.weight")
            let columns = info.dimensions[0]
            let w = WeightMatrix(type: info.type, rows: info.dimensions[1], columns: columns,
                                 base: file.data(of: info).baseAddress!, owner: file)
            real = [Float](repeating: 0, count: 16 * columns)
            real.withUnsafeMutableBufferPointer { p in for r in 0..<16 { w.dequantizeRow(r, into: p.baseAddress! + r * columns) } }
            real = Array(real.prefix(real.count / 256 * 256))
        }
        for type in Self.quantizedTypes {
            let blocks = 2048 / type.blockSize
            tensors.append(("random.\(type)", type, KernelTestData.randomBlocks(type, blocks: blocks, &rng), blocks * type.blockSize))
            if !real.isEmpty { tensors.append(("real.\(type)", type, Quantizer.quantize(real, to: type), real.count)) }
        }
        for t in tensors { writer.addTensor(t.name, dimensions: [t.count], type: t.type, data: t.bytes) }
        let directory = try makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let model = directory + "/types.gguf", values = directory + "/values.f32"
        try Data(writer.serialized()).write(to: URL(fileURLWithPath: model))
        let listing = try PythonRunner.run([TestData.repositoryRoot + "/scripts/gguf_dequantize.py", model, values])
        let numpy = try Data(contentsOf: URL(fileURLWithPath: values))
        let entries = listing["tensors"] as? [[String: Any]] ?? []
        #expect(entries.count == tensors.count)
        for (t, entry) in zip(tensors, entries) {
            let offset = entry["offset"] as? Int ?? -1
            #expect(entry["name"] as? String == t.name && entry["count"] as? Int == t.count)
            let expected = numpy.withUnsafeBytes { raw in
                (0..<t.count).map { raw.loadUnaligned(fromByteOffset: 4 * (offset + $0), as: UInt32.self) }
            }
            let reference = t.bytes.withUnsafeBytes { ReferenceKernels.dequantize(t.type, $0, count: t.count) }
            var fast = [Float](repeating: .nan, count: t.count)
            t.bytes.withUnsafeBytes { raw in
                fast.withUnsafeMutableBufferPointer { Dequantize.row(t.type, raw.baseAddress!, count: t.count, into: $0.baseAddress!) }
            }
            let referenceMismatches = (0..<t.count).filter { reference[$0].bitPattern != expected[$0] }
            let fastMismatches = (0..<t.count).filter { fast[$0].bitPattern != expected[$0] }
            #expect(referenceMismatches.isEmpty, "\(t.name): reference differs from numpy at \(referenceMismatches.prefix(4))")
            #expect(fastMismatches.isEmpty, "\(t.name): fast dequantizer differs from numpy at \(fastMismatches.prefix(4))")
        }
    }
}
