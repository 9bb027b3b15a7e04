/// Round-to-nearest quantizers for every `TensorType`, following GGML's reference quantizers
/// (`quantize_row_*_ref`), so tests and tools can build valid weights of any format.
public enum Quantizer {
    /// Encodes `values` (a multiple of `type.blockSize`) as consecutive `type` blocks.
    public static func quantize(_ values: [Float], to type: TensorType) -> [UInt8] {
        precondition(values.count % type.blockSize == 0, "\(values.count) values are not whole \(type) blocks")
        var out = [UInt8]()
        out.reserveCapacity(type.rowBytes(values.count))
        switch type {
        case .f32:
            for v in values { appendLittleEndian(v.bitPattern, to: &out) }
        case .f16:
            for v in values { appendLittleEndian(HalfPrecision.halfBits(from: v), to: &out) }
        case .bf16:
            for v in values { appendLittleEndian(HalfPrecision.bfloat16Bits(from: v), to: &out) }
        case .q8_0:
            for start in stride(from: 0, to: values.count, by: 32) { q8_0Block(values[start..<start + 32], &out) }
        case .q4_0:
            for start in stride(from: 0, to: values.count, by: 32) { q4_0Block(values[start..<start + 32], &out) }
        case .q4_1:
            for start in stride(from: 0, to: values.count, by: 32) { q4_1Block(values[start..<start + 32], &out) }
        }
        return out
    }

    private static func appendLittleEndian<T: FixedWidthInteger>(_ value: T, to out: inout [UInt8]) {
        withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) }
    }

    /// d = absmax / 127, q = round(x / d) (half away from zero, like C's roundf).
    private static func q8_0Block(_ x: ArraySlice<Float>, _ out: inout [UInt8]) {
        var amax: Float = 0
        for v in x { amax = max(amax, abs(v)) }
        let d = amax / 127
        let id: Float = d != 0 ? 1 / d : 0
        appendLittleEndian(HalfPrecision.halfBits(from: d), to: &out)
        for v in x {
            let r = (v * id).rounded(.toNearestOrAwayFromZero)
            let q: Int8 = r.isNaN ? 0 : Int8(max(-128, min(127, r)))
            out.append(UInt8(bitPattern: q))
        }
    }

    /// d = (value of largest magnitude) / -8, q = min(15, trunc(x / d + 8.5)).
    private static func q4_0Block(_ x: ArraySlice<Float>, _ out: inout [UInt8]) {
        var amax: Float = 0
        var extreme: Float = 0
        for v in x where amax < abs(v) {
            amax = abs(v)
            extreme = v
        }
        let d = extreme / -8
        let id: Float = d != 0 ? 1 / d : 0
        appendLittleEndian(HalfPrecision.halfBits(from: d), to: &out)
        let base = x.startIndex
        for j in 0..<16 {
            let low = nibble(x[base + j] * id + 8.5)
            let high = nibble(x[base + j + 16] * id + 8.5)
            out.append(low | high << 4)
        }
    }

    /// d = (max - min) / 15, m = min, q = min(15, trunc((x - min) / d + 0.5)).
    private static func q4_1Block(_ x: ArraySlice<Float>, _ out: inout [UInt8]) {
        var lo = Float.greatestFiniteMagnitude
        var hi = -Float.greatestFiniteMagnitude
        for v in x {
            lo = min(lo, v)
            hi = max(hi, v)
        }
        let d = (hi - lo) / 15
        let id: Float = d != 0 ? 1 / d : 0
        appendLittleEndian(HalfPrecision.halfBits(from: d), to: &out)
        appendLittleEndian(HalfPrecision.halfBits(from: lo), to: &out)
        let base = x.startIndex
        for j in 0..<16 {
            let low = nibble((x[base + j] - lo) * id + 0.5)
            let high = nibble((x[base + j + 16] - lo) * id + 0.5)
            out.append(low | high << 4)
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
