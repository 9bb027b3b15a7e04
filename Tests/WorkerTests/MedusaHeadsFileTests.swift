import Foundation
import Testing
@testable import Medusa
@testable import Worker

/// Medusa heads read from FasterDecoding's, vLLM's and this project's files (every value read
/// back), folders with config.json, and a `WeightFileError` naming the file and the problem for
/// every malformed input.
@Suite struct MedusaHeadsFileTests {
    static let heads = 3, blocks = 2, hidden = 32, vocabulary = 64

    /// Random heads of `heads` x `blocks` blocks (row-major weight, bias) and their LM heads.
    struct Sample {
        var blocks: [[(weight: [Float], bias: [Float])]]
        var lmHeads: [[Float]]

        init(seed: UInt64) {
            var random = SeededGenerator(seed: seed)
            func values(_ count: Int) -> [Float] { (0..<count).map { _ in random.nextUnit() * 2 - 1 } }
            let (k, l, h, v) = (MedusaHeadsFileTests.heads, MedusaHeadsFileTests.blocks, MedusaHeadsFileTests.hidden,
                                MedusaHeadsFileTests.vocabulary)
            blocks = (0..<k).map { _ in (0..<l).map { _ in (values(h * h), values(h)) } }
            lmHeads = (0..<k).map { _ in values(v * h) }
        }
    }

    /// Tensor names of the layouts written by hand (this project's files come from `write`).
    enum Names {
        case fasterDecoding, vllm

        func weight(_ h: Int, _ l: Int) -> String {
            self == .fasterDecoding ? "\(h).\(l).linear.weight" : "blocks.\(h).layers.\(l).weight"
        }

        func bias(_ h: Int, _ l: Int) -> String {
            self == .fasterDecoding ? "\(h).\(l).linear.bias" : "blocks.\(h).layers.\(l).bias"
        }

        func lmHead(_ h: Int) -> String {
            self == .fasterDecoding ? "\(h).\(MedusaHeadsFileTests.blocks).weight" : "lm_heads.\(h).weight"
        }
    }

    /// `sample` under `names`, stored as `type`; without LM heads when `lmHeads` is false.
    static func writer(_ sample: Sample, _ names: Names, type: TensorType = .f32, lmHeads: Bool = true) -> SafetensorsWriter {
        var w = SafetensorsWriter()
        w.metadata = ["format": "pt"]
        for (h, head) in sample.blocks.enumerated() {
            for (l, block) in head.enumerated() {
                w.add(names.weight(h, l), shape: [hidden, hidden], values: block.weight, type: type)
                w.add(names.bias(h, l), shape: [hidden], values: block.bias, type: type)
            }
            if lmHeads { w.add(names.lmHead(h), shape: [vocabulary, hidden], values: sample.lmHeads[h], type: type) }
        }
        return w
    }

    /// `writer` without the tensor `name`.
    static func removing(_ name: String, from writer: SafetensorsWriter) -> SafetensorsWriter {
        var w = writer
        w.tensors.removeAll { $0.name == name }
        return w
    }

    /// The values `type` stores for `values`.
    static func stored(_ values: [Float], _ type: TensorType) -> [Float] {
        Quantizer.quantize(values, to: type).withUnsafeBytes { ReferenceKernels.dequantize(type, $0, count: values.count) }
    }

    /// All of `m`'s values, row by row.
    static func values(_ m: WeightMatrix) -> [Float] {
        var out = [Float](repeating: 0, count: m.rows * m.columns)
        out.withUnsafeMutableBufferPointer { buffer in
            for r in 0..<m.rows { m.dequantizeRow(r, into: buffer.baseAddress! + r * m.columns) }
        }
        return out
    }

