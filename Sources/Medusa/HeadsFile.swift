import Foundation
import Worker

extension MedusaHeadWeights {
    /// The weights files a heads folder is searched for, in this order; failing them, the folder's
    /// only `*.safetensors` file.
    public static let weightsFileNames = ["medusa_heads.safetensors", "medusa_lm_head.safetensors", "model.safetensors"]
    /// PyTorch pickles a heads folder may hold instead; they are not read.
    private static let pickleFileNames = ["medusa_lm_head.pt", "pytorch_model.bin"]
    /// `__metadata__` `format` and `version` of this project's heads files.
    public static let formatName = "medusa-tp-heads"
    public static let formatVersion = "1"

    /// Loads the heads at `path`: a safetensors file, or a folder holding one (the first present of
    /// `weightsFileNames`, else its only `*.safetensors`) and optionally a `config.json`.
    ///
    /// The layout is recognized from the tensor names (see `MedusaHeadsLayout`; a file whose
    /// `__metadata__` `format` is `medusa-tp-heads` is always read as `.medusaTP`). The heads must be
    /// numbered 0..<K, each with the same L >= 1 residual blocks (a square [H, H] weight and an [H]
    /// bias), and either all or none with an LM head of [V, H]; any other tensor is an error, so
    /// that a wrong file is not taken for heads. What the file's metadata (`.medusaTP`) or the
    /// folder's config.json (FasterDecoding, vLLM) records about K, L, H and V must agree with the
    /// tensors. Matrices are zero-copy F32/F16/BF16 views into the mapped file; biases are copied
    /// out as fp32.
    public init(path: String) throws(WeightFileError) {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw WeightFileError(path: path, problem: .cannotOpen(reason: "no such file or folder"))
        }
        let weightsPath: String
        var config: JSONObjectReader?
        if isDirectory.boolValue {
            weightsPath = try Self.weightsFile(in: path)
            let configPath = (path as NSString).appendingPathComponent("config.json")
            if FileManager.default.fileExists(atPath: configPath) {
                config = try JSONObjectReader(
                    JSONValue.read(path: configPath, what: "config.json"), path: configPath, what: "config.json")
            }
        } else {
            guard !(path.hasSuffix(".pt") || path.hasSuffix(".bin")) else {
                throw WeightFileError(path: path, problem: .badHeads(reason: Self.pickleAdvice(path)))
            }
            weightsPath = path
        }

