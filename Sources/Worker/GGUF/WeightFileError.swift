/// A problem with a model or weight file, naming the file and what was expected.
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
    }

    public var path: String
    public var problem: Problem

    public init(path: String, problem: Problem) {
        self.path = path
        self.problem = problem
    }

    public var description: String {
        let what: String
        switch problem {
        case .cannotOpen(let reason): what = "cannot open: \(reason)"
        case .badMagic(let found): what = "not a GGUF file (expected magic \"GGUF\", found \(found))"
        case .unsupportedVersion(let v): what = "unsupported GGUF version \(v) (supported: 2, 3)"
        case .truncated(let item, let offset, let needed, let available):
            what = "truncated: \(item) at byte \(offset) needs \(needed) bytes but only \(available) remain"
        case .invalidValueType(let key, let type): what = "metadata key '\(key)' has unknown value type \(type)"
        case .invalidString(let item): what = "\(item) is not valid UTF-8"
        case .duplicateKey(let key): what = "metadata key '\(key)' appears twice"
        case .duplicateTensor(let name): what = "tensor '\(name)' appears twice"
        case .badAlignment(let a): what = "general.alignment is \(a), expected a power of two"
        case .unsupportedTensorType(let tensor, let type):
            what = "tensor '\(tensor)' has type \(type), which is not supported (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)"
        case .badTensorShape(let tensor, let reason): what = "tensor '\(tensor)' has a bad shape: \(reason)"
        case .tensorOutOfBounds(let tensor, let offset, let size, let fileSize):
            what = "tensor '\(tensor)' data (\(size) bytes at byte \(offset)) runs past the end of the file (\(fileSize) bytes)"
        case .misalignedTensor(let tensor, let offset, let alignment):
            what = "tensor '\(tensor)' data offset \(offset) is not a multiple of the alignment \(alignment)"
        case .missingKey(let key): what = "missing required metadata key '\(key)'"
        case .wrongKeyType(let key, let expected, let found): what = "metadata key '\(key)' should be \(expected), found \(found)"
        case .badValue(let key, let reason): what = "metadata key '\(key)': \(reason)"
        case .missingTensor(let name): what = "missing required tensor '\(name)'"
        case .shapeMismatch(let tensor, let expected, let found):
            what = "tensor '\(tensor)' has shape \(found), expected \(expected)"
        case .unsupportedArchitecture(let arch): what = "unsupported architecture '\(arch)' (supported: llama)"
        }
        return "\(path): \(what)"
    }
}
