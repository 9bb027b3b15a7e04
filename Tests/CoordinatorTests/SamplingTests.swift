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

    @Test func samplingFollowsTheDistribution() {
        var s = Sampler(parameters: SamplingParameters(temperature: 1, topK: 0, topP: 1), seed: 42)
        let logits: [Float] = [0, Float(log(3.0))]  // probabilities 1/4, 3/4
        var counts = [0, 0]
        for _ in 0..<20000 { counts[Int(logits.withUnsafeBufferPointer { s.sample($0) })] += 1 }
        #expect(abs(Double(counts[1]) / 20000 - 0.75) < 0.02)
    }
}

import Foundation
