import Testing
@testable import Medusa

@Suite struct SamplingTests {
    @Test func greedyTakesTheFirstLargest() {
        var s = Sampler(parameters: SamplingParameters(temperature: 0), seed: 1)
        let logits: [Float] = [0.5, 3, -1, 3, 2]
        #expect(logits.withUnsafeBufferPointer { s.sample($0) } == 1)
    }

    @Test func topKAndTopPTrimTheDistribution() {
        var s = Sampler(parameters: SamplingParameters(temperature: 1, topK: 3, topP: 1), seed: 1)
        let logits: [Float] = [0, 1, 2, 3, 4]
        let d = logits.withUnsafeBufferPointer { s.distribution($0) }
        #expect(d.map(\.token) == [4, 3, 2])
        #expect(abs(d.reduce(0) { $0 + $1.probability } - 1) < 1e-6)
        s.parameters = SamplingParameters(temperature: 1, topK: 0, topP: 0.5)
        let p = logits.withUnsafeBufferPointer { s.distribution($0) }
        // exp(4) / sum = 0.636 already reaches 0.5.
        #expect(p.map(\.token) == [4])
    }

    @Test("the distribution lists tokens by descending logit, ties by token, as a plain sort of pairs does")
    func distributionOrder() {
        var rng = SystemRandomNumberGenerator()
        // Repeated values, both zeros, negatives and a wide range, over a vocabulary-sized row.
        var logits = (0..<5000).map { _ in Float(Int.random(in: -300...300, using: &rng)) / 16 }
        logits[7] = -0.0
        logits[8] = 0
        for temperature: Float in [0.7, 1, 1.3] {
            var s = Sampler(parameters: SamplingParameters(temperature: temperature, topK: 0, topP: 1), seed: 3)
            let d = logits.withUnsafeBufferPointer { s.distribution($0) }
            let invT = 1 / temperature
            let expected = logits.indices.map { (value: logits[$0] * invT, token: Int32($0)) }
                .sorted { $0.value > $1.value || ($0.value == $1.value && $0.token < $1.token) }
            #expect(d.map(\.token) == expected.map(\.token))
            let total = expected.reduce(Float(0)) { $0 + Float(exp(Double($1.value - expected[0].value))) }
            let probabilities = expected.map { Float(exp(Double($0.value - expected[0].value))) / total }
            #expect(zip(d, probabilities).allSatisfy { $0.probability.bitPattern == $1.bitPattern })
        }
    }

    /// Every temperature a request may give is safe: tiny ones (down to subnormal floats, whose
    /// reciprocal is infinite) draw the largest logit, as their limit does, and never a junk token
    /// from overflowed, NaN probabilities.
    @Test func tinyTemperaturesAreSafe() {
        var logits = (0..<4000).map { Float(($0 * 7919) % 1000) / 10 - 50 }  // -50 ... 49.9
        logits[1234] = 80
        for temperature: Float in [.leastNonzeroMagnitude, 1e-44, 1e-40, .leastNormalMagnitude, 1e-37, 1e-30, 1e-12, 1e-6] {
            for seed: UInt64 in 0..<20 {
                var s = Sampler(parameters: SamplingParameters(temperature: temperature, topK: 0, topP: 1), seed: seed)
                #expect(logits.withUnsafeBufferPointer { s.sample($0) } == 1234, "temperature \(temperature)")
            }
        }
        // Just above the greedy threshold: a real distribution, finite, summing to 1, still peaked.
        var s = Sampler(parameters: SamplingParameters(temperature: 1e-4, topK: 0, topP: 1), seed: 1)
        let d = logits.withUnsafeBufferPointer { s.distribution($0) }
        #expect(d.allSatisfy { $0.probability.isFinite } && abs(d.reduce(0) { $0 + $1.probability } - 1) < 1e-6)
        #expect(d[0].token == 1234 && d[0].probability == 1)
    }

    @Test func samplingFollowsTheDistribution() {
        var s = Sampler(parameters: SamplingParameters(temperature: 1, topK: 0, topP: 1), seed: 42)
        let logits: [Float] = [0, Float(log(3.0))]  // probabilities 1/4, 3/4
        var counts = [0, 0]
        for _ in 0..<20000 { counts[Int(logits.withUnsafeBufferPointer { s.sample($0) })] += 1 }
        #expect(abs(Double(counts[1]) / 20000 - 0.75) < 0.02)
    }
}

import Foundation