        let file = try SafetensorsFile(path: weightsPath)
        let naming = try HeadsNaming(file)
        if naming == .medusaTP { try Self.checkFormat(file) }
        let found = try Self.readHeads(file, naming)
        let recorded: (vocabulary: Int?, baseModel: String?)
        if naming == .medusaTP {
            recorded = try Self.checkMetadata(file, found)
        } else if let config {
            recorded = try Self.checkConfig(config, naming, found, weightsPath: weightsPath)
        } else {
            recorded = (nil, nil)
        }
        let layout: MedusaHeadsLayout = switch naming {
        case .fasterDecoding: found.vocabulary == nil ? .fasterDecodingSharedLMHead : .fasterDecoding
        case .vllm: .vllm
        case .medusaTP: .medusaTP
        }
        let candidates = naming == .medusaTP
            ? try Self.candidateTokens(file, vocabulary: recorded.vocabulary, sharedLMHead: found.vocabulary == nil) : nil
        self.init(heads: found.heads, hiddenSize: found.hidden, vocabularySize: found.vocabulary ?? recorded.vocabulary,
                  layout: layout, baseModel: recorded.baseModel, path: weightsPath, candidateTokens: candidates)
    }

    /// Checks that the heads fit a base model of `hiddenSize` and `vocabularySize`: the same hidden
    /// size, and the same vocabulary when the heads know theirs (own LM heads, or recorded).
    public func validate(hiddenSize: Int, vocabularySize: Int) throws(WeightFileError) {
        guard hiddenSize == self.hiddenSize else {
            throw WeightFileError(path: path, problem: .headsModelMismatch(
                dimension: "hidden size", heads: self.hiddenSize, model: hiddenSize))
        }
        if let own = self.vocabularySize, own != vocabularySize {
            throw WeightFileError(path: path, problem: .headsModelMismatch(
                dimension: "vocabulary size", heads: own, model: vocabularySize))
        }
    }

    /// Writes heads in this project's layout (`.medusaTP`): `medusa.{h}.{l}.weight` [H, H] and
    /// `medusa.{h}.{l}.bias` [H] for each head's residual blocks, `medusa.{h}.lm_head.weight`
    /// [V, H] when `lmHeads` are given (nil: the heads share the base model's LM head), stored as
    /// `dtype` (F32, F16 or BF16), with `__metadata__` recording the format, version, hidden size,
    /// vocabulary size, head and block counts and `baseModel` (free text, e.g. the base model's
    /// file name and sha256), and `candidateTokens` when given (heads sharing the base LM head: the
    /// only tokens they propose, see `candidateTokens`). Matrices are row-major [out, in]. The file is
    /// replaced atomically.
    ///
    /// Arguments that do not fit together (heads with different block counts, a matrix of the
    /// wrong size, ...) are a `WeightFileError` naming `path`; nothing is written then.
    public static func write(
        blocks: [[(weight: [Float], bias: [Float])]], lmHeads: [[Float]]?, hiddenSize: Int, vocabularySize: Int,
        baseModel: String, to path: String, dtype: TensorType = .f32, candidateTokens: [Int32]? = nil
    ) throws {
        func bad(_ reason: String) -> WeightFileError {
            WeightFileError(path: path, problem: .badHeads(reason: "cannot write: \(reason)"))
        }
        guard dtype == .f32 || dtype == .f16 || dtype == .bf16 else {
            throw bad("heads are stored as F32, F16 or BF16, not \(dtype)")
        }
        guard hiddenSize > 0, vocabularySize > 0 else {
            throw bad("hidden size \(hiddenSize) and vocabulary size \(vocabularySize) must be positive")
        }
        guard let blockCount = blocks.first?.count else { throw bad("no heads") }
        guard blockCount > 0 else { throw bad("head 0 has no residual blocks") }
        if let lmHeads, lmHeads.count != blocks.count {
            throw bad("\(lmHeads.count) LM heads for \(blocks.count) heads")
        }
        if let candidateTokens {
            guard lmHeads == nil else { throw bad("candidate tokens are for heads sharing the base LM head") }
            guard !candidateTokens.isEmpty, zip(candidateTokens, candidateTokens.dropFirst()).allSatisfy({ $0 < $1 }),
                  candidateTokens[0] >= 0, Int(candidateTokens.last!) < vocabularySize else {
                throw bad("candidate tokens must be ascending, without repeats, within 0..<\(vocabularySize)")
            }
        }
        let (lmHeadCount, overflow) = vocabularySize.multipliedReportingOverflow(by: hiddenSize)
        guard !overflow else { throw bad("an LM head of \(vocabularySize) x \(hiddenSize) is too large") }

        let names = HeadsNaming.medusaTP
        var writer = SafetensorsWriter()
        for (h, head) in blocks.enumerated() {
            guard head.count == blockCount else {
                throw bad("every head needs the same number of residual blocks, but head 0 has \(blockCount) "
                    + "and head \(h) has \(head.count)")
            }
            for (l, block) in head.enumerated() {
                // The bias first: its count is a real array's, so hiddenSize squared cannot overflow after it.
                guard block.bias.count == hiddenSize, block.weight.count == hiddenSize * hiddenSize else {
                    throw bad("head \(h) block \(l) has \(block.weight.count) weights and \(block.bias.count) biases, "
                        + "expected \(hiddenSize) x \(hiddenSize) and \(hiddenSize)")
                }
                writer.add(names.weight(h, l), shape: [hiddenSize, hiddenSize], values: block.weight, type: dtype)
                writer.add(names.bias(h, l), shape: [hiddenSize], values: block.bias, type: dtype)
            }
            if let lmHeads {
                guard lmHeads[h].count == lmHeadCount else {
                    throw bad("LM head \(h) has \(lmHeads[h].count) values, expected \(vocabularySize) x \(hiddenSize)")
                }
                writer.add(names.lmHead(h, blocks: blockCount), shape: [vocabularySize, hiddenSize],
                           values: lmHeads[h], type: dtype)
            }
        }
        writer.metadata = [
            "format": formatName, "version": formatVersion, "hidden_size": "\(hiddenSize)",
            "vocab_size": "\(vocabularySize)", "num_heads": "\(blocks.count)", "num_layers": "\(blockCount)",
            "base_model": baseModel,
        ]
        if let candidateTokens {
            writer.metadata["candidate_tokens"] = candidateTokens.map(String.init).joined(separator: ",")
        }
        try Data(writer.serialized()).write(to: URL(fileURLWithPath: path), options: .atomic)
    }
}

