import Collectives
import Foundation
import Medusa
import Worker

/// Measurements behind `medusa-worker bench`.
public enum Benchmark {
    /// One greedy plain-decoding run of one prompt.
    public struct DecodeRun: Sendable, Codable {
        public var promptTokens: Int
        public var generatedTokens: Int
        public var prefillSeconds: Double
        public var decodeSeconds: Double
        /// Seconds of the decode phase by part (the forward's parts, plus `sampling_other`: the
        /// rest of the decode loop — sampling, end-of-generation checks, bookkeeping).
        public var decodeSplit: [String: Double]
        /// What rank 0's collectives carried during the decode phase (zero on a group of one).
        public var network: NetworkUse

        /// Decode tokens/s: the first token comes from the prefill's logits, so generated - 1 steps.
        public var decodeTokensPerSecond: Double {
            decodeSeconds > 0 ? Double(max(generatedTokens - 1, 0)) / decodeSeconds : 0
        }
        public var prefillTokensPerSecond: Double { prefillSeconds > 0 ? Double(promptTokens) / prefillSeconds : 0 }
    }

    /// Greedy decoding of `prompt` for at most `maxTokens` tokens (end-of-generation honoured
    /// unless `ignoreEOS`), with the decode phase's time split.
    public static func plainDecode(
        generator: Generator, prompt: [Int32], maxTokens: Int, stopAt isEndOfGeneration: @escaping (Int32) -> Bool
    ) throws(GenerationError) -> DecodeRun {
        try plainDecodeTokens(generator: generator, prompt: prompt, maxTokens: maxTokens, stopAt: isEndOfGeneration).run
    }

    /// `plainDecode` with the tokens it produced.
    public static func plainDecodeTokens(
        generator: Generator, prompt: [Int32], maxTokens: Int, stopAt isEndOfGeneration: @escaping (Int32) -> Bool
    ) throws(GenerationError) -> (run: DecodeRun, tokens: [Int32]) {
        let profile = StepProfile()
        generator.decodeProfile = profile
        defer { generator.decodeProfile = nil }
        var sampler = Sampler(parameters: SamplingParameters(temperature: 0), seed: 0)
        let meter = NetworkMeter(generator.model.communicator)
        let result = try generator.generate(
            prompt: prompt, maxTokens: maxTokens, sampler: &sampler, stopAt: isEndOfGeneration, onToken: meter.onToken)
        let network = meter.finish(steps: max(result.tokens.count - 1, 0), tokens: max(result.tokens.count - 1, 0))
        return (DecodeRun(result, profile: profile, network: network), result.tokens)
    }

    /// One greedy Medusa run of one prompt: the same measurements as `plainDecode`, the tokens (to
    /// compare with plain decoding's), and the verify-step statistics. The decode split adds
    /// `medusa_heads` (the heads and their LM head); `lm_head` is then the verifier's rows only.
    public static func medusaDecode(
        generator: MedusaGenerator, prompt: [Int32], maxTokens: Int, stopAt isEndOfGeneration: @escaping (Int32) -> Bool
    ) throws(GenerationError) -> (run: DecodeRun, tokens: [Int32], stats: MedusaStats) {
        let profile = StepProfile()
        generator.decodeProfile = profile
        defer { generator.decodeProfile = nil }
        var sampler = Sampler(parameters: SamplingParameters(temperature: 0), seed: 0)
        let meter = NetworkMeter(generator.model.communicator)
        let result = try generator.generate(
            prompt: prompt, maxTokens: maxTokens, sampler: &sampler, stopAt: isEndOfGeneration, onToken: meter.onToken)
        let stats = result.medusa ?? MedusaStats(depth: 0)
        // The first token comes from the prefill; every other one from a verify step.
        let network = meter.finish(steps: stats.steps, tokens: max(result.tokens.count - 1, 0))
        return (DecodeRun(result, profile: profile, network: network, extra: ["medusa_heads": stats.headsSeconds]),
                result.tokens, stats)
    }

    /// T(n): the time of one verify step of n tokens (forward with a causal mask over the step,
    /// then the LM head on all n rows) after `context` committed tokens.
    public struct CurvePoint: Sendable, Codable {
        public var nodes: Int
        /// Median over the runs, in seconds.
        public var seconds: Double
        /// seconds / T(1).
        public var ratio: Double
        /// Rank 0's collectives in one step of n tokens (the mean over the runs; zero on one rank).
        public var traffic: CollectiveTraffic
    }

