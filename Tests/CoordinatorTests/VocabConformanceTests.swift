import Foundation
import Testing
@testable import Coordinator

/// llama.cpp's tokenizer conformance files: `ggml-vocab-<name>.gguf.inp` holds inputs separated by
/// "\n__ggml_vocab_test__\n", `.gguf.out` the expected ids, one line per input (see llama.cpp's
/// tests/test-tokenizer-0.cpp). llama.cpp tokenizes them with add_special and parse_special off.
@Suite
struct VocabConformanceTests {
    struct Case {
        var input: String
        var expected: [Int32]
    }

    static func cases(vocabPath: String) throws -> [Case] {
        let inp = try Data(contentsOf: URL(fileURLWithPath: vocabPath + ".inp"))
        let out = try String(contentsOfFile: vocabPath + ".out", encoding: .utf8)
        let separator = Array("\n__ggml_vocab_test__\n".utf8)
        let bytes = [UInt8](inp)
        var inputs: [String] = []
        var start = 0
        var i = 0
        while start < bytes.count {
            if i + separator.count > bytes.count {
                inputs.append(String(decoding: bytes[start...], as: UTF8.self))
                break
            }
            if Array(bytes[i..<(i + separator.count)]) == separator {
                inputs.append(String(decoding: bytes[start..<i], as: UTF8.self))
                i += separator.count
                start = i
            } else {
                i += 1
            }
        }
        var lines = out.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        #expect(lines.count == inputs.count, "\(inputs.count) inputs but \(lines.count) expected lines")
        return zip(inputs, lines).map { input, line in
            Case(input: input, expected: line.split(separator: " ").compactMap { Int32($0) })
        }
    }

    @Test(arguments: ["gpt-2", "llama-spm", "llama-bpe", "mpt", "starcoder", "refact", "command-r", "phi-3"])
    func matchesLlamaCpp(vocab: String) throws {
        let path = try TestData.requireVocab(vocab)
        let tokenizer = try TestData.tokenizer(path: path)
        let cases = try Self.cases(vocabPath: path)
        #expect(cases.count > 30)
        var passed = 0
        for c in cases {
            let got = tokenizer.encode(c.input, addSpecial: false, parseSpecial: false)
            if got == c.expected {
                passed += 1
            } else {
                Issue.record("\(vocab): \(c.input.debugDescription): expected \(c.expected), got \(got)")
            }
        }
        #expect(passed == cases.count, "\(vocab): \(passed)/\(cases.count) inputs match llama.cpp")
    }

    @Test(arguments: ["gpt-2", "llama-spm", "llama-bpe", "mpt", "starcoder", "refact", "command-r", "phi-3"])
    func decodeRoundTrips(vocab: String) throws {
        let path = try TestData.requireVocab(vocab)
        let tokenizer = try TestData.tokenizer(path: path)
        for c in try Self.cases(vocabPath: path) {
            let tokens = tokenizer.encode(c.input, addSpecial: false, parseSpecial: false)
            #expect(tokenizer.decode(tokens) == c.input, "\(vocab): \(c.input.debugDescription)")
        }
    }
}
