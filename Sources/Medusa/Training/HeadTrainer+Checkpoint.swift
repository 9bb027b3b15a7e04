import Worker
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Checkpoints: a safetensors file holding every parameter under its heads-file name
/// (`medusa.{h}.{l}.weight`, `medusa.{h}.{l}.bias`, `medusa.{h}.lm_head.weight`) and AdamW's
/// moments under the same names prefixed `adam_m.` and `adam_v.`, all F32, with `__metadata__`
/// recording the format, each `Configuration` field under its name, the step and a checksum of the
/// base LM head.
extension HeadTrainer {
    /// `__metadata__` `format` and `version` of trainer checkpoints.
    public static let checkpointFormatName = "medusa-tp-head-trainer"
    public static let checkpointFormatVersion = "1"

    /// The tensors a checkpoint holds: each parameter tensor's name, shape and values, then the moments'.
    private var checkpointTensors: [(name: String, shape: [Int], values: UnsafeMutableBufferPointer<Float>)] {
        let vectors = [("", parameters), ("adam_m.", firstMoments), ("adam_v.", secondMoments)]
        return vectors.flatMap { prefix, vector in
            layout.tensors.map { tensor in
                (prefix + tensor.name, tensor.shape,
                 UnsafeMutableBufferPointer(rebasing: vector[tensor.offset..<(tensor.offset + tensor.count)]))
            }
        }
    }

    /// Writes the trainer's state to `path` atomically: into a temporary file beside it, flushed to
    /// disk, then renamed over `path`, so that an error or an interruption leaves any previous
    /// checkpoint there whole.
    public func save(to path: String) throws(HeadTrainerError) {
        let c = configuration
        let metadata = [
            "format": Self.checkpointFormatName, "version": Self.checkpointFormatVersion,
            "heads": "\(c.heads)", "layers": "\(c.layers)", "hiddenSize": "\(c.hiddenSize)",
            "vocabularySize": "\(c.vocabularySize)", "ownLMHead": "\(c.ownLMHead)",
            "learningRate": "\(c.learningRate)", "weightDecay": "\(c.weightDecay)", "beta1": "\(c.beta1)",
            "beta2": "\(c.beta2)", "epsilon": "\(c.epsilon)", "warmupSteps": "\(c.warmupSteps)",
            "totalSteps": "\(c.totalSteps)", "gradientClip": "\(c.gradientClip)", "lossDecay": "\(c.lossDecay)",
            "seed": "\(c.seed)", "step": "\(step)", "baseLMHeadChecksum": "\(baseLMHeadChecksum)",
        ]
        let tensors = checkpointTensors
        let header = SafetensorsWriter.header(
            metadata: metadata, tensors: tensors.map { ($0.name, "F32", $0.shape, $0.values.count * 4) })
        let temporary = "\(path).\(getpid()).partial"
        func failure(_ what: String) -> HeadTrainerError {
            .cannotWrite(path: path, reason: "\(what): \(String(cString: strerror(errno)))")
        }
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        guard fd >= 0 else { throw failure("cannot create \(temporary)") }
        let written = Self.writeContents(fd, prefix: SafetensorsWriter.assemble(header: header, data: []),
                                         tensors: tensors)
        guard written, fsync(fd) == 0 else {
            let error = failure("cannot \(written ? "flush" : "write") \(temporary)")
            close(fd)
            unlink(temporary)
            throw error
        }
        guard close(fd) == 0 else {
            let error = failure("cannot close \(temporary)")
            unlink(temporary)
            throw error
        }
        guard rename(temporary, path) == 0 else {
            let error = failure("cannot rename \(temporary) to \(path)")
            unlink(temporary)
            throw error
        }
    }

    /// Writes `prefix`, then each tensor's values as little-endian F32, to `fd`; false on an error
    /// (in `errno`).
    private static func writeContents(
        _ fd: Int32, prefix: [UInt8], tensors: [(name: String, shape: [Int], values: UnsafeMutableBufferPointer<Float>)]
    ) -> Bool {
        guard prefix.withUnsafeBytes({ writeAll(fd, $0) }) else { return false }
        let block = UnsafeMutableBufferPointer<UInt32>.allocate(capacity: 1 << 16)
        defer { block.deallocate() }
        for tensor in tensors {
            for start in stride(from: 0, to: tensor.values.count, by: block.count) {
                let count = min(block.count, tensor.values.count - start)
                for i in 0..<count { block[i] = tensor.values[start + i].bitPattern.littleEndian }
                guard writeAll(fd, UnsafeRawBufferPointer(start: block.baseAddress, count: 4 * count)) else { return false }
            }
        }
        return true
    }

