/// How the next token is drawn from the model's logits.
///
/// Lives in Medusa because acceptance (typical acceptance, speculative sampling) must transform the
/// base model's distribution exactly as plain sampling does.
public struct SamplingParameters: Sendable, Equatable {
    /// 0 means greedy (argmax), and so does any temperature below `greedyBelow`.
    public var temperature: Float
    /// Keep only the `topK` most likely tokens; 0 keeps all.
    public var topK: Int
    /// Keep the smallest set of tokens whose probability reaches `topP`; 1 keeps all.
    public var topP: Float

    public init(temperature: Float = 0, topK: Int = 40, topP: Float = 0.95) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
    }

    /// Temperatures below this are greedy, as in vLLM (its `_SAMPLING_EPS`): logits divided by
    /// them overflow Float (1/T is infinite below 2.9e-39), and their distribution is the argmax
    /// anyway. At 1e-5 a logit would have to exceed 3e33 to overflow.
    public static let greedyBelow: Float = 1e-5

    public var isGreedy: Bool { !(temperature >= Self.greedyBelow) }
}

/// A small, fast, seedable generator (SplitMix64), so that `--seed` reproduces a run exactly.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform Float in [0, 1).
    public mutating func nextUnit() -> Float {
        Float(next() >> 40) * (1.0 / Float(1 << 24))
    }
}

/// Index of the largest value; ties go to the lowest index (as llama.cpp's greedy sampler does).
public func argmax(_ values: UnsafeBufferPointer<Float>) -> Int {
    precondition(!values.isEmpty)
    var best = 0
    var bestValue = values[0]
    for i in 1..<values.count where values[i] > bestValue {
        best = i
        bestValue = values[i]
    }
    return best
}

/// Draws tokens from logits under `SamplingParameters`.
public struct Sampler: Sendable {
    public var parameters: SamplingParameters
    public var generator: SeededGenerator
    // Scratch reused across calls: the order keys of the scaled logits (`orderKey`), and the
    // radix sort's second buffer and digit counts.
    private var keys: [UInt64] = []
    private var sortBuffer: [UInt64] = []
    private var digitCounts = [Int](repeating: 0, count: 2048)

    public init(parameters: SamplingParameters, seed: UInt64) {
        self.parameters = parameters
        generator = SeededGenerator(seed: seed)
    }

    /// A key whose ascending order is descending `value`, then ascending `token`: the order of
    /// `distribution` (-0 sorts as +0, as comparing the values does). Sorting plain integers is
    /// far faster than sorting (value, token) pairs with a comparison closure.
    @inline(__always)
    static func orderKey(value: Float, token: Int32) -> UInt64 {
        let bits = value == 0 ? 0 : value.bitPattern
        let ascending = bits & 0x8000_0000 != 0 ? ~bits : bits | 0x8000_0000
        return UInt64(~ascending) << 32 | UInt64(UInt32(bitPattern: token))
    }

    /// Sorts `keys` by their high 32 bits, stably (least-significant-digit radix sort, 11-bit digits):
    /// keys made in ascending token order come out in `orderKey` order. A full vocabulary's sort
    /// was over half of the time of sampled generation with a comparison sort.
    static func sortByHighWord(_ keys: inout [UInt64], buffer: inout [UInt64], counts: inout [Int]) {
        let n = keys.count
        if buffer.count != n { buffer = [UInt64](repeating: 0, count: n) }
        for shift in [32, 43, 54] as [UInt64] {
            keys.withUnsafeBufferPointer { source in
                buffer.withUnsafeMutableBufferPointer { target in
                    counts.withUnsafeMutableBufferPointer { count in
                        for d in 0..<2048 { count[d] = 0 }
                        for key in source { count[Int((key >> shift) & 2047)] += 1 }
                        var offset = 0
                        for d in 0..<2048 {
                            let c = count[d]
                            count[d] = offset
                            offset += c
                        }
                        for key in source {
                            let d = Int((key >> shift) & 2047)
                            target[count[d]] = key
                            count[d] += 1
                        }
                    }
                }
            }
            swap(&keys, &buffer)
        }
    }

    /// The probability distribution sampling draws from, as (token, probability) pairs in
    /// descending probability order (ties: the lower token first). Temperature, then top-k, then
    /// top-p, then renormalisation.
    public mutating func distribution(_ logits: UnsafeBufferPointer<Float>) -> [(token: Int32, probability: Float)] {
        precondition(!parameters.isGreedy)
        let invT = 1 / parameters.temperature
        keys.removeAll(keepingCapacity: true)
        keys.reserveCapacity(logits.count)
        for (i, v) in logits.enumerated() { keys.append(Self.orderKey(value: v * invT, token: Int32(i))) }
        Self.sortByHighWord(&keys, buffer: &sortBuffer, counts: &digitCounts)
        let k = parameters.topK > 0 ? min(parameters.topK, keys.count) : keys.count
        let maxValue = logits[Int(UInt32(truncatingIfNeeded: keys[0]))] * invT
        var probs: [(token: Int32, probability: Float)] = []
        probs.reserveCapacity(k)
        for key in keys[0..<k] {
            let token = Int32(bitPattern: UInt32(truncatingIfNeeded: key))
            probs.append((token: token, probability: Float(exp(Double(logits[Int(token)] * invT - maxValue)))))
        }
        var total = probs.reduce(Float(0)) { $0 + $1.probability }
        if parameters.topP < 1 {
            var cumulative: Float = 0
            var keep = probs.count
            for (i, p) in probs.enumerated() {
                cumulative += p.probability / total
                if cumulative >= parameters.topP {
                    keep = i + 1
                    break
                }
            }
            probs.removeLast(probs.count - keep)
            total = probs.reduce(Float(0)) { $0 + $1.probability }
        }
        for i in probs.indices { probs[i].probability /= total }
        return probs
    }

    /// The next token: argmax at temperature 0, otherwise a draw from `distribution(logits)`.
    public mutating func sample(_ logits: UnsafeBufferPointer<Float>) -> Int32 {
        if parameters.isGreedy { return Int32(argmax(logits)) }
        let probs = distribution(logits)
        let u = generator.nextUnit()
        var cumulative: Float = 0
        for p in probs {
            cumulative += p.probability
            if u < cumulative { return p.token }
        }
        return probs[probs.count - 1].token
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
