@testable import Worker
import Medusa

/// A small deterministic generator (the sampler's SplitMix64), so failures reproduce.
typealias SplitMix64 = SeededGenerator

/// Owns aligned bytes that a `WeightMatrix` points into.
final class KernelTestBuffer {
    let pointer: UnsafeMutableRawPointer
    let count: Int
    init(count: Int) {
        self.count = count
        pointer = .allocate(byteCount: max(count, 1), alignment: 64)
        pointer.initializeMemory(as: UInt8.self, repeating: 0xcd, count: max(count, 1))
    }
    deinit { pointer.deallocate() }
}

enum KernelTestData {
    static func floats(_ count: Int, _ rng: inout SplitMix64, scale: Float = 1) -> [Float] {
        (0..<count).map { _ in Float.random(in: -scale...scale, using: &rng) }
    }

    /// A `rows x columns` matrix of `type` built by quantizing random values, each row followed by
    /// `padding` bytes of garbage (so strides other than the row size are exercised).
    static func matrix(
        _ type: TensorType, rows: Int, columns: Int, _ rng: inout SplitMix64, padding: Int = 0
    ) -> WeightMatrix {
        let rowBytes = type.rowBytes(columns)
        let stride = rowBytes + padding
        let buffer = KernelTestBuffer(count: rows * stride)
        for r in 0..<rows {
            // Rows of varying magnitude, as real weight rows are.
            let scale = Float.random(in: 0.05...2, using: &rng)
            let bytes = Quantizer.quantize(floats(columns, &rng, scale: scale), to: type)
            bytes.withUnsafeBytes { (buffer.pointer + r * stride).copyMemory(from: $0.baseAddress!, byteCount: rowBytes) }
        }
        return WeightMatrix(
            type: type, rows: rows, columns: columns, base: buffer.pointer, rowStride: stride, owner: buffer)
    }

    /// Random blocks: random payload bytes, finite random fp16 scales (and mins).
    static func randomBlocks(_ type: TensorType, blocks: Int, _ rng: inout SplitMix64) -> [UInt8] {
        var bytes = (0..<(blocks * type.bytesPerBlock)).map { _ in UInt8.random(in: 0...255, using: &rng) }
        func putHalf(_ v: Float, at offset: Int) {
            let bits = Float16(v).bitPattern
            bytes[offset] = UInt8(bits & 0xff)
            bytes[offset + 1] = UInt8(bits >> 8)
        }
        for b in 0..<blocks {
            let start = b * type.bytesPerBlock
            switch type {
            case .q8_0, .q4_0:
                putHalf(Float.random(in: -0.1...0.1, using: &rng), at: start)
            case .q4_1:
                putHalf(Float.random(in: -0.1...0.1, using: &rng), at: start)
                putHalf(Float.random(in: -1...1, using: &rng), at: start + 2)
            case .f16:
                putHalf(Float.random(in: -70000...70000, using: &rng), at: start)  // includes +-inf
            case .bf16, .f32:
                break  // every bit pattern is a value; NaNs are compared by bits
            }
        }
        return bytes
    }

    /// Runs `MatMul.multiply` on an array of rows and returns `n x w.rows` outputs.
    static func multiply(
        _ w: WeightMatrix, _ x: [Float], n: Int, pool: ThreadPool, inputs: MatMulInputs = .fp32
    ) -> [Float] {
        var y = [Float](repeating: .nan, count: n * w.rows)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                MatMul.multiply(
                    w, x: xp.baseAddress!, xStride: w.columns, n: n, y: yp.baseAddress!, yStride: w.rows, pool: pool,
                    inputs: inputs)
            }
        }
        return y
    }

    /// Tests run in parallel on few cores: keep idle workers from spinning long.
    static func pool(_ threads: Int) -> ThreadPool { ThreadPool(threadCount: threads, spinIterations: 2000) }

    static let formats: [TensorType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1]

    /// The formats with an int16-activation kernel.
    static let blockFormats: [TensorType] = [.q8_0, .q4_0, .q4_1]
}
