#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where the forward pass spends its time, summed over the steps run while it is attached to a
/// model (`LlamaModel.profile`). Detached (nil), the forward reads no clock.
public final class StepProfile: @unchecked Sendable {
    // Written by the thread that runs the forward only.
    public enum Part: Int, CaseIterable, Sendable, Codable {
        /// Weight matrix products of the decoder blocks.
        case matmul
        /// Attention over the cache and the step's tokens, and the cache writes.
        case attention
        /// The row-parallel allreduces (zero on one rank).
        case allreduce
        /// Embedding lookup, norms, rotary embedding, SwiGLU, residual adds.
        case other
        /// The LM head (`LlamaModel.logits`).
        case lmHead

        public var name: String {
            switch self {
            case .matmul: "matmul"
            case .attention: "attention"
            case .allreduce: "allreduce"
            case .other: "other"
            case .lmHead: "lm_head"
            }
        }
    }

    public private(set) var seconds = [Double](repeating: 0, count: Part.allCases.count)
    /// Forward passes measured.
    public private(set) var steps = 0

    public init() {}

    public subscript(part: Part) -> Double { seconds[part.rawValue] }

    public var total: Double { seconds.reduce(0, +) }

    public func reset() {
        seconds = [Double](repeating: 0, count: Part.allCases.count)
        steps = 0
    }

    func add(_ part: Part, _ elapsed: Double) { seconds[part.rawValue] += elapsed }
    func countStep() { steps += 1 }
}

/// Charges the time since the previous lap to a part of `profile`; does nothing without one.
struct ProfileClock {
    let profile: StepProfile?
    private var last: UInt64

    init(_ profile: StepProfile?) {
        self.profile = profile
        last = profile == nil ? 0 : Self.now()
    }

    @inline(__always)
    mutating func lap(_ part: StepProfile.Part) {
        guard let profile else { return }
        let t = Self.now()
        profile.add(part, Double(t &- last) * 1e-9)
        last = t
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}