    /// Checks that `weights` hold `sample` as stored in `type` (with its LM heads when `lmHeads`).
    static func check(_ weights: MedusaHeadWeights, _ sample: Sample, type: TensorType, lmHeads: Bool,
                      sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(weights.heads.count == heads, sourceLocation: sourceLocation)
        #expect(weights.hiddenSize == hidden, sourceLocation: sourceLocation)
        #expect(weights.sharesLMHead == !lmHeads, sourceLocation: sourceLocation)
        for (h, head) in weights.heads.enumerated() where h < heads {
            #expect(head.blocks.count == blocks, sourceLocation: sourceLocation)
            for (l, block) in head.blocks.enumerated() where l < blocks {
                #expect(block.weight.type == type && block.weight.rows == hidden && block.weight.columns == hidden,
                        sourceLocation: sourceLocation)
                #expect(values(block.weight) == stored(sample.blocks[h][l].weight, type), "head \(h) block \(l) weight",
                        sourceLocation: sourceLocation)
                #expect(block.bias == stored(sample.blocks[h][l].bias, type), "head \(h) block \(l) bias",
                        sourceLocation: sourceLocation)
            }
            if lmHeads, let lmHead = head.lmHead {
                #expect(lmHead.type == type && lmHead.rows == vocabulary && lmHead.columns == hidden,
                        sourceLocation: sourceLocation)
                #expect(values(lmHead) == stored(sample.lmHeads[h], type), "head \(h) LM head", sourceLocation: sourceLocation)
            }
        }
    }

    /// Checks that `body` throws a `WeightFileError` for `path` (with `problem`, when given) whose
    /// message names the file and contains each of `naming`.
    func expect(
        _ problem: WeightFileError.Problem? = nil, path: String, naming names: [String] = [],
        sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void
    ) {
        do {
            try body()
            Issue.record("no error; expected \(problem.map { "\($0)" } ?? "one naming \(names)")", sourceLocation: sourceLocation)
        } catch let error as WeightFileError {
            if let problem { #expect(error.problem == problem, sourceLocation: sourceLocation) }
            #expect(error.path == path, sourceLocation: sourceLocation)
            #expect(error.description.hasPrefix(path + ": "), sourceLocation: sourceLocation)
            for name in names {
                #expect(error.description.contains(name), "\(error.description) should name \(name)", sourceLocation: sourceLocation)
            }
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }

    // MARK: Layouts

    @Test func fasterDecodingWithOwnLMHeads() throws {
        let dir = GGUFTestDirectory()
        let sample = Sample(seed: 1)
        let path = dir.write(Self.writer(sample, .fasterDecoding).serialized(), to: "medusa_lm_head.safetensors")
        let weights = try MedusaHeadWeights(path: path)
        #expect(weights.layout == .fasterDecoding)
        #expect(weights.vocabularySize == Self.vocabulary)
        #expect(weights.baseModel == nil)
        #expect(weights.path == path)
        Self.check(weights, sample, type: .f32, lmHeads: true)
        try weights.validate(hiddenSize: Self.hidden, vocabularySize: Self.vocabulary)
    }

    @Test(arguments: [TensorType.f32, .f16, .bf16])
    func fasterDecodingSharedLMHead(type: TensorType) throws {
        let dir = GGUFTestDirectory()
        let sample = Sample(seed: 2)
        let path = dir.write(Self.writer(sample, .fasterDecoding, type: type, lmHeads: false).serialized(), to: "heads.safetensors")
        let weights = try MedusaHeadWeights(path: path)
        #expect(weights.layout == .fasterDecodingSharedLMHead)
        #expect(weights.vocabularySize == nil)
        Self.check(weights, sample, type: type, lmHeads: false)
        #expect(weights.heads.allSatisfy { $0.lmHead == nil })
        // Without a vocabulary of their own, the heads fit any vocabulary.
        try weights.validate(hiddenSize: Self.hidden, vocabularySize: 49152)
    }

    @Test(arguments: [TensorType.f32, .bf16])
    func vllm(type: TensorType) throws {
        let dir = GGUFTestDirectory()
        let sample = Sample(seed: 3)
        let path = dir.write(Self.writer(sample, .vllm, type: type).serialized(), to: "vllm.safetensors")
        let weights = try MedusaHeadWeights(path: path)
        #expect(weights.layout == .vllm)
        #expect(weights.vocabularySize == Self.vocabulary)
        Self.check(weights, sample, type: type, lmHeads: true)
    }

    @Test(arguments: [TensorType.f32, .f16, .bf16])
    func ownFormatRoundTrips(type: TensorType) throws {
        let dir = GGUFTestDirectory()
        let sample = Sample(seed: 4)
        let path = dir.path("medusa_heads.safetensors")
        try MedusaHeadWeights.write(
            blocks: sample.blocks, lmHeads: sample.lmHeads, hiddenSize: Self.hidden, vocabularySize: Self.vocabulary,
            baseModel: "SmolLM2-135M-Instruct.Q4_1.gguf sha256:0123abcd", to: path, dtype: type)
        let file = try SafetensorsFile(path: path)
        #expect(file.metadata == [
            "format": "medusa-tp-heads", "version": "1", "hidden_size": "32", "vocab_size": "64", "num_heads": "3",
            "num_layers": "2", "base_model": "SmolLM2-135M-Instruct.Q4_1.gguf sha256:0123abcd",
        ])
        #expect(file.tensorInfo("medusa.2.1.weight")?.shape == [32, 32])
        #expect(file.tensorInfo("medusa.0.lm_head.weight")?.shape == [64, 32])

        let weights = try MedusaHeadWeights(path: path)
        #expect(weights.layout == .medusaTP)
        #expect(weights.vocabularySize == Self.vocabulary)
        #expect(weights.baseModel == "SmolLM2-135M-Instruct.Q4_1.gguf sha256:0123abcd")
        Self.check(weights, sample, type: type, lmHeads: true)
    }

    @Test func ownFormatWithSharedLMHeadRecordsTheVocabulary() throws {
        let dir = GGUFTestDirectory()
        let sample = Sample(seed: 5)
        let path = dir.path("shared.safetensors")
        try MedusaHeadWeights.write(blocks: sample.blocks, lmHeads: nil, hiddenSize: Self.hidden,
                                    vocabularySize: 49152, baseModel: "", to: path, dtype: .f16)
        let weights = try MedusaHeadWeights(path: path)
        #expect(weights.layout == .medusaTP)
        #expect(weights.vocabularySize == 49152)
        #expect(weights.baseModel == nil)
        Self.check(weights, sample, type: .f16, lmHeads: false)
        try weights.validate(hiddenSize: Self.hidden, vocabularySize: 49152)
        expect(.headsModelMismatch(dimension: "vocabulary size", heads: 49152, model: 64), path: path,
               naming: ["made for vocabulary size 49152 but the model has 64"]) {
            try weights.validate(hiddenSize: Self.hidden, vocabularySize: 64)
        }
    }

    @Test func candidateTokensRoundTripAndErrors() throws {
        let dir = GGUFTestDirectory()
        let sample = Sample(seed: 6)
        let path = dir.path("candidates.safetensors")
        try MedusaHeadWeights.write(blocks: sample.blocks, lmHeads: nil, hiddenSize: Self.hidden, vocabularySize: 100,
                                    baseModel: "", to: path, candidateTokens: [0, 3, 7, 99])
        #expect(try MedusaHeadWeights(path: path).candidateTokens == [0, 3, 7, 99])
        let plain = dir.path("plain.safetensors")
        try MedusaHeadWeights.write(blocks: sample.blocks, lmHeads: nil, hiddenSize: Self.hidden, vocabularySize: 100,
                                    baseModel: "", to: plain)
        #expect(try MedusaHeadWeights(path: plain).candidateTokens == nil)

        // Writing: ascending, in the vocabulary, shared LM head only.
        for (tokens, lmHeads) in [([3, 3] as [Int32], nil), ([5, 2], nil), ([100], nil), ([1, 2], sample.lmHeads)] {
            expect(path: dir.path("bad.safetensors"), naming: ["candidate tokens"]) {
                try MedusaHeadWeights.write(blocks: sample.blocks, lmHeads: lmHeads, hiddenSize: Self.hidden,
                                            vocabularySize: lmHeads == nil ? 100 : Self.vocabulary, baseModel: "",
                                            to: dir.path("bad.safetensors"), candidateTokens: tokens)
            }
        }
        // Reading a file whose list was damaged.
        let file = try SafetensorsFile(path: path)
        for (i, text) in ["0,3,x", "3,1", "0,,4", "0,100", ""].enumerated() {
            var w = SafetensorsWriter()
            w.metadata = file.metadata
            w.metadata["candidate_tokens"] = text
            for info in file.tensors { w.add(info.name, dtype: info.dtype, shape: info.shape, data: Array(file.data(of: info))) }
            let damaged = dir.path("damaged\(i).safetensors")
            try w.write(to: damaged)
            expect(path: damaged, naming: ["candidate_tokens"]) { _ = try MedusaHeadWeights(path: damaged) }
        }
    }

    // MARK: Folders

    @Test func fasterDecodingFolderWithConfig() throws {
        let dir = GGUFTestDirectory()
        let sample = Sample(seed: 6)
        let path = dir.write(Self.writer(sample, .fasterDecoding).serialized(), to: "medusa_lm_head.safetensors")
        dir.write(Array(#"{"base_model_name_or_path": "lmsys/vicuna-7b-v1.3", "medusa_num_heads": 3, "medusa_num_layers": 2, "hidden_size": 32, "vocab_size": 64, "num_hidden_layers": 32}"#.utf8), to: "config.json")
        let weights = try MedusaHeadWeights(path: dir.url.path)
        #expect(weights.layout == .fasterDecoding)
        #expect(weights.baseModel == "lmsys/vicuna-7b-v1.3")
        #expect(weights.path == path)
        Self.check(weights, sample, type: .f32, lmHeads: true)
    }

    @Test func sharedLMHeadFolderTakesTheVocabularyFromConfig() throws {
        let dir = GGUFTestDirectory()
        let sample = Sample(seed: 7)
        dir.write(Self.writer(sample, .fasterDecoding, lmHeads: false).serialized(), to: "model.safetensors")
        dir.write(Array(#"{"medusa_num_heads": 3, "vocab_size": 32000}"#.utf8), to: "config.json")
        let weights = try MedusaHeadWeights(path: dir.url.path)
        #expect(weights.layout == .fasterDecodingSharedLMHead)
        #expect(weights.vocabularySize == 32000)
        Self.check(weights, sample, type: .f32, lmHeads: false)
    }

    @Test func vllmFolderWithConfig() throws {
        let dir = GGUFTestDirectory()
        let sample = Sample(seed: 8)
        dir.write(Self.writer(sample, .vllm, type: .f16).serialized(), to: "model.safetensors")
        dir.write(Array(#"{"model_type": "medusa", "num_heads": 3, "num_hidden_layers": 2, "hidden_size": 32, "vocab_size": 64}"#.utf8), to: "config.json")
        let weights = try MedusaHeadWeights(path: dir.url.path)
        #expect(weights.layout == .vllm)
        Self.check(weights, sample, type: .f16, lmHeads: true)
    }

    @Test func whichFileOfAFolderIsRead() throws {
        let dir = GGUFTestDirectory()
        let sample = Sample(seed: 9)
        // The only safetensors file, whatever its name.
        let only = dir.write(Self.writer(sample, .vllm).serialized(), to: "heads-v2.safetensors")
        #expect(try MedusaHeadWeights(path: dir.url.path).path == only)
        // Several, none with a known name: refused.
        dir.write(Self.writer(sample, .vllm).serialized(), to: "other.safetensors")
        expect(path: dir.url.path, naming: ["heads-v2.safetensors, other.safetensors", "give the path"]) {
            _ = try MedusaHeadWeights(path: dir.url.path)
        }
        // Known names, in order; a pickle next to them is not in the way.
        dir.write([0x80, 0x02], to: "medusa_lm_head.pt")
        let model = dir.write(Self.writer(sample, .fasterDecoding).serialized(), to: "model.safetensors")
        #expect(try MedusaHeadWeights(path: dir.url.path).path == model)
        let lmHead = dir.write(Self.writer(sample, .fasterDecoding, lmHeads: false).serialized(), to: "medusa_lm_head.safetensors")
        #expect(try MedusaHeadWeights(path: dir.url.path).path == lmHead)
        let ours = dir.path("medusa_heads.safetensors")
        try MedusaHeadWeights.write(blocks: sample.blocks, lmHeads: nil, hiddenSize: Self.hidden,
                                    vocabularySize: Self.vocabulary, baseModel: "b", to: ours)
        let weights = try MedusaHeadWeights(path: dir.url.path)
        #expect(weights.path == ours && weights.layout == .medusaTP)
    }

    // MARK: Folders without heads

    @Test func pickleOnlyFolder() {
        for name in ["medusa_lm_head.pt", "pytorch_model.bin"] {
            let dir = GGUFTestDirectory()
            dir.write([0x80, 0x02, 0x7D], to: name)
            dir.write(Array(#"{"medusa_num_heads": 3}"#.utf8), to: "config.json")
            expect(path: dir.url.path, naming: [name, "PyTorch pickle", "not read", "safetensors"]) {
                _ = try MedusaHeadWeights(path: dir.url.path)
            }
        }
        let dir = GGUFTestDirectory()
        let pt = dir.write([0x80, 0x02, 0x7D], to: "medusa_lm_head.pt")
        expect(path: pt, naming: ["PyTorch pickle", "medusa_lm_head.safetensors"]) { _ = try MedusaHeadWeights(path: pt) }
    }

    @Test func emptyFolderAndMissingPath() {
        let dir = GGUFTestDirectory()
        dir.write(Array("{}".utf8), to: "config.json")
        expect(path: dir.url.path, naming: ["no heads weights file", "medusa_heads.safetensors", "*.safetensors"]) {
            _ = try MedusaHeadWeights(path: dir.url.path)
        }
        let missing = dir.path("nowhere")
        expect(.cannotOpen(reason: "no such file or folder"), path: missing) { _ = try MedusaHeadWeights(path: missing) }
    }

    // MARK: Malformed heads

    @Test func missingBias() {
        let dir = GGUFTestDirectory()
        let w = Self.removing("1.1.linear.bias", from: Self.writer(Sample(seed: 10), .fasterDecoding))
        let path = dir.write(w.serialized(), to: "heads.safetensors")
        expect(.missingTensor("1.1.linear.bias"), path: path, naming: ["'1.1.linear.bias'"]) {
            _ = try MedusaHeadWeights(path: path)
        }
        // A head with fewer blocks than the others.
        let short = Self.removing("blocks.2.layers.1.bias", from: Self.removing(
            "blocks.2.layers.1.weight", from: Self.writer(Sample(seed: 10), .vllm)))
        let shortPath = dir.write(short.serialized(), to: "short.safetensors")
        expect(.missingTensor("blocks.2.layers.1.weight"), path: shortPath) { _ = try MedusaHeadWeights(path: shortPath) }
    }

    @Test func nonSquareWeight() {
        let dir = GGUFTestDirectory()
        var first = Self.removing("0.0.linear.weight", from: Self.writer(Sample(seed: 11), .fasterDecoding))
        first.add("0.0.linear.weight", shape: [32, 16], values: [Float](repeating: 0, count: 512))
        let path = dir.write(first.serialized(), to: "first.safetensors")
        expect(.badTensorShape(tensor: "0.0.linear.weight", reason: "a residual block's weight is [hidden, hidden], found [32, 16]"),
               path: path, naming: ["'0.0.linear.weight'", "[32, 16]"]) { _ = try MedusaHeadWeights(path: path) }

        var later = Self.removing("blocks.1.layers.0.weight", from: Self.writer(Sample(seed: 11), .vllm))
        later.add("blocks.1.layers.0.weight", shape: [16, 16], values: [Float](repeating: 0, count: 256))
        let laterPath = dir.write(later.serialized(), to: "later.safetensors")
        expect(.shapeMismatch(tensor: "blocks.1.layers.0.weight", expected: [32, 32], found: [16, 16]), path: laterPath) {
            _ = try MedusaHeadWeights(path: laterPath)
        }

        var bias = Self.removing("0.1.linear.bias", from: Self.writer(Sample(seed: 11), .fasterDecoding))
        bias.add("0.1.linear.bias", shape: [1, 32], values: [Float](repeating: 0, count: 32))
        let biasPath = dir.write(bias.serialized(), to: "bias.safetensors")
        expect(.shapeMismatch(tensor: "0.1.linear.bias", expected: [32], found: [1, 32]), path: biasPath) {
            _ = try MedusaHeadWeights(path: biasPath)
        }

        var lmHead = Self.removing("lm_heads.2.weight", from: Self.writer(Sample(seed: 11), .vllm))
        lmHead.add("lm_heads.2.weight", shape: [63, 32], values: [Float](repeating: 0, count: 63 * 32))
        let lmHeadPath = dir.write(lmHead.serialized(), to: "lm.safetensors")
        expect(.shapeMismatch(tensor: "lm_heads.2.weight", expected: [64, 32], found: [63, 32]), path: lmHeadPath) {
            _ = try MedusaHeadWeights(path: lmHeadPath)
        }
    }

    @Test func headsWithAGap() {
        let dir = GGUFTestDirectory()
        var w = Self.writer(Sample(seed: 12), .fasterDecoding)
        w.tensors.removeAll { $0.name.hasPrefix("1.") }
        let path = dir.write(w.serialized(), to: "gap.safetensors")
        expect(path: path, naming: ["head 1 is missing", "found heads 0, 2"]) { _ = try MedusaHeadWeights(path: path) }
    }

    @Test func lmHeadsForSomeHeadsOnly() throws {
        let dir = GGUFTestDirectory()
        let fd = Self.removing("1.2.weight", from: Self.writer(Sample(seed: 13), .fasterDecoding))
        let fdPath = dir.write(fd.serialized(), to: "fd.safetensors")
        expect(path: fdPath, naming: ["every head has its own LM head or none", "head 0 has '0.2.weight'", "head 1 has no '1.2.weight'"]) {
            _ = try MedusaHeadWeights(path: fdPath)
        }

        let sample = Sample(seed: 13)
        let oursPath = dir.path("ours.safetensors")
        try MedusaHeadWeights.write(blocks: sample.blocks, lmHeads: sample.lmHeads, hiddenSize: Self.hidden,
                                    vocabularySize: Self.vocabulary, baseModel: "b", to: oursPath)
        var ours = SafetensorsWriter()
        let file = try SafetensorsFile(path: oursPath)
        ours.metadata = file.metadata
        for info in file.tensors where info.name != "medusa.0.lm_head.weight" {
            ours.add(info.name, dtype: info.dtype, shape: info.shape, data: Array(file.data(of: info)))
        }
        let mixedPath = dir.path("mixed.safetensors")
        try ours.write(to: mixedPath)
        expect(path: mixedPath, naming: ["head 1 has 'medusa.1.lm_head.weight'", "head 0 has no 'medusa.0.lm_head.weight'"]) {
            _ = try MedusaHeadWeights(path: mixedPath)
        }

        // vLLM's heads always have LM heads.
        let vllm = Self.writer(Sample(seed: 13), .vllm, lmHeads: false)
        let vllmPath = dir.write(vllm.serialized(), to: "vllm.safetensors")
        expect(.missingTensor("lm_heads.0.weight"), path: vllmPath) { _ = try MedusaHeadWeights(path: vllmPath) }
    }

    @Test func lmHeadOutOfPlace() {
        let dir = GGUFTestDirectory()
        var w = Self.removing("2.2.weight", from: Self.writer(Sample(seed: 14), .fasterDecoding))
        w.add("2.1.weight", shape: [64, 32], values: Sample(seed: 14).lmHeads[2])
        let path = dir.write(w.serialized(), to: "heads.safetensors")
        expect(path: path, naming: ["unexpected tensor '2.1.weight'", "'2.2.weight'"]) { _ = try MedusaHeadWeights(path: path) }
    }

    @Test func unknownTensors() {
        let dir = GGUFTestDirectory()
        var w = Self.writer(Sample(seed: 15), .vllm)
        w.add("token_map", shape: [4], values: [0, 1, 2, 3])
        let path = dir.write(w.serialized(), to: "extra.safetensors")
        expect(path: path, naming: ["unexpected tensor 'token_map'", "vLLM", "'blocks.{h}.layers.{l}.weight'"]) {
            _ = try MedusaHeadWeights(path: path)
        }
        var fd = Self.writer(Sample(seed: 15), .fasterDecoding)
        fd.add("0.0.linear.scale", shape: [1], values: [1])
        let fdPath = dir.write(fd.serialized(), to: "fd.safetensors")
        expect(path: fdPath, naming: ["unexpected tensor '0.0.linear.scale'"]) { _ = try MedusaHeadWeights(path: fdPath) }

        var llama = SafetensorsWriter()
        for name in ["model.norm.weight", "model.embed_tokens.weight", "lm_head.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.0.input_layernorm.weight"] {
            llama.add(name, shape: [1], values: [1])
        }
        let llamaPath = dir.write(llama.serialized(), to: "llama.safetensors")
        expect(path: llamaPath, naming: ["no tensor is named as Medusa heads are", "'lm_head.weight'", "and 1 more",
                                         "'{h}.{l}.linear.weight'", "'lm_heads.{h}.weight'", "'medusa.{h}.lm_head.weight'"]) {
            _ = try MedusaHeadWeights(path: llamaPath)
        }
        let emptyPath = dir.write(SafetensorsWriter().serialized(), to: "empty.safetensors")
        expect(path: emptyPath, naming: ["holds no tensors"]) { _ = try MedusaHeadWeights(path: emptyPath) }
    }

    @Test func integerTensor() {
        let dir = GGUFTestDirectory()
        var w = Self.removing("0.1.linear.bias", from: Self.writer(Sample(seed: 16), .fasterDecoding))
        w.add("0.1.linear.bias", dtype: "I64", shape: [32], data: [UInt8](repeating: 0, count: 256))
        let path = dir.write(w.serialized(), to: "heads.safetensors")
        expect(.unsupportedDType(tensor: "0.1.linear.bias", dtype: "I64"), path: path, naming: ["'0.1.linear.bias'", "I64"]) {
            _ = try MedusaHeadWeights(path: path)
        }
    }

    // MARK: Recorded sizes

    @Test func configDisagreeing() {
        let cases: [(Names, String, WeightFileError.Problem)] = [
            (.fasterDecoding, #"{"medusa_num_heads": 5, "medusa_num_layers": 2}"#,
             .badValue(key: "medusa_num_heads", reason: "says 5, but medusa_lm_head.safetensors holds 3 heads")),
            (.fasterDecoding, #"{"medusa_num_heads": 3, "medusa_num_layers": 1}"#,
             .badValue(key: "medusa_num_layers", reason: "says 1, but medusa_lm_head.safetensors holds 2 residual blocks per head")),
            (.fasterDecoding, #"{"hidden_size": 4096}"#,
             .badValue(key: "hidden_size", reason: "says 4096, but medusa_lm_head.safetensors holds heads of hidden size 32")),
            (.vllm, #"{"num_heads": 3, "num_hidden_layers": 2, "vocab_size": 32000}"#,
             .badValue(key: "vocab_size", reason: "says 32000, but medusa_lm_head.safetensors holds LM heads of 64 rows")),
            (.vllm, #"{"num_heads": 4}"#,
             .badValue(key: "num_heads", reason: "says 4, but medusa_lm_head.safetensors holds 3 heads")),
            (.vllm, #"{"num_heads": "3"}"#, .wrongKeyType(key: "num_heads", expected: "an integer", found: "a string")),
        ]
        for (names, config, problem) in cases {
            let dir = GGUFTestDirectory()
            dir.write(Self.writer(Sample(seed: 17), names).serialized(), to: "medusa_lm_head.safetensors")
            let configPath = dir.write(Array(config.utf8), to: "config.json")
            expect(problem, path: configPath, naming: ["config.json: key"]) { _ = try MedusaHeadWeights(path: dir.url.path) }
        }
        let dir = GGUFTestDirectory()
        dir.write(Self.writer(Sample(seed: 17), .fasterDecoding, lmHeads: false).serialized(), to: "medusa_lm_head.safetensors")
        let configPath = dir.write(Array(#"{"vocab_size": 0}"#.utf8), to: "config.json")
        expect(.badValue(key: "vocab_size", reason: "must be positive, got 0"), path: configPath) {
            _ = try MedusaHeadWeights(path: dir.url.path)
        }
    }

    @Test func metadataDisagreeing() throws {
        let dir = GGUFTestDirectory()
        let sample = Sample(seed: 18)
        let good = dir.path("good.safetensors")
        try MedusaHeadWeights.write(blocks: sample.blocks, lmHeads: sample.lmHeads, hiddenSize: Self.hidden,
                                    vocabularySize: Self.vocabulary, baseModel: "b", to: good)
        let file = try SafetensorsFile(path: good)
        // The good file with `change` applied to its metadata.
        func variant(_ name: String, _ change: (inout [String: String]) -> Void) throws -> String {
            var w = SafetensorsWriter()
            w.metadata = file.metadata
            change(&w.metadata)
            for info in file.tensors { w.add(info.name, dtype: info.dtype, shape: info.shape, data: Array(file.data(of: info))) }
            let path = dir.path(name)
            try w.write(to: path)
            return path
        }
        let cases: [(String, (inout [String: String]) -> Void, WeightFileError.Problem)] = [
            ("heads", { $0["num_heads"] = "4" }, .badValue(key: "num_heads", reason: "says 4, but the file holds 3 heads")),
            ("layers", { $0["num_layers"] = "1" },
             .badValue(key: "num_layers", reason: "says 1, but the file holds 2 residual blocks per head")),
            ("hidden", { $0["hidden_size"] = "576" },
             .badValue(key: "hidden_size", reason: "says 576, but the file holds heads of hidden size 32")),
            ("vocab", { $0["vocab_size"] = "49152" },
             .badValue(key: "vocab_size", reason: "says 49152, but the file holds LM heads of 64 rows")),
            ("text", { $0["hidden_size"] = "32.0" }, .badValue(key: "hidden_size", reason: "'32.0' is not a positive integer")),
            ("nolayers", { $0["num_layers"] = nil }, .missingKey("num_layers")),
            ("version", { $0["version"] = "2" }, .badValue(key: "version", reason: "'2' is not supported (supported: 1)")),
            ("noformat", { $0 = [:] }, .missingKey("format")),
            ("pt", { $0["format"] = "pt" }, .badValue(key: "format", reason: "'pt', expected 'medusa-tp-heads' for tensors named medusa.*")),
        ]
        for (name, change, problem) in cases {
            let path = try variant(name + ".safetensors", change)
            expect(problem, path: path, naming: ["metadata key"]) { _ = try MedusaHeadWeights(path: path) }
        }
    }

    @Test func validateAgainstTheModel() throws {
        let dir = GGUFTestDirectory()
        let path = dir.write(Self.writer(Sample(seed: 19), .vllm).serialized(), to: "heads.safetensors")
        let weights = try MedusaHeadWeights(path: path)
        try weights.validate(hiddenSize: 32, vocabularySize: 64)
        expect(.headsModelMismatch(dimension: "hidden size", heads: 32, model: 576), path: path,
               naming: ["heads were made for hidden size 32 but the model has 576"]) {
            try weights.validate(hiddenSize: 576, vocabularySize: 64)
        }
        expect(.headsModelMismatch(dimension: "vocabulary size", heads: 64, model: 49152), path: path,
               naming: ["vocabulary size 64 but the model has 49152"]) {
            try weights.validate(hiddenSize: 32, vocabularySize: 49152)
        }
    }

    @Test func writerRefusesArgumentsThatDoNotFit() {
        let dir = GGUFTestDirectory()
        let sample = Sample(seed: 20)
        let path = dir.path("out.safetensors")
        func write(_ blocks: [[(weight: [Float], bias: [Float])]], lmHeads: [[Float]]? = nil, hidden: Int = Self.hidden,
                   dtype: TensorType = .f32) throws {
            try MedusaHeadWeights.write(blocks: blocks, lmHeads: lmHeads, hiddenSize: hidden, vocabularySize: Self.vocabulary,
                                        baseModel: "", to: path, dtype: dtype)
        }
        expect(path: path, naming: ["cannot write", "no heads"]) { try write([]) }
        expect(path: path, naming: ["head 0 has no residual blocks"]) { try write([[]]) }
        expect(path: path, naming: ["same number of residual blocks", "head 0 has 2 and head 1 has 1"]) {
            try write([sample.blocks[0], [sample.blocks[1][0]]])
        }
        expect(path: path, naming: ["head 0 block 0", "expected 16 x 16 and 16"]) { try write(sample.blocks, hidden: 16) }
        expect(path: path, naming: ["2 LM heads for 3 heads"]) { try write(sample.blocks, lmHeads: Array(sample.lmHeads.prefix(2))) }
        expect(path: path, naming: ["LM head 1 has 3 values"]) {
            try write(sample.blocks, lmHeads: [sample.lmHeads[0], [1, 2, 3], sample.lmHeads[2]])
        }
        expect(path: path, naming: ["not Q8_0"]) { try write(sample.blocks, dtype: .q8_0) }
        #expect(!FileManager.default.fileExists(atPath: path))
    }
}
