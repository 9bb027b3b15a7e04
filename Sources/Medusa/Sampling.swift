/// How the next token is drawn from the model's logits.
///
/// Lives in Medusa because acceptance (typical acceptance, speculative sampling) must transform the
/// base model's distribution exactly as plain sampling does.
public struct SamplingParameters: Sendable, Equatable {
    /// 0 means greedy (argmax).
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

    public var isGreedy: Bool { temperature <= 0 }
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
    // Scratch reused across calls: (logit, token) candidates.
    private var candidates: [(value: Float, token: Int32)] = []

    public init(parameters: SamplingParameters, seed: UInt64) {
        self.parameters = parameters
        generator = SeededGenerator(seed: seed)
    }

    /// The probability distribution sampling draws from, as (token, probability) pairs in
    /// descending probability order. Temperature, then top-k, then top-p, then renormalisation.
    public mutating func distribution(_ logits: UnsafeBufferPointer<Float>) -> [(token: Int32, probability: Float)] {
        precondition(!parameters.isGreedy)
        let invT = 1 / parameters.temperature
        candidates.removeAll(keepingCapacity: true)
        candidates.reserveCapacity(logits.count)
        for (i, v) in logits.enumerated() { candidates.append((v * invT, Int32(i))) }
        let k = parameters.topK > 0 ? min(parameters.topK, candidates.count) : candidates.count
        if k < candidates.count {
            // Partial selection: sort only what top-k keeps.
            candidates.sort { $0.value > $1.value || ($0.value == $1.value && $0.token < $1.token) }
            candidates.removeLast(candidates.count - k)
        } else {
            candidates.sort { $0.value > $1.value || ($0.value == $1.value && $0.token < $1.token) }
        }
        let maxValue = candidates[0].value
        var probs = candidates.map { (token: $0.token, probability: Float(exp(Double($0.value - maxValue)))) }
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
