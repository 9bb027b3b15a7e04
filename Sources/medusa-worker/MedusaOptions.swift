import ArgumentParser
import Coordinator
import Foundation
import Medusa
import Worker

/// `--heads`, `--tree` and the acceptance options: Medusa decoding, on rank 0.
struct MedusaOptions: ParsableArguments {
    @Option(help: ArgumentHelp(
        "Medusa heads: a folder (config.json and weights) or a safetensors file. Turns Medusa decoding on.",
        valueName: "path"))
    var heads: String?

    @Option(help: ArgumentHelp(
        "Candidate tree: a JSON file of medusa_choices, or \(CandidateTree.presetNames.joined(separator: ", ")). Default: the heads folder's tree.json (what tune-tree chose for them) if it has one, else 'default'.",
        valueName: "file|name"))
    var tree: String?

    /// `--tree`, else the heads folder's `tree.json`, else the preset "default".
    var treeArgument: String {
        if let tree { return tree }
        if let heads {
            var isDirectory: ObjCBool = false
            let file = URL(fileURLWithPath: heads).appendingPathComponent("tree.json").path
            if FileManager.default.fileExists(atPath: heads, isDirectory: &isDirectory), isDirectory.boolValue,
               FileManager.default.fileExists(atPath: file) {
                return file
            }
        }
        return "default"
    }

    @Option(help: ArgumentHelp(
        "Acceptance: greedy (output identical to plain greedy decoding), typical, or sample (lossless speculative sampling). Default: greedy at temperature 0, sample above.",
        valueName: "rule"))
    var accept: String?

    @Option(help: "Typical acceptance: the probability above which a candidate is always kept.")
    var typicalEps: Float = 0.09

    @Option(help: "Typical acceptance: the entropy-scaled bar, delta * exp(-H).")
    var typicalDelta: Float = 0.3

    func validate() throws {
        if heads == nil {
            guard tree == nil else { throw ValidationError("--tree needs --heads") }
            guard accept == nil else { throw ValidationError("--accept needs --heads") }
        }
        if let accept, !["greedy", "typical", "sample"].contains(accept) {
            throw ValidationError("--accept must be greedy, typical or sample, got '\(accept)'")
        }
        guard typicalEps > 0, typicalEps <= 1 else { throw ValidationError("--typical-eps must be in (0, 1], got \(typicalEps)") }
        guard typicalDelta > 0, typicalDelta.isFinite else { throw ValidationError("--typical-delta must be > 0, got \(typicalDelta)") }
    }

    /// The acceptance rule at `temperature`.
    func rule(temperature: Float) throws -> AcceptanceRule {
        switch accept ?? (temperature > 0 ? "sample" : "greedy") {
        case "typical": return .typical(epsilon: typicalEps, delta: typicalDelta)
        case "sample":
            guard temperature > 0 else { throw ValidationError("--accept sample needs --temperature above 0") }
            return .sample
        default:
            guard temperature == 0 else {
                throw ValidationError("--accept greedy keeps only argmax tokens; use --temperature 0, or --accept sample to sample")
            }
            return .greedy
        }
    }

    /// Rank 0: the heads (checked against `model`), the tree (checked against the heads) and the
    /// generator; nil without `--heads`.
    func generator(model: LlamaModel, temperature: Float) throws -> MedusaGenerator? {
        guard let heads else { return nil }
        let source = try MedusaHeads(weights: MedusaHeadWeights(path: heads), model: model)
        let tree = try CandidateTree(argument: treeArgument, headCount: source.depth)
        return try MedusaGenerator(model: model, source: source, tree: tree, rule: rule(temperature: temperature))
    }
}