// MARK: Reading

private extension MedusaHeadWeights {
    /// What the tensors hold, before any metadata or config.json is consulted.
    struct FoundHeads {
        var heads: [Head]
        var blockCount: Int
        var hidden: Int
        /// The LM heads' rows; nil when the heads have none.
        var vocabulary: Int?

        /// The sizes a file's metadata or a config.json may record, each under its `key` (`heads` and
        /// `blocks` name the head and block counts' keys), with the tensors' value (nil when they do
        /// not say: the vocabulary of heads without LM heads) and that value in words.
        func sizes(heads: String, blocks: String) -> [(key: String, actual: Int?, described: String)] {
            [(heads, self.heads.count, "\(self.heads.count) heads"),
             (blocks, blockCount, "\(blockCount) residual blocks per head"),
             ("hidden_size", hidden, "heads of hidden size \(hidden)"),
             ("vocab_size", vocabulary, "LM heads of \(vocabulary ?? 0) rows")]
        }

        /// Checks `recorded`, what the file at `path` says under `size.key`, against the tensors in
        /// `holder`.
        func check(
            _ size: (key: String, actual: Int?, described: String), says recorded: Int, holder: String, path: String
        ) throws(WeightFileError) {
            guard let actual = size.actual, actual != recorded else { return }
            throw WeightFileError(path: path, problem: .badValue(
                key: size.key, reason: "says \(recorded), but \(holder) holds \(size.described)"))
        }
    }

    /// The weights file of a heads folder (see `init(path:)`).
    static func weightsFile(in directory: String) throws(WeightFileError) -> String {
        func bad(_ reason: String) -> WeightFileError {
            WeightFileError(path: directory, problem: .badHeads(reason: reason))
        }
        func inFolder(_ name: String) -> String { (directory as NSString).appendingPathComponent(name) }
        let fm = FileManager.default
        if let name = weightsFileNames.first(where: { fm.fileExists(atPath: inFolder($0)) }) {
            return inFolder(name)
        }
        let contents: [String]
        do {
            contents = try fm.contentsOfDirectory(atPath: directory)
        } catch {
            throw WeightFileError(path: directory, problem: .cannotOpen(reason: "cannot list the folder: \(error.localizedDescription)"))
        }
        let expected = weightsFileNames.joined(separator: ", ") + " or a single *.safetensors file"
        let safetensors = contents.filter { $0.hasSuffix(".safetensors") }.sorted()
        if safetensors.count == 1 { return inFolder(safetensors[0]) }
        if safetensors.count > 1 {
            throw bad("several safetensors files (\(safetensors.joined(separator: ", "))) and none named "
                + "\(weightsFileNames.joined(separator: ", ")): give the path of the heads file")
        }
        if let pickle = pickleFileNames.first(where: contents.contains) {
            throw bad(pickleAdvice(pickle))
        }
        throw bad("no heads weights file in this folder (expected \(expected))")
    }

