import Testing
@testable import Worker

@Suite("Dequantization")
struct DequantizeTests {
    @Test("fast dequantization is bit-exact with the scalar reference", arguments: KernelTestData.formats)
    func fastMatchesReference(type: TensorType) {
        var rng = SplitMix64(seed: 0xdec0de ^ UInt64(type.rawValue))
        for blocks in [1, 2, 3, 37, 131] {
            let count = blocks * type.blockSize
            let bytes = KernelTestData.randomBlocks(type, blocks: blocks, &rng)
            let expected = bytes.withUnsafeBytes { ReferenceKernels.dequantize(type, $0, count: count) }
            var actual = [Float](repeating: 0, count: count)
            bytes.withUnsafeBytes { raw in
                actual.withUnsafeMutableBufferPointer { Dequantize.row(type, raw.baseAddress!, count: count, into: $0.baseAddress!) }
            }
            let mismatches = (0..<count).filter { expected[$0].bitPattern != actual[$0].bitPattern }
            #expect(mismatches.isEmpty, "\(type) \(blocks) blocks: first mismatch at \(mismatches.first ?? -1)")
        }
    }

    @Test("GGML nibble order: low nibbles are values 0-15, high nibbles 16-31")
    func nibbleOrder() {
        // Q4_1 with d = 1, m = 0: byte j = j | (15 - j) << 4.
        var block: [UInt8] = [0x00, 0x3c, 0x00, 0x00]  // fp16 1.0, fp16 0.0
        for j in 0..<16 { block.append(UInt8(j) | UInt8(15 - j) << 4) }
        let values = block.withUnsafeBytes { ReferenceKernels.dequantize(.q4_1, $0, count: 32) }
        let low: [Float] = (0..<16).map { Float($0) }
        let high: [Float] = (0..<16).map { Float(15 - $0) }
        #expect(values == low + high)
    }

    @Test("quantizers round-trip within half a step", arguments: [TensorType.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1])
    func quantizerRoundTrip(type: TensorType) {
        var rng = SplitMix64(seed: 0x9a17 ^ UInt64(type.rawValue))
        let values = KernelTestData.floats(32 * 20, &rng, scale: 3)
        let bytes = Quantizer.quantize(values, to: type)
        #expect(bytes.count == type.rowBytes(values.count))
        let back = bytes.withUnsafeBytes { ReferenceKernels.dequantize(type, $0, count: values.count) }
        for b in 0..<20 {
            let block = values[(32 * b)..<(32 * b + 32)]
            let range = block.max()! - block.min()!
            let amax = block.map { abs($0) }.max()!
            // Step size per format, plus the fp16 rounding of the scale itself.
            let bound: Float = switch type {
            case .f32: 0
            case .f16: amax * 0x1p-11
            case .bf16: amax * 0x1p-8
            case .q8_0: amax / 127 * 0.5 + amax * 0x1p-10
            // GGML maps the extreme to -8, so the far end (+7 steps) can be off by a whole step.
            case .q4_0: amax / 8 + amax * 0x1p-9
            case .q4_1: range / 15 * 0.5 + amax * 0x1p-9
            case .q5_0: amax / 16 + amax * 0x1p-9
            case .q5_1: range / 31 * 0.5 + amax * 0x1p-9
            default: 0  // the K-quants' fits have no per-value bound (QuantizerTests checks their error)
            }
            for j in (32 * b)..<(32 * b + 32) {
                #expect(abs(back[j] - values[j]) <= bound * 1.0001, "\(type) value \(j)")
            }
        }
    }

    @Test("a zero block quantizes to zeros", arguments: KernelTestData.formats)
    func zeroBlock(type: TensorType) {
        let count = max(32, type.blockSize)
        let bytes = Quantizer.quantize([Float](repeating: 0, count: count), to: type)
        let back = bytes.withUnsafeBytes { ReferenceKernels.dequantize(type, $0, count: count) }
        #expect(back == [Float](repeating: 0, count: count))
    }

    @Test("a K-quant row dequantizes from any 32-value group on (column slices)",
          arguments: TensorType.allCases.filter { $0.blockSize == 256 })
    func fromAnyGroup(type: TensorType) {
        var rng = SplitMix64(seed: 0x6a0 ^ UInt64(type.rawValue))
        let bytes = KernelTestData.randomBlocks(type, blocks: 3, &rng)
        let whole = bytes.withUnsafeBytes { ReferenceKernels.dequantize(type, $0, count: 768) }
        for first in stride(from: 0, to: 256, by: 32) {
            for count in [32, 96, 256 - first, 512 - first] {
                var part = [Float](repeating: .nan, count: count)
                bytes.withUnsafeBytes { raw in
                    part.withUnsafeMutableBufferPointer {
                        Dequantize.row(type, raw.baseAddress!, firstColumn: first, count: count, into: $0.baseAddress!)
                    }
                }
                #expect(zip(part, whole[first..<(first + count)]).allSatisfy { $0.bitPattern == $1.bitPattern },
                        "\(type) from column \(first), \(count) values")
            }
        }
    }
}