    /// Writes all of `bytes`, retrying short and interrupted writes; false on an error (in `errno`).
    private static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var done = 0
        while done < bytes.count {
            let n = write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                return false
            }
            done += n
        }
        return true
    }

    /// A trainer resumed from the checkpoint at `path` (see `save(to:)`), on `baseLMHead` ([V, H]),
    /// which must be the one the checkpoint was trained on. A missing, truncated or malformed file,
    /// a configuration out of range, a tensor missing, extra or of the wrong shape or dtype, or
    /// another base LM head is an error naming the file.
    public static func load(from path: String, baseLMHead: [Float]) throws(WeightFileError) -> HeadTrainer {
        let file = try SafetensorsFile(path: path)
        func bad(_ key: String, _ reason: String) -> WeightFileError {
            WeightFileError(path: path, problem: .badValue(key: key, reason: reason))
        }
        func value<T>(_ key: String, _ parse: (String) -> T?) throws(WeightFileError) -> T {
            guard let text = file.metadata[key] else { throw WeightFileError(path: path, problem: .missingKey(key)) }
            guard let value = parse(text) else { throw bad(key, "'\(text)' is not a valid \(T.self)") }
            return value
        }
        let format = try value("format") { $0 }
        guard format == checkpointFormatName else {
            throw bad("format", "'\(format)', expected '\(checkpointFormatName)' (not a head trainer checkpoint)")
        }
        let version = try value("version") { $0 }
        guard version == checkpointFormatVersion else {
            throw bad("version", "'\(version)' is not supported (supported: \(checkpointFormatVersion))")
        }
        let configuration = try Configuration(
            heads: value("heads") { Int($0) }, layers: value("layers") { Int($0) },
            hiddenSize: value("hiddenSize") { Int($0) }, vocabularySize: value("vocabularySize") { Int($0) },
            ownLMHead: value("ownLMHead") { Bool($0) }, learningRate: value("learningRate") { Float($0) },
            weightDecay: value("weightDecay") { Float($0) }, beta1: value("beta1") { Float($0) },
            beta2: value("beta2") { Float($0) }, epsilon: value("epsilon") { Float($0) },
            warmupSteps: value("warmupSteps") { Int($0) }, totalSteps: value("totalSteps") { Int($0) },
            gradientClip: value("gradientClip") { Float($0) }, lossDecay: value("lossDecay") { Float($0) },
            seed: value("seed") { UInt64($0) })
        let step = try value("step") { Int($0) }
        guard step >= 0 else { throw bad("step", "is \(step), must be >= 0") }

        let trainer: HeadTrainer
        do {
            trainer = try HeadTrainer(configuration: configuration, baseLMHead: baseLMHead)
        } catch {
            switch error {
            case .badConfiguration(let field, let reason): throw bad(field, reason)
            case .badLMHead(let expected, let found):
                throw bad("vocabularySize", "\(configuration.vocabularySize) x hidden size \(configuration.hiddenSize) "
                    + "= \(expected) values, but the base LM head given has \(found)")
            default: throw bad("configuration", error.description)
            }
        }
        let checksum = try value("baseLMHeadChecksum") { UInt64($0) }
        guard checksum == trainer.baseLMHeadChecksum else {
            throw bad("baseLMHeadChecksum", "the checkpoint was trained on another base LM head "
                + "(checksum \(checksum), the one given has \(trainer.baseLMHeadChecksum))")
        }
        trainer.step = step

        let tensors = trainer.checkpointTensors
        let expected = Set(tensors.map(\.name))
        if let extra = file.tensors.first(where: { !expected.contains($0.name) }) {
            throw WeightFileError(path: path, problem: .badHeads(
                reason: "unexpected tensor '\(extra.name)' in a checkpoint of \(configuration.heads) heads of "
                    + "\(configuration.layers) blocks\(configuration.ownLMHead ? " with their own LM heads" : "")"))
        }
        for tensor in tensors {
            let info = try file.requireTensor(tensor.name)
            guard info.dtype == "F32" else {
                throw WeightFileError(path: path, problem: .badTensorHeader(
                    tensor: info.name, reason: "dtype \(info.dtype), checkpoints hold F32"))
            }
            guard info.shape == tensor.shape else {
                throw WeightFileError(path: path, problem: .shapeMismatch(
                    tensor: info.name, expected: tensor.shape, found: info.shape))
            }
            let bytes = file.data(of: info)
            for i in tensor.values.indices {
                let bits = bytes.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)
                tensor.values[i] = Float(bitPattern: UInt32(littleEndian: bits))
            }
        }
        return trainer
    }
}