    /// Why a PyTorch pickle is refused, and what to do instead.
    static func pickleAdvice(_ file: String) -> String {
        let name = (file as NSString).lastPathComponent
        let converted = ((name as NSString).deletingPathExtension as NSString).appendingPathExtension("safetensors") ?? name
        return "\(name) is a PyTorch pickle, which is not read (loading one can run arbitrary code); convert it to "
            + "safetensors, e.g. in Python: safetensors.torch.save_file(torch.load(\"\(name)\"), \"\(converted)\")"
    }

    /// The tensors as heads: numbered 0..<K without gaps, each with blocks 0..<L (L >= 1) of a
    /// square weight [H, H] and a bias [H], all or none with an LM head [V, H]. Every tensor must
    /// be one of these.
    static func readHeads(_ file: SafetensorsFile, _ naming: HeadsNaming) throws(WeightFileError) -> FoundHeads {
        func bad(_ reason: String) -> WeightFileError {
            WeightFileError(path: file.path, problem: .badHeads(reason: reason))
        }
        var parsed: [(name: String, tensor: HeadTensor)] = []
        for info in file.tensors {
            guard let tensor = naming.parse(info.name) else {
                throw bad("unexpected tensor '\(info.name)' (\(naming.title) heads are named \(naming.patterns))")
            }
            parsed.append((info.name, tensor))
        }
        let numbers = Set(parsed.map(\.tensor.head)).sorted()
        guard !numbers.isEmpty else { throw bad("the file holds no tensors") }
        if let gap = numbers.indices.first(where: { numbers[$0] != $0 }) {
            throw bad("the heads must be numbered 0, 1, 2, ... without gaps, but head \(gap) is missing "
                + "(found heads \(listed(numbers.map(String.init))))")
        }
        let headCount = numbers.count
        let blockCount = (parsed.compactMap(\.tensor.block).max() ?? 0) + 1

        guard let firstInfo = file.tensorInfo(naming.weight(0, 0)) else {
            throw WeightFileError(path: file.path, problem: .missingTensor(naming.weight(0, 0)))
        }
        let shape = firstInfo.shape
        guard shape.count == 2, shape[0] == shape[1], shape[0] > 0 else {
            throw WeightFileError(path: file.path, problem: .badTensorShape(
                tensor: firstInfo.name, reason: "a residual block's weight is [hidden, hidden], found \(shape)"))
        }
        let hidden = shape[0]
        func vector(_ name: String) throws(WeightFileError) -> [Float] {
            let m = try file.matrix(name, shape: [hidden])
            var out = [Float](repeating: 0, count: hidden)
            out.withUnsafeMutableBufferPointer { m.dequantizeRow(0, into: $0.baseAddress!) }
            return out
        }
        var blocks: [[Block]] = []
        for h in 0..<headCount {
            var head: [Block] = []
            for l in 0..<blockCount {
                head.append(Block(weight: try file.matrix(naming.weight(h, l), shape: [hidden, hidden]),
                                  bias: try vector(naming.bias(h, l))))
            }
            blocks.append(head)
        }

        // FasterDecoding numbers its LM head after the blocks; one elsewhere is not an LM head.
        let position = naming.lmHeadPosition(blocks: blockCount)
        for (name, tensor) in parsed {
            if case .lmHead(let h, let p) = tensor, p != position {
                throw bad("unexpected tensor '\(name)': the heads have \(blockCount) residual blocks, "
                    + "so head \(h)'s LM head would be '\(naming.lmHead(h, blocks: blockCount))'")
            }
        }
        if !naming.lmHeadsRequired {
            let owners = Set(parsed.compactMap { if case .lmHead(let h, _) = $0.tensor { h } else { nil } })
            if owners.isEmpty {
                return FoundHeads(heads: blocks.map { Head(blocks: $0, lmHead: nil) }, blockCount: blockCount,
                                  hidden: hidden, vocabulary: nil)
            }
            if let without = (0..<headCount).first(where: { !owners.contains($0) }), let with = owners.min() {
                throw bad("either every head has its own LM head or none has, but head \(with) has "
                    + "'\(naming.lmHead(with, blocks: blockCount))' and head \(without) has no "
                    + "'\(naming.lmHead(without, blocks: blockCount))'")
            }
        }
        let firstLMHead = try file.requireTensor(naming.lmHead(0, blocks: blockCount))
        guard firstLMHead.shape.count == 2, firstLMHead.shape[0] > 0, firstLMHead.shape[1] == hidden else {
            throw WeightFileError(path: file.path, problem: .badTensorShape(
                tensor: firstLMHead.name, reason: "an LM head is [vocabulary, \(hidden)], found \(firstLMHead.shape)"))
        }
        let vocabulary = firstLMHead.shape[0]
        var heads: [Head] = []
        for h in 0..<headCount {
            let lmHead = try file.matrix(naming.lmHead(h, blocks: blockCount), shape: [vocabulary, hidden])
            heads.append(Head(blocks: blocks[h], lmHead: lmHead))
        }
        return FoundHeads(heads: heads, blockCount: blockCount, hidden: hidden, vocabulary: vocabulary)
    }

