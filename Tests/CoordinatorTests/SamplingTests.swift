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

    @Test func samplingFollowsTheDistribution() {
        var s = Sampler(parameters: SamplingParameters(temperature: 1, topK: 0, topP: 1), seed: 42)
        let logits: [Float] = [0, Float(log(3.0))]  // probabilities 1/4, 3/4
        var counts = [0, 0]
        for _ in 0..<20000 { counts[Int(logits.withUnsafeBufferPointer { s.sample($0) })] += 1 }
        #expect(abs(Double(counts[1]) / 20000 - 0.75) < 0.02)
    }
}

import Foundation
