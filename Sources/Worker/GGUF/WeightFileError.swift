/// A problem with a model or weight file (GGUF, safetensors, a Hugging Face checkpoint's JSON
/// files, or Medusa heads), naming the file and what was expected. The description is one bounded
/// line: names read from the file are `quoted`, free text passes through `oneLine`.
public struct WeightFileError: Error, CustomStringConvertible, Sendable, Equatable {
    public enum Problem: Sendable, Equatable {
        case cannotOpen(reason: String)
        case badMagic(found: String)
        case unsupportedVersion(Int)
        case truncated(what: String, offset: Int, needed: Int, available: Int)
        case invalidValueType(key: String, type: UInt32)
        case invalidString(what: String)
        case duplicateKey(String)
        case duplicateTensor(String)
        case badAlignment(Int)
        case unsupportedTensorType(tensor: String, type: String)
        case badTensorShape(tensor: String, reason: String)
        case tensorOutOfBounds(tensor: String, offset: Int, size: Int, fileSize: Int)
        case misalignedTensor(tensor: String, offset: Int, alignment: Int)
        case missingKey(String)
        case wrongKeyType(key: String, expected: String, found: String)
        case badValue(key: String, reason: String)
        case missingTensor(String)
        case shapeMismatch(tensor: String, expected: [Int], found: [Int])
        case unsupportedArchitecture(String)
        // Safetensors files and Hugging Face checkpoint folders.
        case invalidJSON(what: String, reason: String)
        case badTensorHeader(tensor: String, reason: String)
        case unsupportedDType(tensor: String, dtype: String)
        case tensorSizeMismatch(tensor: String, shape: [Int], dtype: String, expected: Int, found: Int)
        case overlappingTensors(String, String)
        case missingShard(shard: String, reason: String)
        case tensorNotInShard(tensor: String, shard: String)
        case notACheckpoint(reason: String)
        // Medusa heads files and folders.
        case badHeads(reason: String)
        /// The heads' hidden size or vocabulary (`dimension`) is not the model's.
        case headsModelMismatch(dimension: String, heads: Int, model: Int)
    }

    public var path: String
    public var problem: Problem

    public init(path: String, problem: Problem) {
        self.path = path
        self.problem = problem
    }

    public var description: String {
        // GGUF keys are metadata; a JSON file's (config.json, an index) are just keys.
        let key = path.hasSuffix(".json") ? "key" : "metadata key"
        let what: String
        switch problem {
        case .cannotOpen(let reason): what = "cannot open: \(reason.oneLine())"
        case .badMagic(let found): what = "not a GGUF file (expected magic \"GGUF\", found \(found.oneLine(limit: 80)))"
        case .unsupportedVersion(let v): what = "unsupported GGUF version \(v) (supported: 2, 3)"
        case .truncated(let item, let offset, let needed, let available):
            what = "truncated: \(item.oneLine()) at byte \(offset) needs \(needed) bytes but only \(available) remain"
        case .invalidValueType(let key, let type): what = "metadata key \(key.quoted()) has unknown value type \(type)"
        case .invalidString(let item): what = "\(item.oneLine()) is not valid UTF-8"
        case .duplicateKey(let key): what = "metadata key \(key.quoted()) appears twice"
        case .duplicateTensor(let name): what = "tensor \(name.quoted()) appears twice"
        case .badAlignment(let a): what = "general.alignment is \(a), expected a power of two"
        case .unsupportedTensorType(let tensor, let type):
            what = "tensor \(tensor.quoted()) has type \(type.oneLine(limit: 80)), which is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)"
        case .badTensorShape(let tensor, let reason): what = "tensor \(tensor.quoted()) has a bad shape: \(reason.oneLine())"
        case .tensorOutOfBounds(let tensor, let offset, let size, let fileSize):
            what = "tensor \(tensor.quoted()) data (\(size) bytes at byte \(offset)) runs past the end of the file (\(fileSize) bytes)"
        case .misalignedTensor(let tensor, let offset, let alignment):
            what = "tensor \(tensor.quoted()) data offset \(offset) is not a multiple of the alignment \(alignment)"
        case .missingKey(let name): what = "missing required \(key) \(name.quoted())"
        case .wrongKeyType(let name, let expected, let found): what = "\(key) \(name.quoted()) should be \(expected), found \(found.oneLine(limit: 120))"
        case .badValue(let name, let reason): what = "\(key) \(name.quoted()): \(reason.oneLine())"
        case .missingTensor(let name): what = "missing required tensor \(name.quoted())"
        case .shapeMismatch(let tensor, let expected, let found):
            what = "tensor \(tensor.quoted()) has shape \(found), expected \(expected)"
        case .unsupportedArchitecture(let arch): what = "unsupported architecture \(arch.quoted()) (supported: llama)"
        case .invalidJSON(let item, let reason): what = "\(item.oneLine()) is not valid JSON: \(reason.oneLine())"
        case .badTensorHeader(let tensor, let reason): what = "tensor \(tensor.quoted()) has a bad header entry: \(reason.oneLine())"
        case .unsupportedDType(let tensor, let dtype):
            what = "tensor \(tensor.quoted()) has dtype \(dtype.quoted()), which is not supported (supported: F32, F16, BF16)"
        case .tensorSizeMismatch(let tensor, let shape, let dtype, let expected, let found):
            what = "tensor \(tensor.quoted()) spans \(found) bytes, but shape \(shape) of \(dtype.oneLine(limit: 80)) needs \(expected)"
        case .overlappingTensors(let first, let second): what = "the data of tensors \(first.quoted()) and \(second.quoted()) overlap"
        case .missingShard(let shard, let reason): what = "shard \(shard.quoted()) cannot be opened: \(reason.oneLine())"
        case .tensorNotInShard(let tensor, let shard):
            what = "weight_map puts tensor \(tensor.quoted()) in shard \(shard.quoted()), which does not hold it"
        case .notACheckpoint(let reason): what = "not a Hugging Face checkpoint folder: \(reason.oneLine())"
        case .badHeads(let reason): what = "Medusa heads: \(reason.oneLine())"
        case .headsModelMismatch(let dimension, let heads, let model):
            what = "the Medusa heads were made for \(dimension.oneLine(limit: 80)) \(heads) but the model has \(model)"
        }
        return "\(path.oneLine()): \(what)"
    }
}