    /// Measures T(n) for n = 1 ... maxNodes: `runs` repetitions each (median), interleaved across n
    /// so that a slow moment of the machine does not land on one n only. The cache holds
    /// `context` committed tokens throughout; verify steps are never committed.
    /// Without `lmHead`, only the forward is timed (Medusa's verifier runs the LM head on the rows
    /// it walks, not on all n).
    public static func verifyCurve(
        model: LlamaModel, context: [Int32], maxNodes: Int, runs: Int, lmHead: Bool = true
    ) throws(ModelError) -> [CurvePoint] {
        precondition(maxNodes >= 1 && runs >= 1)
        model.cache.reset()
        let generator = Generator(model: model)
        try generator.prefill(context)
        let base = model.cache.committed
        let vocabulary = model.config.vocabularySize
        var logits = [Float](repeating: 0, count: maxNodes * vocabulary)
        // Step tokens: the context's tokens again (any valid ids do; the cost does not depend on them).
        let stepTokens = (0..<maxNodes).map { context[$0 % context.count] }
        let positions = (0..<maxNodes).map { Int32(base + $0) }
        let masks = (1...maxNodes).map { TreeMask.causal($0) }
        var times = [[Double]](repeating: [], count: maxNodes)
        var traffic = [CollectiveTraffic](repeating: CollectiveTraffic(), count: maxNodes)
        for _ in 0..<runs {
            for n in 1...maxNodes {
                let before = model.communicator.traffic
                let start = DispatchTime.now()
                let hidden = try stepTokens.withUnsafeBufferPointer { t throws(ModelError) in
                    try positions.withUnsafeBufferPointer { p throws(ModelError) in
                        try model.forward(
                            tokens: UnsafeBufferPointer(rebasing: t[0..<n]),
                            positions: UnsafeBufferPointer(rebasing: p[0..<n]), mask: masks[n - 1])
                    }
                }
                if lmHead {
                    logits.withUnsafeMutableBufferPointer { out in
                        model.logits(hidden: hidden.baseAddress!, rows: n, into: out.baseAddress!)
                    }
                }
                times[n - 1].append(seconds(start, DispatchTime.now()))
                traffic[n - 1] = traffic[n - 1] + (model.communicator.traffic - before)
            }
        }
        let medians = times.map(median)
        return medians.enumerated().map {
            CurvePoint(nodes: $0.offset + 1, seconds: $0.element, ratio: $0.element / medians[0],
                       traffic: traffic[$0.offset].divided(by: runs))
        }
    }

    public static func median(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }
}

extension Benchmark {
    /// One weight matrix product measured on its own.
    public struct KernelPoint: Sendable, Codable {
        public var name: String
        public var type: String
        public var rows: Int
        public var columns: Int
        public var n: Int
        /// Median seconds per call.
        public var seconds: Double
        /// Weight bytes streamed per second.
        public var bytesPerSecond: Double
    }

    /// Times `MatMul.multiply` for the distinct weight shapes of `model` (first layer, LM head),
    /// for each n, `runs` calls each after a warm-up; weights stay hot in cache only if they fit.
    public static func kernels(model: LlamaModel, ns: [Int], runs: Int) -> [KernelPoint] {
        let layer = model.weights.layers[0]
        let matrices: [(String, WeightMatrix)] = [
            ("attn_q", layer.query), ("attn_k", layer.key), ("attn_output", layer.output),
            ("ffn_gate", layer.gate), ("ffn_down", layer.down),
            ("output", model.weights.output.prepared(for: model.matmulInputs)),
        ]
        var points: [KernelPoint] = []
        for (name, w) in matrices {
            for n in ns {
                let x = UnsafeMutablePointer<Float>.allocate(capacity: n * w.columns)
                let y = UnsafeMutablePointer<Float>.allocate(capacity: n * w.rows)
                defer { x.deallocate(); y.deallocate() }
                for i in 0..<(n * w.columns) { x[i] = Float(i % 17) * 0.01 - 0.08 }
                MatMul.multiply(w, x: x, xStride: w.columns, n: n, y: y, yStride: w.rows, pool: model.pool,
                                inputs: model.matmulInputs)
                var times: [Double] = []
                for _ in 0..<runs {
                    let start = DispatchTime.now()
                    MatMul.multiply(w, x: x, xStride: w.columns, n: n, y: y, yStride: w.rows, pool: model.pool,
                                    inputs: model.matmulInputs)
                    times.append(seconds(start, DispatchTime.now()))
                }
                let t = median(times)
                points.append(KernelPoint(
                    name: name, type: "\(w.type)", rows: w.rows, columns: w.columns, n: n, seconds: t,
                    bytesPerSecond: Double(w.rows * w.rowBytes) / t))
            }
        }
        return points
    }
}

extension Benchmark {
    public struct AllreducePoint: Sendable, Codable {
        public var floats: Int
        /// Median seconds per call, as rank 0 sees it.
        public var seconds: Double
    }

