import Foundation
import Testing
@testable import Coordinator
import Worker

@Suite struct ChatTemplateTests {
    static let builtinNames: [String: ChatTemplate] = ["chatml": .chatml, "llama2-sys-bos": .llama2, "vicuna": .vicuna]

    /// The same messages give llama.cpp's `llama_chat_apply_template` output, byte for byte.
    @Test func rendersAsLlamaCpp() throws {
        for (name, full, expected) in LlamaCppExpectations.builtinTemplates {
            let template = try #require(Self.builtinNames[name])
            let messages = full ? LlamaCppExpectations.conversation : LlamaCppExpectations.noSystem
            #expect(template.render(messages, defaultSystem: nil) == expected, "\(name), full conversation: \(full)")
        }
    }

    @Test func detectsAsLlamaCpp() {
        #expect(LlamaCppExpectations.detection.count > 30)
        for (name, text, expected) in LlamaCppExpectations.detection {
            #expect(ChatTemplate.detect(from: text) == expected, "\(name)")
        }
    }

    @Test func detectsBuiltinNames() {
        #expect(ChatTemplate.detect(from: "chatml") == .chatml)
        for name in ["llama2", "llama2-sys", "llama2-sys-bos", "llama2-sys-strip"] {
            #expect(ChatTemplate.detect(from: name) == .llama2)
        }
        #expect(ChatTemplate.detect(from: "vicuna") == .vicuna)
        // Names of formats this enum lacks, including one that starts like a Mistral template.
        for name in ["mistral-v1", "vicuna-orca", "llama3", "phi3", "gemma"] {
            #expect(ChatTemplate.detect(from: name) == nil, "\(name)")
        }
        #expect(ChatTemplate.detect(from: "") == nil)
        #expect(ChatTemplate.detect(from: "{{ messages }}") == nil)
        #expect(ChatTemplate.allCases.map(\.rawValue) == ["chatml", "llama2", "vicuna"])
    }

    @Test func smolLM2TemplateWithItsDefaultSystemMessage() throws {
        let text = LlamaCppExpectations.smolLM2Template
        #expect(ChatTemplate.detect(from: text) == .chatml)
        let system = try #require(defaultSystemMessage(inTemplate: text))
        #expect(system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        // Compared with jinja2's rendering of the template itself.
        #expect(ChatTemplate.chatml.render(LlamaCppExpectations.noSystem, defaultSystem: system) == LlamaCppExpectations.smolLM2NoSystem)
        #expect(ChatTemplate.chatml.render(LlamaCppExpectations.conversation, defaultSystem: system)
            == LlamaCppExpectations.smolLM2Conversation)
        // The template adds nothing to an empty conversation but the assistant opener.
        #expect(ChatTemplate.chatml.render([], defaultSystem: system) == "<|im_start|>assistant\n")
    }

    @Test func defaultSystemMessageShapes() {
        // A template that builds the system turn from the messages has no default.
        let openHermes = LlamaCppExpectations.detection.first { $0.name.hasPrefix("teknium/OpenHermes") }?.template ?? ""
        #expect(!openHermes.isEmpty)
        #expect(defaultSystemMessage(inTemplate: openHermes) == nil)
        // `set system_message = '...'` (bofenghuang/vigogne-2-70b-chat).
        let vigogne = LlamaCppExpectations.detection.first { $0.name.hasPrefix("bofenghuang/vigogne") }?.template ?? ""
        #expect(defaultSystemMessage(inTemplate: vigogne)?.hasPrefix("Vous êtes Vigogne, un assistant IA créé par Zaion Lab.") == true)
        // Escapes inside the literal are undone; a real newline works as well as "\n".
        #expect(defaultSystemMessage(inTemplate: #"{{ '<|im_start|>system\nIt\'s me\tok<|im_end|>\n' }}"#) == "It's me\tok")
        #expect(defaultSystemMessage(inTemplate: "{{ '<|im_start|>system\nPlain.<|im_end|>' }}") == "Plain.")
        #expect(defaultSystemMessage(inTemplate: #"{% set default_system_message = "Be brief." %}"#) == "Be brief.")
        #expect(defaultSystemMessage(inTemplate: "{{ '<|im_start|>system\n' + message['content'] + '<|im_end|>' }}") == nil)
        #expect(defaultSystemMessage(inTemplate: "") == nil)
    }

    @Test func defaultSystemGoesFirstOnlyWhenMissing() {
        let user = [ChatMessage(role: "user", content: "Hi")]
        #expect(ChatTemplate.vicuna.render(user, defaultSystem: "Be nice.") == "Be nice.\n\nUSER: Hi\nASSISTANT:")
        #expect(ChatTemplate.llama2.render(user, defaultSystem: "Be nice.") == "[INST] <<SYS>>\nBe nice.\n<</SYS>>\n\nHi [/INST]")
        let withSystem = [ChatMessage(role: "system", content: "S")] + user
        #expect(ChatTemplate.chatml.render(withSystem, defaultSystem: "ignored")
            == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    }

    @Test func chatMessageIsCodable() throws {
        let m = ChatMessage(role: "user", content: "Hello \"world\"\n")
        let data = try JSONEncoder().encode(m)
        #expect(try JSONDecoder().decode(ChatMessage.self, from: data) == m)
        let decoded = try JSONDecoder().decode([ChatMessage].self, from: Data(#"[{"role":"system","content":"x"}]"#.utf8))
        #expect(decoded == [ChatMessage(role: "system", content: "x")])
    }

    /// From the GGUF's template to the token ids llama.cpp produces for the same prompt.
    @Test func smolLM2PromptTokensFromTheModelsOwnTemplate() throws {
        let tokenizer = try TestData.requireTokenizer("smollm2")
        let path = try TestData.requireModel()
        let file = try Worker.GGUFFile(path: path)
        let templateText = try file.string("tokenizer.chat_template")
        let template = try #require(ChatTemplate.detect(from: templateText))
        let prompt = template.render(LlamaCppExpectations.noSystem, defaultSystem: defaultSystemMessage(inTemplate: templateText))
        let expected: [Int32] = [
            1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712, 8182, 2,
            198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198,
        ]
        #expect(tokenizer.encode(prompt, addSpecial: true, parseSpecial: true) == expected)
    }
}
