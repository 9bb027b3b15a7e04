import Medusa
import Worker

/// Owns the fp32 values behind test weight matrices.
public final class FloatStorage: @unchecked Sendable {
    public let values: UnsafeMutableBufferPointer<Float>

    public init(_ values: [Float]) {
        self.values = .allocate(capacity: max(values.count, 1))
        _ = self.values.initialize(from: values)
    }

    deinit { values.deallocate() }

    /// A row-major F32 matrix over these values.
    public func matrix(rows: Int, columns: Int) -> WeightMatrix {
        precondition(rows * columns <= values.count)
        return WeightMatrix(type: .f32, rows: rows, columns: columns, base: UnsafeRawPointer(values.baseAddress!), owner: self)
    }
}

/// Random Medusa heads in memory (the layout of this project's files), for decoding tests whose
/// output must not depend on how good the guesses are.
public enum RandomHeads {
    /// Values of each head's blocks (weight [hidden, hidden] then bias [hidden]) and, with
    /// `vocabulary`, its own LM head [vocabulary, hidden]; weights uniform in +-scale.
    public static func values(
        heads: Int, layers: Int, hidden: Int, vocabulary: Int? = nil, scale: Float = 0.05, seed: UInt64 = 5
    ) -> (blocks: [[(weight: [Float], bias: [Float])]], lmHeads: [[Float]]?) {
        var rng = TestRandom(seed: seed)
        func random(_ count: Int, _ s: Float) -> [Float] { (0..<count).map { _ in rng.nextSigned() * s } }
        let blocks = (0..<heads).map { _ in
            (0..<layers).map { _ in (weight: random(hidden * hidden, scale), bias: random(hidden, scale)) }
        }
        let lmHeads = vocabulary.map { v in (0..<heads).map { _ in random(v * hidden, 1) } }
        return (blocks, lmHeads)
    }

    public static func make(
        heads: Int, layers: Int = 1, hidden: Int, vocabulary: Int? = nil, scale: Float = 0.05, seed: UInt64 = 5
    ) -> MedusaHeadWeights {
        let v = values(heads: heads, layers: layers, hidden: hidden, vocabulary: vocabulary, scale: scale, seed: seed)
        let made = (0..<heads).map { k in
            MedusaHeadWeights.Head(
                blocks: v.blocks[k].map { MedusaHeadWeights.Block(weight: FloatStorage($0.weight).matrix(rows: hidden, columns: hidden), bias: $0.bias) },
                lmHead: v.lmHeads.map { FloatStorage($0[k]).matrix(rows: vocabulary!, columns: hidden) })
        }
        return MedusaHeadWeights(heads: made, hiddenSize: hidden, vocabularySize: vocabulary, layout: .medusaTP)
    }
}
