import Foundation

/// The tensors of a Hugging Face checkpoint folder: one `model.safetensors`, or the shards that
/// `model.safetensors.index.json` lists in its `weight_map` (tensor name -> shard file name).
/// Every shard is mapped when the checkpoint opens; pages are read only when touched.
public final class SafetensorsCheckpoint: @unchecked Sendable {
    // Immutable after init.
    public let directory: String
    /// The index file, or the single safetensors file: what errors about a missing tensor name.
    public let path: String
    /// Open shards by file name.
    public let shards: [String: SafetensorsFile]
    private let shardOfTensor: [String: String]

    public static let singleFileName = "model.safetensors"
    public static let indexFileName = "model.safetensors.index.json"

    public init(directory: String) throws(WeightFileError) {
        self.directory = directory
        let index = (directory as NSString).appendingPathComponent(Self.indexFileName)
        let single = (directory as NSString).appendingPathComponent(Self.singleFileName)
        if FileManager.default.fileExists(atPath: index) {
            path = index
            let root = try JSONObjectReader(JSONValue.read(path: index, what: "the shard index"), path: index, what: "the shard index")
            let map = try root.object("weight_map")
            var shardOfTensor: [String: String] = [:]
            var shardNames = Set<String>()
            for tensor in map.object.keys.sorted() {
                let value = map.object[tensor]!
                guard let shard = value.stringValue else {
                    throw WeightFileError(path: index, problem: .wrongKeyType(
                        key: "weight_map.\(tensor)", expected: "a string", found: value.typeName))
                }
                // Shards sit next to the index: a name with a path in it is refused, not followed.
                guard !shard.isEmpty, !shard.contains("/"), shard != ".", shard != ".." else {
                    throw WeightFileError(path: index, problem: .badValue(
                        key: "weight_map.\(tensor)", reason: "'\(shard)' is not a file name in the checkpoint folder"))
                }
                shardOfTensor[tensor] = shard
                shardNames.insert(shard)
            }
            var shards: [String: SafetensorsFile] = [:]
            for name in shardNames.sorted() {
                let shardPath = (directory as NSString).appendingPathComponent(name)
                guard FileManager.default.fileExists(atPath: shardPath) else {
                    let holding = shardOfTensor.filter { $0.value == name }.keys.sorted()
                    throw WeightFileError(path: index, problem: .missingShard(
                        shard: name, reason: "no such file (it holds '\(holding[0])'"
                            + (holding.count > 1 ? " and \(holding.count - 1) more tensors)" : ")")))
                }
                shards[name] = try SafetensorsFile(path: shardPath)
            }
            for tensor in shardOfTensor.keys.sorted() where shards[shardOfTensor[tensor]!]!.tensorInfo(tensor) == nil {
                let shard = shardOfTensor[tensor]!
                throw WeightFileError(path: index, problem: .tensorNotInShard(tensor: tensor, shard: shard))
            }
            self.shards = shards
            self.shardOfTensor = shardOfTensor
        } else if FileManager.default.fileExists(atPath: single) {
            path = single
            let file = try SafetensorsFile(path: single)
            shards = [Self.singleFileName: file]
            shardOfTensor = Dictionary(uniqueKeysWithValues: file.tensors.map { ($0.name, Self.singleFileName) })
        } else {
            throw WeightFileError(path: directory, problem: .notACheckpoint(
                reason: "neither \(Self.singleFileName) nor \(Self.indexFileName) is there"))
        }
    }

    /// Names of all tensors, sorted.
    public var tensorNames: [String] { shardOfTensor.keys.sorted() }

    /// The file holding `name` and its entry there, or nil.
    public func tensor(_ name: String) -> (file: SafetensorsFile, info: SafetensorsTensorInfo)? {
        guard let shard = shardOfTensor[name], let file = shards[shard], let info = file.tensorInfo(name) else { return nil }
        return (file, info)
    }

    /// A zero-copy matrix view of tensor `name`, which must have exactly `shape` and a supported
    /// dtype (see `SafetensorsFile.matrix`). A missing tensor is an error naming it.
    public func matrix(_ name: String, shape: [Int]) throws(WeightFileError) -> WeightMatrix {
        guard let (file, _) = tensor(name) else { throw WeightFileError(path: path, problem: .missingTensor(name)) }
        return try file.matrix(name, shape: shape)
    }
}
