import ArgumentParser
import Coordinator
import Foundation
import Worker

/// Options every command that loads a model shares.
struct ModelOptions: ParsableArguments {
    @Option(help: "GGUF model file or Hugging Face checkpoint folder (config.json, safetensors, tokenizer.json) (default: $MEDUSA_MODEL, else the cached SmolLM2-135M-Instruct Q4_1 that `make setup` fetches).")
    var model: String?

    @Option(help: "KV cache size in tokens, clamped to the model's context length.")
    var ctx: Int = 2048

    @Option(help: "Worker threads (default: the cores this process may use).")
    var threads: Int?

    @Option(help: ArgumentHelp(matmulInputsHelp, valueName: "fp32|int16|int8"))
    var matmulInputs: MatMulInputs = .int16

    @Option(help: ArgumentHelp(cacheTypeHelp, valueName: "f32|f16"))
    var cacheType: KVCacheType = .f16

    var modelPath: String { model ?? DefaultModel.resolve() }

    var threadCount: Int { threads ?? ProcessInfo.processInfo.activeProcessorCount }

    func validate() throws {
        guard ctx > 0 else { throw ValidationError("--ctx must be positive, got \(ctx)") }
        if let threads, threads < 1 || threads > 512 {
            throw ValidationError("--threads must be between 1 and 512, got \(threads)")
        }
    }
}

extension MatMulInputs: ExpressibleByArgument {
    /// The choice and, for the integer inputs, the kernel variant this CPU runs.
    var described: String { kernels.map { "\(rawValue) (\($0) kernels)" } ?? rawValue }

    /// The integer kernels' variant when int8 or int16 is chosen (reports name it: speed depends on it).
    var kernels: String? { self == .fp32 ? nil : IntegerKernels.variant.description }
}

let matmulInputsHelp = """
    Activations of the quantized weight products (Q4_0 ... Q8_0, Q2_K ... Q6_K): int16 rounds them \
    per 32-value block (scale max|x|/32639) for integer products, faster; int8 rounds them to 8 bits \
    per block as llama.cpp does (scale max|x|/127; cheapest on AVX-512 VNNI CPUs, slow elsewhere); fp32 \
    keeps them exact (matches an fp32 forward).
    """

extension KVCacheType: ExpressibleByArgument {}

let cacheTypeHelp = """
    How the KV cache stores keys and values: f16 rounds them to fp16 as llama.cpp's default cache \
    does (half the memory, and half the bytes attention reads per token at long contexts); f32 \
    keeps them exact (matches an fp32 forward).
    """

/// Writes text to stdout now (no buffering), so generated text streams.
func emit(_ text: String) {
    FileHandle.standardOutput.write(Data(text.utf8))
}

/// Writes progress to stderr now (stdout keeps the result).
func progress(_ text: String) {
    FileHandle.standardError.write(Data(text.utf8))
}

/// Prints one JSON object on its own line.
func emitJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    emit(String(decoding: try encoder.encode(value), as: UTF8.self) + "\n")
}

/// Reads a text file, with an error that names it.
func readTextFile(_ path: String) throws -> String {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw CommandError("cannot read \(path): no such file or not readable")
    }
    return String(decoding: data, as: UTF8.self)
}

struct CommandError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