    /// A `.medusaTP` file's `format` and `version`, checked before its tensors are read.
    static func checkFormat(_ file: SafetensorsFile) throws(WeightFileError) {
        let metadata = MetadataReader(file: file)
        let format = try metadata.string("format")
        guard format == formatName else {
            throw WeightFileError(path: file.path, problem: .badValue(
                key: "format", reason: "'\(format)', expected '\(formatName)' for tensors named medusa.*"))
        }
        let version = try metadata.string("version")
        guard version == formatVersion else {
            throw WeightFileError(path: file.path, problem: .badValue(
                key: "version", reason: "'\(version)' is not supported (supported: \(formatVersion))"))
        }
    }

    /// A `.medusaTP` file's recorded sizes, which must agree with its tensors; returns the
    /// recorded vocabulary and base model.
    static func checkMetadata(
        _ file: SafetensorsFile, _ found: FoundHeads
    ) throws(WeightFileError) -> (vocabulary: Int?, baseModel: String?) {
        let metadata = MetadataReader(file: file)
        for size in found.sizes(heads: "num_heads", blocks: "num_layers") {
            try found.check(size, says: try metadata.positive(size.key), holder: "the file", path: file.path)
        }
        let baseModel = file.metadata["base_model"].flatMap { $0.isEmpty ? nil : $0 }
        return (try metadata.positive("vocab_size"), baseModel)
    }

    /// The `candidate_tokens` metadata of this project's heads: comma-separated token ids,
    /// ascending, within the vocabulary, for heads sharing the LM head; nil when absent.
    static func candidateTokens(
        _ file: SafetensorsFile, vocabulary: Int?, sharedLMHead: Bool
    ) throws(WeightFileError) -> [Int32]? {
        guard let text = file.metadata["candidate_tokens"] else { return nil }
        func bad(_ reason: String) -> WeightFileError {
            WeightFileError(path: file.path, problem: .badValue(key: "candidate_tokens", reason: reason))
        }
        guard sharedLMHead else { throw bad("only heads sharing the base LM head have candidate tokens") }
        var tokens: [Int32] = []
        for field in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard let token = Int32(field), token >= 0, token > (tokens.last ?? -1) else {
                throw bad("'\(field.prefix(20))' after \(tokens.count) ids: expected ascending token ids without repeats")
            }
            tokens.append(token)
        }
        if let vocabulary, let last = tokens.last, Int(last) >= vocabulary {
            throw bad("token \(last) is outside the vocabulary of \(vocabulary)")
        }
        return tokens
    }

    /// A FasterDecoding or vLLM folder's config.json: the head and block counts, hidden size and
    /// vocabulary it records, when it does, must agree with the tensors in `weightsPath`. Returns
    /// the recorded vocabulary and base model.
    static func checkConfig(
        _ config: JSONObjectReader, _ naming: HeadsNaming, _ found: FoundHeads, weightsPath: String
    ) throws(WeightFileError) -> (vocabulary: Int?, baseModel: String?) {
        let holder = (weightsPath as NSString).lastPathComponent
        let keys = naming == .vllm ? ("num_heads", "num_hidden_layers") : ("medusa_num_heads", "medusa_num_layers")
        for size in found.sizes(heads: keys.0, blocks: keys.1) where config.has(size.key) {
            try found.check(size, says: try config.integer(size.key), holder: holder, path: config.path)
        }
        let vocabulary = config.has("vocab_size") ? try config.integer("vocab_size") : nil
        if let vocabulary, vocabulary <= 0 {
            throw WeightFileError(path: config.path, problem: .badValue(
                key: "vocab_size", reason: "must be positive, got \(vocabulary)"))
        }
        return (vocabulary, try config.string("base_model_name_or_path", default: nil))
    }

    /// Up to four items, then how many more.
    static func listed(_ items: [String]) -> String {
        items.count <= 4 ? items.joined(separator: ", ")
            : items.prefix(4).joined(separator: ", ") + " and \(items.count - 4) more"
    }
}

