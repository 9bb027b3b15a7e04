#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Small elementwise kernels of the forward pass (norms, activations, rotary embeddings, dot
/// products), vectorised with SIMD8 and a scalar tail.
enum VectorOps {
    /// out = x / sqrt(mean(x^2) + eps) * weight, over `count` values.
    @inline(__always)
    static func rmsNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, epsilon: Float,
                        count: Int, out: UnsafeMutablePointer<Float>) {
        let sumSquares = dot(x, x, count: count)
        let scale = 1 / (sumSquares / Float(count) + epsilon).squareRoot()
        var i = 0
        while i + 8 <= count {
            let v = load8(x + i) * scale * load8(weight + i)
            store8(v, out + i)
            i += 8
        }
        while i < count {
            out[i] = x[i] * scale * weight[i]
            i += 1
        }
    }

    /// Sum of a[i] * b[i] with eight partial sums (fixed order: results do not depend on callers).
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, count: Int) -> Float {
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= count {
            acc.addProduct(load8(a + i), load8(b + i))
            i += 8
        }
        var s = acc.sum()
        while i < count {
            s += a[i] * b[i]
            i += 1
        }
        return s
    }

    /// y += alpha * x.
    @inline(__always)
    static func axpy(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        let a = SIMD8<Float>(repeating: alpha)
        while i + 8 <= count {
            var v = load8(y + i)
            v.addProduct(a, load8(x + i))
            store8(v, y + i)
            i += 8
        }
        while i < count {
            y[i] += alpha * x[i]
            i += 1
        }
    }

    /// y += x.
    @inline(__always)
    static func add(_ x: UnsafePointer<Float>, to y: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        while i + 8 <= count {
            store8(load8(y + i) + load8(x + i), y + i)
            i += 8
        }
        while i < count {
            y[i] += x[i]
            i += 1
        }
    }

    /// gate = silu(gate) * up, where silu(g) = g / (1 + exp(-g)), e^x by `AttentionKernels.exp`
    /// (eight at a time, within 1.5e-7 relative of e^x).
    static func swiglu(_ gate: UnsafeMutablePointer<Float>, _ up: UnsafePointer<Float>, count: Int) {
        var i = 0
        while i + 8 <= count {
            let g = load8(gate + i)
            store8(g / (1 + AttentionKernels.exp(-g)) * load8(up + i), gate + i)
            i += 8
        }
        // The tail through the same lanes, so that every element is computed alike.
        if i < count {
            var g = SIMD8<Float>(), u = SIMD8<Float>()
            for k in 0..<(count - i) { (g[k], u[k]) = (gate[i + k], up[i + k]) }
            let out = g / (1 + AttentionKernels.exp(-g)) * u
            for k in 0..<(count - i) { gate[i + k] = out[k] }
        }
    }

    @inline(__always)
    static func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
    }

    @inline(__always)
    static func load8(_ p: UnsafeMutablePointer<Float>) -> SIMD8<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
    }

    @inline(__always)
    static func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
    }
}

/// Rotary position embedding: the cos/sin of each (token, frequency) of a step, computed once
/// and applied to every layer's queries and keys.
struct RotaryTable {
    let style: LlamaConfig.RopeStyle
    let rotated: Int      // dimensions rotated per head
    let headDimension: Int
    private(set) var cosines: [Float] = []   // [n, rotated / 2]
    private(set) var sines: [Float] = []
    private let inverseFrequencies: [Double]

    init(config: LlamaConfig) {
        style = config.ropeStyle
        rotated = config.ropeDimensionCount
        headDimension = config.headDimension
        let base = Double(config.ropeFrequencyBase)
        inverseFrequencies = (0..<(config.ropeDimensionCount / 2)).map {
            pow(base, -2 * Double($0) / Double(config.ropeDimensionCount))
        }
    }

    /// Fills the table for the step's positions (no reallocation once capacity is reached).
    mutating func prepare(positions: UnsafeBufferPointer<Int32>) {
        let half = rotated / 2
        let needed = positions.count * half
        if cosines.count < needed {
            cosines = [Float](repeating: 0, count: needed)
            sines = [Float](repeating: 0, count: needed)
        }
        for (t, p) in positions.enumerated() {
            for i in 0..<half {
                let angle = Double(p) * inverseFrequencies[i]
                cosines[t * half + i] = Float(cos(angle))
                sines[t * half + i] = Float(sin(angle))
            }
        }
    }

    /// Rotates `heads` consecutive heads of token `t` in place.
    func apply(_ x: UnsafeMutablePointer<Float>, heads: Int, token t: Int) {
        let half = rotated / 2
        cosines.withUnsafeBufferPointer { cs in
            sines.withUnsafeBufferPointer { sn in
                let c = cs.baseAddress! + t * half
                let s = sn.baseAddress! + t * half
                for h in 0..<heads {
                    let v = x + h * headDimension
                    switch style {
                    case .adjacentPairs:
                        for i in 0..<half {
                            let a = v[2 * i], b = v[2 * i + 1]
                            v[2 * i] = a * c[i] - b * s[i]
                            v[2 * i + 1] = a * s[i] + b * c[i]
                        }
                    case .halves:
                        for i in 0..<half {
                            let a = v[i], b = v[i + half]
                            v[i] = a * c[i] - b * s[i]
                            v[i + half] = a * s[i] + b * c[i]
                        }
                    }
                }
            }
        }
    }
}
