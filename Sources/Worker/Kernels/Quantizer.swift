/// Quantizers for every `TensorType`, following GGML's reference quantizers (`quantize_row_*_ref`,
/// what `llama-quantize` runs without an importance matrix), so that tests and tools write the
/// bytes llama.cpp would.
public enum Quantizer {
    /// Encodes `values` (a multiple of `type.blockSize`) as consecutive `type` blocks.
    public static func quantize(_ values: [Float], to type: TensorType) -> [UInt8] {
        precondition(values.count % type.blockSize == 0, "\(values.count) values are not whole \(type) blocks")
        var out = [UInt8](repeating: 0, count: type.rowBytes(values.count))
        values.withUnsafeBufferPointer { v in
            out.withUnsafeMutableBytes { quantize(v, to: type, into: $0.baseAddress!) }
        }
        return out
    }

    /// Encodes `values` (a multiple of `type.blockSize`) into `type.rowBytes(values.count)` bytes at `out`.
    public static func quantize(_ values: UnsafeBufferPointer<Float>, to type: TensorType, into out: UnsafeMutableRawPointer) {
        precondition(values.count % type.blockSize == 0, "\(values.count) values are not whole \(type) blocks")
        let x = values.baseAddress!
        switch type {
        case .f32:
            for (i, v) in values.enumerated() { out.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self) }
        case .f16:
            for (i, v) in values.enumerated() {
                out.storeBytes(of: HalfPrecision.halfBits(from: v).littleEndian, toByteOffset: 2 * i, as: UInt16.self)
            }
        case .bf16:
            for (i, v) in values.enumerated() {
                out.storeBytes(of: HalfPrecision.bfloat16Bits(from: v).littleEndian, toByteOffset: 2 * i, as: UInt16.self)
            }
        default:
            let block: (UnsafePointer<Float>, UnsafeMutableRawPointer) -> Void = switch type {
            case .q8_0: q8_0Block
            case .q4_0: q4_0Block
            case .q4_1: q4_1Block
            case .q5_0: q5_0Block
            case .q5_1: q5_1Block
            case .q2_K: q2_KBlock
            case .q3_K: q3_KBlock
            case .q4_K: { q45_KBlock(.q4_K, $0, $1) }
            case .q5_K: { q45_KBlock(.q5_K, $0, $1) }
            case .q6_K: q6_KBlock
            case .f32, .f16, .bf16: preconditionFailure("\(type) is not quantized")
            }
            for b in 0..<(values.count / type.blockSize) {
                block(x + b * type.blockSize, out + b * type.bytesPerBlock)
            }
        }
    }

    /// d = absmax / 127, q = round(x / d) (half away from zero, like C's roundf).
    static func q8_0Block(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        var amax: Float = 0
        for j in 0..<32 { amax = max(amax, abs(x[j])) }
        let d = amax / 127
        let id: Float = d != 0 ? 1 / d : 0
        out.storeBytes(of: HalfPrecision.halfBits(from: d).littleEndian, as: UInt16.self)
        for j in 0..<32 {
            let r = (x[j] * id).rounded(.toNearestOrAwayFromZero)
            let q: Int8 = r.isNaN ? 0 : Int8(max(-128, min(127, r)))
            out.storeBytes(of: UInt8(bitPattern: q), toByteOffset: 2 + j, as: UInt8.self)
        }
    }

    /// d = (value of largest magnitude) / -8, q = min(15, trunc(x / d + 8.5)).
    static func q4_0Block(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        var amax: Float = 0
        var extreme: Float = 0
        for j in 0..<32 where amax < abs(x[j]) {
            amax = abs(x[j])
            extreme = x[j]
        }
        let d = extreme / -8
        let id: Float = d != 0 ? 1 / d : 0
        out.storeBytes(of: HalfPrecision.halfBits(from: d).littleEndian, as: UInt16.self)
        for j in 0..<16 {
            let low = nibble(x[j] * id + 8.5)
            let high = nibble(x[j + 16] * id + 8.5)
            out.storeBytes(of: low | high << 4, toByteOffset: 2 + j, as: UInt8.self)
        }
    }

    /// d = (max - min) / 15, m = min, q = min(15, trunc((x - min) / d + 0.5)).
    static func q4_1Block(_ x: UnsafePointer<Float>, _ out: UnsafeMutableRawPointer) {
        var lo = Float.greatestFiniteMagnitude
        var hi = -Float.greatestFiniteMagnitude
        for j in 0..<32 {
            lo = min(lo, x[j])
            hi = max(hi, x[j])
        }
        let d = (hi - lo) / 15
        let id: Float = d != 0 ? 1 / d : 0
        out.storeBytes(of: HalfPrecision.halfBits(from: d).littleEndian, as: UInt16.self)
        out.storeBytes(of: HalfPrecision.halfBits(from: lo).littleEndian, toByteOffset: 2, as: UInt16.self)
        for j in 0..<16 {
            let low = nibble((x[j] - lo) * id + 0.5)
            let high = nibble((x[j + 16] - lo) * id + 0.5)
            out.storeBytes(of: low | high << 4, toByteOffset: 4 + j, as: UInt8.self)
        }
    }

    /// GGML's `MIN(15, (int8_t)v)`: truncate toward zero, cap at 15. Values here are >= 0 up to
    /// rounding, so the result is 0...15; out-of-range inputs are clamped rather than trapping.
    private static func nibble(_ v: Float) -> UInt8 {
        guard v.isFinite else { return v > 0 ? 15 : 0 }
        let t = Int(max(-128, min(127, v.rounded(.towardZero))))
        return UInt8(max(0, min(15, t)))
    }
}