/// Typed reads of a safetensors file's `__metadata__`, whose values are all strings.
private struct MetadataReader {
    let file: SafetensorsFile

    func string(_ key: String) throws(WeightFileError) -> String {
        guard let value = file.metadata[key] else {
            throw WeightFileError(path: file.path, problem: .missingKey(key))
        }
        return value
    }

    func positive(_ key: String) throws(WeightFileError) -> Int {
        let text = try string(key)
        guard let value = Int(text), value > 0 else {
            throw WeightFileError(path: file.path, problem: .badValue(key: key, reason: "'\(text)' is not a positive integer"))
        }
        return value
    }
}

// MARK: Tensor names

/// What one tensor of a heads file is.
private enum HeadTensor: Hashable {
    case weight(head: Int, block: Int)
    case bias(head: Int, block: Int)
    /// `position` is where FasterDecoding's name puts it (after the blocks: `{h}.{L}.weight`);
    /// nil in the layouts that name it apart.
    case lmHead(head: Int, position: Int?)

    var head: Int {
        switch self {
        case .weight(let h, _), .bias(let h, _), .lmHead(let h, _): h
        }
    }

    /// The residual block, for a block's weight or bias.
    var block: Int? {
        switch self {
        case .weight(_, let l), .bias(_, let l): l
        case .lmHead: nil
        }
    }
}

/// How a heads layout names its tensors, both ways: what a name means, and each tensor's name.
/// FasterDecoding's layouts with and without LM heads share one naming.
private enum HeadsNaming: CaseIterable {
    case fasterDecoding, vllm, medusaTP

    /// The naming of `file`'s tensors: `.medusaTP` when its metadata says so, else the naming
    /// most of its tensor names follow. No tensor named any known way is an error listing some.
    init(_ file: SafetensorsFile) throws(WeightFileError) {
        if file.metadata["format"] == MedusaHeadWeights.formatName {
            self = .medusaTP
            return
        }
        let names = file.tensors.map(\.name)
        let matches = Self.allCases.map { naming in (naming, names.filter { naming.parse($0) != nil }.count) }
        guard let best = matches.max(by: { $0.1 < $1.1 }), best.1 > 0 else {
            let found = names.isEmpty ? "the file holds no tensors"
                : "found " + MedusaHeadWeights.listed(names.sorted().map { "'\($0)'" })
            let expected = Self.allCases.map { "\($0.title): \($0.patterns)" }.joined(separator: "; ")
            throw WeightFileError(path: file.path, problem: .badHeads(
                reason: "no tensor is named as Medusa heads are (\(found); expected \(expected))"))
        }
        self = best.0
    }

    var title: String {
        switch self {
        case .fasterDecoding: "FasterDecoding"
        case .vllm: "vLLM"
        case .medusaTP: "medusa-tp"
        }
    }

