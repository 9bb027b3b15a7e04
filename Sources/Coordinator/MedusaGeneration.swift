import Foundation
import Medusa
import Worker

/// What Medusa decoding's verify steps achieved.
public struct MedusaStats: Sendable, Equatable {
    /// Verify steps (collective forwards after the prefill).
    public var steps = 0
    /// Tokens the steps produced: kept candidates plus the base model's own token, per step.
    public var tokensGained = 0
    /// acceptedHistogram[a]: steps that kept a candidates.
    public var acceptedHistogram: [Int]
    /// acceptedAtDepth[d - 1]: steps that kept head d's candidate.
    public var acceptedAtDepth: [Int]
    /// Wall time of the candidate source (the Medusa heads with their LM head), summed over steps.
    /// The forward and the verifier's LM-head rows are in the model's `StepProfile` when one is attached.
    public var headsSeconds: Double = 0

    public init(depth: Int) {
        acceptedHistogram = [Int](repeating: 0, count: depth + 1)
        acceptedAtDepth = [Int](repeating: 0, count: depth)
    }

    /// Tokens gained per verify step, counting the base model's own token (1 means no gain).
    public var meanAcceptedTokens: Double { steps > 0 ? Double(tokensGained) / Double(steps) : 0 }

    /// Per head, the share of verify steps that kept its candidate.
    public var perHeadAcceptance: [Double] {
        acceptedAtDepth.map { steps > 0 ? Double($0) / Double(steps) : 0 }
    }

    mutating func record(kept: Int) {
        steps += 1
        tokensGained += kept + 1
        acceptedHistogram[kept] += 1
        for d in 0..<kept { acceptedAtDepth[d] += 1 }
    }
}

/// Medusa decoding of one sequence (DESIGN.md sections 1, 4, 5). Each step: the candidate source
/// guesses each depth's top-k at the last committed token, rank 0 fills the tree (its root is the
/// base model's own next token), one forward over the tree verifies every candidate on every rank,
/// the verifier keeps the longest accepted path plus the base model's next token, and the kept
/// nodes' keys and values are committed in place (carried to the other ranks by the next plan).
/// The next step's logits and head input come from the last kept node, with no extra forward.
public final class MedusaGenerator {
    public let model: LlamaModel
    public let source: any CandidateSource
    public let tree: CandidateTree
    public let rule: AcceptanceRule
    /// When set, the decode phase (not the prefill) records its forward time split here.
    public var decodeProfile: StepProfile?
    private let plain: Generator
    // Per-node logits of the step being verified, filled on demand: [tree nodes, vocabulary].
    private var nodeLogits: [Float]
    private var haveLogits: [Bool]

    public init(model: LlamaModel, source: any CandidateSource, tree: CandidateTree, rule: AcceptanceRule) throws(TreeError) {
        try tree.check(headCount: source.depth)
        self.model = model
        self.source = source
        self.tree = tree
        self.rule = rule
        plain = Generator(model: model)
        nodeLogits = [Float](repeating: 0, count: tree.count * model.config.vocabularySize)
        haveLogits = [Bool](repeating: false, count: tree.count)
    }

    /// Generates up to `maxTokens` tokens after `prompt` (the cache is reset first); the same
    /// contract as `Generator.generate`. With greedy acceptance the tokens are plain greedy
    /// decoding's; with lossless sampling they are distributed as plain sampling's.
    public func generate(
        prompt: [Int32], maxTokens: Int, sampler: inout Sampler, stopAt isEndOfGeneration: (Int32) -> Bool,
        onToken: (Int32) -> Bool = { _ in true }
    ) throws(GenerationError) -> GenerationResult {
        var (result, prefillEnd) = try plain.begin(prompt: prompt)
        var stats = MedusaStats(depth: tree.depth)
        let savedProfile = model.profile
        if let decodeProfile { model.profile = decodeProfile }
        defer { model.profile = savedProfile }

        var verifier = Verifier(rule: rule, sampler: sampler)
        defer { sampler = verifier.sampler }
        var sequence = prompt
        var hidden = plain.lastHidden
        /// Appends a token unless it ends generation; false when generation is over.
        func emit(_ token: Int32) -> Bool {
            if isEndOfGeneration(token) {
                result.finishReason = .stop
                return false
            }
            result.tokens.append(token)
            sequence.append(token)
            return onToken(token) && result.tokens.count < maxTokens
        }

        let h = model.config.hiddenSize
        var root = plain.lastLogits.withUnsafeBufferPointer { verifier.sampler.sample($0) }
        var going = maxTokens > 0 && emit(root)
        while going && model.cache.available > 0 {
            // Near the end of the context only the first nodes fit; they still form a tree.
            let step = tree.prefix(model.cache.available)
            let guesses = propose(hidden: hidden, sequence: sequence, topK: step.topK, stats: &stats)
            let tokens = (0..<step.count).map { node -> Int32 in
                guard node > 0 else { return root }
                let guess = guesses[step.depths[node] - 1]
                let rank = step.paths[node].last!
                return rank < guess.count ? guess[rank] : root
            }
            let base = model.cache.committed
            let positions = step.depths.map { Int32(base + $0) }
            let rows: UnsafeBufferPointer<Float>
            do {
                rows = try tokens.withUnsafeBufferPointer { t throws(ModelError) in
                    try positions.withUnsafeBufferPointer { p throws(ModelError) in
                        try model.forward(tokens: t, positions: p, mask: step.mask)
                    }
                }
            } catch { throw .model(error) }

            let verdict = verify(step, tokens: tokens, rows: rows, verifier: &verifier)
            model.cache.commit(kept: verdict.path)
            stats.record(kept: verdict.path.count - 1)
            hidden.withUnsafeMutableBufferPointer { $0.baseAddress!.update(from: rows.baseAddress! + verdict.path.last! * h, count: h) }
            for node in verdict.path.dropFirst() where going { going = emit(tokens[node]) }
            if going { going = emit(verdict.next) }
            root = verdict.next
        }
        result.decodeSeconds = seconds(prefillEnd, DispatchTime.now())
        result.medusa = stats
        return result
    }

    /// The source's guesses, timed apart from the forward's profile.
    private func propose(hidden: [Float], sequence: [Int32], topK: [Int], stats: inout MedusaStats) -> [[Int32]] {
        let profile = model.profile
        model.profile = nil
        defer { model.profile = profile }
        let start = DispatchTime.now()
        let guesses = hidden.withUnsafeBufferPointer { source.propose(hidden: $0.baseAddress!, sequence: sequence, topK: topK) }
        stats.headsSeconds += seconds(start, DispatchTime.now())
        return guesses
    }

    /// Runs the verifier, computing a node's logits only when the walk reaches it.
    private func verify(
        _ step: CandidateTree, tokens: [Int32], rows: UnsafeBufferPointer<Float>, verifier: inout Verifier
    ) -> Verdict {
        let h = model.config.hiddenSize, v = model.config.vocabularySize
        for i in 0..<step.count { haveLogits[i] = false }
        return nodeLogits.withUnsafeMutableBufferPointer { all in
            verifier.verify(tree: step, tokens: tokens) { node in
                let out = all.baseAddress! + node * v
                if !haveLogits[node] {
                    model.logits(hidden: rows.baseAddress! + node * h, rows: 1, into: out)
                    haveLogits[node] = true
                }
                return UnsafeBufferPointer(start: out, count: v)
            }
        }
    }
}