    /// The time of one `allreduceSum` of each size on `communicator` (every rank calls this), the
    /// median of `calls` calls after 10 unmeasured ones; the ranks meet in a barrier before each size.
    public static func allreduce(_ communicator: any Communicator, sizes: [Int], calls: Int) throws -> [AllreducePoint] {
        var points: [AllreducePoint] = []
        for size in sizes {
            var buffer = [Float](repeating: 1, count: size)
            try communicator.barrier()
            var times: [Double] = []
            for call in 0..<(calls + 10) {
                let start = DispatchTime.now()
                try buffer.withUnsafeMutableBufferPointer { try communicator.allreduceSum($0) }
                if call >= 10 { times.append(seconds(start, DispatchTime.now())) }
                // Keep the values small (every call multiplies them by the group's size).
                buffer[0] = 1
            }
            points.append(AllreducePoint(floats: size, seconds: median(times)))
        }
        return points
    }
}

extension CollectiveTraffic {
    /// Every counter divided by `count` (a mean per step), rounded down for calls and bytes.
    func divided(by count: Int) -> CollectiveTraffic {
        func d(_ c: Counter) -> Counter {
            Counter(calls: c.calls / count, sent: c.sent / count, received: c.received / count, seconds: c.seconds / Double(count))
        }
        var t = CollectiveTraffic()
        t.allreduce = d(allreduce)
        t.broadcast = d(broadcast)
        t.gather = d(gather)
        t.barrier = d(barrier)
        return t
    }
}

extension Benchmark.DecodeRun {
    /// A generation's measurements: the forward's parts from `profile`, the `extra` parts timed
    /// outside it, and `sampling_other`, the rest of the decode phase.
    init(_ result: GenerationResult, profile: StepProfile, network: Benchmark.NetworkUse, extra: [String: Double] = [:]) {
        var split = extra
        for part in StepProfile.Part.allCases { split[part.name] = profile[part] }
        split["sampling_other"] = max(0, result.decodeSeconds - profile.total - extra.values.reduce(0, +))
        self.init(promptTokens: result.promptTokens, generatedTokens: result.tokens.count,
                  prefillSeconds: result.prefillSeconds, decodeSeconds: result.decodeSeconds, decodeSplit: split,
                  network: network)
    }
}

extension Benchmark {
    /// What rank 0 sent to the group during a decode phase: its collectives (calls, payload
    /// bytes, seconds inside them) and what left its network namespace's interfaces.
    public struct NetworkUse: Sendable, Codable {
        /// Forward steps of the decode phase (plain decoding: one per token after the first).
        public var steps = 0
        /// Tokens those steps produced.
        public var tokens = 0
        /// Rank 0's collectives in the decode phase.
        public var traffic = CollectiveTraffic()
        /// Bytes sent by every interface but loopback of rank 0's network namespace
        /// (/proc/self/net/dev): the real traffic on the wire between hosts, headers included,
        /// and anything else this namespace sent meanwhile. nil where /proc/self/net/dev is absent.
        public var interfaceBytesSent: Int?

        public init() {}

        public static func + (a: NetworkUse, b: NetworkUse) -> NetworkUse {
            var sum = NetworkUse()
            sum.steps = a.steps + b.steps
            sum.tokens = a.tokens + b.tokens
            sum.traffic = a.traffic + b.traffic
            if a.interfaceBytesSent != nil || b.interfaceBytesSent != nil {
                sum.interfaceBytesSent = (a.interfaceBytesSent ?? 0) + (b.interfaceBytesSent ?? 0)
            }
            return sum
        }
    }

    /// Bytes sent so far by the interfaces (loopback excluded) of this process's network namespace.
    public static func interfaceBytesSent() -> Int? {
        // Read to the end with read(2): /proc files report a size of 0.
        let fd = open("/proc/self/net/dev", O_RDONLY)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { break }
            bytes += chunk[0..<n]
        }
        let text = String(decoding: bytes, as: UTF8.self)
        var total = 0
        // "  eth0: rx_bytes rx_packets ... (8 receive fields) tx_bytes ..."
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = line[..<colon].trimmingCharacters(in: .whitespaces)
            let fields = line[line.index(after: colon)...].split(separator: " ")
            guard name != "lo", fields.count >= 9, let sent = Int(fields[8]) else { continue }
            total += sent
        }
        return total
    }
}

/// Takes rank 0's network readings at the start of a decode phase (its first token, which the
/// prefill produced) and at its end.
private final class NetworkMeter {
    let communicator: any Communicator
    private var startTraffic: CollectiveTraffic?
    private var startInterface: Int?

    init(_ communicator: any Communicator) { self.communicator = communicator }

    var onToken: (Int32) -> Bool {
        { [self] _ in
            if startTraffic == nil {
                startTraffic = communicator.traffic
                startInterface = Benchmark.interfaceBytesSent()
            }
            return true
        }
    }

    func finish(steps: Int, tokens: Int) -> Benchmark.NetworkUse {
        var use = Benchmark.NetworkUse()
        use.steps = steps
        use.tokens = tokens
        guard let startTraffic else { return use }
        use.traffic = communicator.traffic - startTraffic
        if let a = startInterface, let b = Benchmark.interfaceBytesSent() { use.interfaceBytesSent = b - a }
        return use
    }
}