    /// The names, for error messages.
    var patterns: String {
        switch self {
        case .fasterDecoding: "'{h}.{l}.linear.weight', '{h}.{l}.linear.bias', '{h}.{L}.weight'"
        case .vllm: "'blocks.{h}.layers.{l}.weight', 'blocks.{h}.layers.{l}.bias', 'lm_heads.{h}.weight'"
        case .medusaTP: "'medusa.{h}.{l}.weight', 'medusa.{h}.{l}.bias', 'medusa.{h}.lm_head.weight'"
        }
    }

    /// Whether every head must have its own LM head (vLLM's model always has them).
    var lmHeadsRequired: Bool { self == .vllm }

    func weight(_ h: Int, _ l: Int) -> String {
        switch self {
        case .fasterDecoding: "\(h).\(l).linear.weight"
        case .vllm: "blocks.\(h).layers.\(l).weight"
        case .medusaTP: "medusa.\(h).\(l).weight"
        }
    }

    func bias(_ h: Int, _ l: Int) -> String {
        switch self {
        case .fasterDecoding: "\(h).\(l).linear.bias"
        case .vllm: "blocks.\(h).layers.\(l).bias"
        case .medusaTP: "medusa.\(h).\(l).bias"
        }
    }

    /// Head `h`'s LM head, when the heads have `blocks` residual blocks.
    func lmHead(_ h: Int, blocks: Int) -> String {
        switch self {
        case .fasterDecoding: "\(h).\(blocks).weight"
        case .vllm: "lm_heads.\(h).weight"
        case .medusaTP: "medusa.\(h).lm_head.weight"
        }
    }

    /// The `position` of `HeadTensor.lmHead` in names of heads with `blocks` residual blocks.
    func lmHeadPosition(blocks: Int) -> Int? {
        self == .fasterDecoding ? blocks : nil
    }

    /// What `name` is in this naming, or nil when it is none of its tensors.
    func parse(_ name: String) -> HeadTensor? {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false).map(String.init)
        switch self {
        case .fasterDecoding:
            // {h}.{l}.linear.weight, {h}.{l}.linear.bias, {h}.{L}.weight
            guard parts.count >= 3, let h = Self.number(parts[0]), let l = Self.number(parts[1]) else { return nil }
            switch parts[2...].joined(separator: ".") {
            case "linear.weight": return .weight(head: h, block: l)
            case "linear.bias": return .bias(head: h, block: l)
            case "weight": return .lmHead(head: h, position: l)
            default: return nil
            }
        case .vllm:
            // blocks.{h}.layers.{l}.weight, blocks.{h}.layers.{l}.bias, lm_heads.{h}.weight
            if parts.count == 3, parts[0] == "lm_heads", parts[2] == "weight", let h = Self.number(parts[1]) {
                return .lmHead(head: h, position: nil)
            }
            guard parts.count == 5, parts[0] == "blocks", parts[2] == "layers",
                  let h = Self.number(parts[1]), let l = Self.number(parts[3]) else { return nil }
            return Self.blockTensor(parts[4], h, l)
        case .medusaTP:
            // medusa.{h}.{l}.weight, medusa.{h}.{l}.bias, medusa.{h}.lm_head.weight
            guard parts.count == 4, parts[0] == "medusa", let h = Self.number(parts[1]) else { return nil }
            if parts[2] == "lm_head" { return parts[3] == "weight" ? .lmHead(head: h, position: nil) : nil }
            guard let l = Self.number(parts[2]) else { return nil }
            return Self.blockTensor(parts[3], h, l)
        }
    }

    private static func blockTensor(_ kind: String, _ h: Int, _ l: Int) -> HeadTensor? {
        switch kind {
        case "weight": .weight(head: h, block: l)
        case "bias": .bias(head: h, block: l)
        default: nil
        }
    }

    /// A head or block number as names write it: decimal digits, no sign or leading zero, at most
    /// six digits (so that a stray name cannot ask for billions of heads).
    private static func number(_ text: String) -> Int? {
        guard !text.isEmpty, text.count <= 6, text.allSatisfy({ $0.isASCII && $0.isNumber }),
              text == "0" || !text.hasPrefix("0") else { return nil }
        return Int(text)
    }
}
