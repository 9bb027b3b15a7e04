/// How a verify step decides which candidates to keep (DESIGN.md section 5).
public enum AcceptanceRule: Sendable, Equatable {
    /// Keep a candidate when it is the base model's argmax at its parent: the output is exactly
    /// plain greedy decoding's.
    case greedy
    /// Medusa's typical acceptance: keep x when p(x) > min(epsilon, delta * exp(-H(p))), with p the
    /// base model's distribution at the parent (at the sampling temperature, or 1 when greedy).
    case typical(epsilon: Float, delta: Float)
    /// Lossless speculative sampling over the tree: each child is tried in rank order and kept with
    /// the probability the residual distribution gives it; a rejected token's mass is removed and
    /// the rest renormalised; when every child is rejected the next token is drawn from the
    /// residual. Every output token is distributed exactly as plain sampling's.
    case sample

    public static let defaultTypical = AcceptanceRule.typical(epsilon: 0.09, delta: 0.3)
}

/// The outcome of verifying one tree.
public struct Verdict: Sendable, Equatable {
    /// Tree nodes kept, from the root down: always starts with the root (node 0).
    public var path: [Int]
    /// The base model's own token after the last kept node: the next tree's root.
    public var next: Int32
}

/// Walks a verified tree from its root, asking for the base model's logits at a node only when the
/// walk reaches it (so the LM head runs on the kept path, not on every tree row).
public struct Verifier {
    public var rule: AcceptanceRule
    public var sampler: Sampler

    public init(rule: AcceptanceRule, sampler: Sampler) {
        self.rule = rule
        self.sampler = sampler
    }

    /// `tokens[i]` is node i's token; `logits(i)` the base model's logits after node i.
    public mutating func verify(
        tree: CandidateTree, tokens: [Int32], logits: (Int) -> UnsafeBufferPointer<Float>
    ) -> Verdict {
        precondition(tokens.count == tree.count)
        switch rule {
        case .greedy: return verifyGreedy(tree: tree, tokens: tokens, logits: logits)
        case .typical(let epsilon, let delta):
            return verifyTypical(tree: tree, tokens: tokens, epsilon: epsilon, delta: delta, logits: logits)
        case .sample:
            return sampler.parameters.isGreedy
                ? verifyGreedy(tree: tree, tokens: tokens, logits: logits)
                : verifySampling(tree: tree, tokens: tokens, logits: logits)
        }
    }

    private func verifyGreedy(
        tree: CandidateTree, tokens: [Int32], logits: (Int) -> UnsafeBufferPointer<Float>
    ) -> Verdict {
        var path = [0]
        while true {
            let best = Int32(argmax(logits(path.last!)))
            // Siblings hold distinct guesses in practice; the first match in rank order wins.
            guard let child = tree.children[path.last!].first(where: { tokens[$0] == best }) else {
                return Verdict(path: path, next: best)
            }
            path.append(child)
        }
    }

    private mutating func verifySampling(
        tree: CandidateTree, tokens: [Int32], logits: (Int) -> UnsafeBufferPointer<Float>
    ) -> Verdict {
        var path = [0]
        walk: while true {
            let node = path.last!
            // The residual distribution, starting as plain sampling's (temperature, top-k, top-p).
            var residual = sampler.distribution(logits(node))
            for child in tree.children[node] {
                guard let at = residual.firstIndex(where: { $0.token == tokens[child] }) else { continue }
                let p = residual[at].probability
                if sampler.generator.nextUnit() < p {
                    path.append(child)
                    continue walk
                }
                // Rejected: the draft was a point mass on this token, so the residual is p without it.
                residual.remove(at: at)
                let total = residual.reduce(Float(0)) { $0 + $1.probability }
                // Only rounding can empty the residual (p was 1 up to float error): the token stands.
                guard total > 0 else { return Verdict(path: path, next: tokens[child]) }
                for i in residual.indices { residual[i].probability /= total }
            }
            return Verdict(path: path, next: draw(residual))
        }
    }

    private mutating func verifyTypical(
        tree: CandidateTree, tokens: [Int32], epsilon: Float, delta: Float,
        logits: (Int) -> UnsafeBufferPointer<Float>
    ) -> Verdict {
        // The longest path whose every candidate passes at its parent; the first in node order on ties.
        var best = [0]
        var stack = [[0]]
        while let path = stack.popLast() {
            if path.count > best.count || (path.count == best.count && path.last! < best.last!) { best = path }
            let node = path.last!
            guard !tree.children[node].isEmpty else { continue }
            let l = logits(node)
            let temperature = sampler.parameters.isGreedy ? 1 : sampler.parameters.temperature
            let (probability, threshold) = typicalThreshold(l, temperature: temperature, epsilon: epsilon, delta: delta)
            for child in tree.children[node].reversed() where probability(Int(tokens[child])) > threshold {
                stack.append(path + [child])
            }
        }
        let last = logits(best.last!)
        return Verdict(path: best, next: sampler.sample(last))
    }

    private mutating func draw(_ distribution: [(token: Int32, probability: Float)]) -> Int32 {
        let u = sampler.generator.nextUnit()
        var cumulative: Float = 0
        for p in distribution {
            cumulative += p.probability
            if u < cumulative { return p.token }
        }
        return distribution.last!.token
    }
}

/// softmax(logits / temperature) as a lookup, and typical acceptance's bar min(eps, delta e^-H).
func typicalThreshold(
    _ logits: UnsafeBufferPointer<Float>, temperature: Float, epsilon: Float, delta: Float
) -> (probability: (Int) -> Float, threshold: Float) {
    let inv = 1 / temperature
    var maxValue = -Float.infinity
    for x in logits { maxValue = max(maxValue, x * inv) }
    var sum: Double = 0
    var weighted: Double = 0  // sum of e^z * z, for the entropy
    for x in logits {
        let z = Double(x * inv - maxValue)
        let e = exp(z)
        sum += e
        weighted += e * z
    }
    // H = log(sum) - (sum of e^z z) / sum, with z shifted so the largest is 0.
    let entropy = log(sum) - weighted / sum
    let threshold = min(epsilon, delta * Float(exp(-entropy)))
    let logSum = log(sum)
    return ({ token in Float(exp(Double(logits[token] * inv - maxValue) - logSum)) }, threshold)
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
