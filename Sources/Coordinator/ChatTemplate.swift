/// One turn of a conversation.
public struct ChatMessage: Sendable, Codable, Equatable {
    /// "system", "user" or "assistant".
    public var role: String
    public var content: String

    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// A stretch of a rendered chat prompt: the template's markup, or a message's content.
public struct ChatPromptPart: Sendable, Equatable {
    public var text: String
    /// A message's content: tokenised as text, its special-token strings included.
    public var isContent: Bool

    public init(_ text: String, isContent: Bool) {
        self.text = text
        self.isContent = isContent
    }
}

/// The prompt formats the engine can write, as llama.cpp's built-in (non-jinja) templates in
/// llama-chat.cpp. The rendered text contains special-token texts such as "<|im_start|>"; encode
/// it with `parseSpecial: true`, and with `addSpecial: true` so the tokenizer adds BOS when the
/// model wants it (no template writes the leading BOS itself). `parts` tells the markup from the
/// messages' contents, for `Tokenizer.encode(_ parts:)`, which parses special tokens in the markup
/// only (the server's chat requests).
public enum ChatTemplate: String, Sendable, CaseIterable {
    /// `<|im_start|>role\ncontent<|im_end|>\n` per message (SmolLM2, Qwen, OpenHermes, ...).
    case chatml
    /// Llama-2-chat: `[INST] <<SYS>>\nsystem\n<</SYS>>\n\nuser [/INST]assistant</s><s>[INST] ...`,
    /// which is llama.cpp's `llama2-sys-bos` variant: every turn after the first starts with the
    /// BOS text "<s>" as in Meta's format, the first one gets BOS from the tokenizer.
    case llama2
    /// Vicuna v1.1: `system\n\nUSER: user\nASSISTANT: assistant</s>\n`, ending with "ASSISTANT:".
    case vicuna

    /// The format of a GGUF's `tokenizer.chat_template` text, recognised by the same markers and
    /// in the same order as llama.cpp's `llm_chat_detect_template`; nil when llama.cpp would pick
    /// a format this enum does not have (Mistral v1/v3/v7, Phi, Gemma, Zephyr, Orca-Vicuna, ...)
    /// or none. A bare built-in name ("chatml", "llama2", "llama2-sys", "llama2-sys-bos",
    /// "llama2-sys-strip", "vicuna") is accepted too.
    ///
    /// All Llama-2 variants map to `.llama2`: llama.cpp would render the one without `<<SYS>>`
    /// (Mistral v0.2) with the system text as a plain first line, and `llama2-sys`/`-strip`
    /// without the "<s>" between turns (and `-strip` with trimmed messages).
    public static func detect(from template: String) -> ChatTemplate? {
        switch template {
        case "chatml": return .chatml
        case "llama2", "llama2-sys", "llama2-sys-bos", "llama2-sys-strip": return .llama2
        case "vicuna": return .vicuna
        default:
            if otherBuiltinNames.contains(template) { return nil }
        }
        func has(_ marker: String) -> Bool { template.contains(marker) }
        if has("<|im_start|>") {
            // Phi-4 and SmolVLM use <|im_start|> but are not ChatML.
            return has("<|im_sep|>") || has("<end_of_utterance>") ? nil : .chatml
        }
        if template.hasPrefix("mistral") || has("[INST]") {
            if has("[SYSTEM_PROMPT]") || has("' [INST] ' + system_message") || has("[AVAILABLE_TOOLS]") {
                return nil  // Mistral v7, v1, v3
            }
            return .llama2
        }
        // Formats llama.cpp checks before Vicuna's markers (Phi-3, ChatGLM, GLM-Edge, Falcon 3,
        // Zephyr, Monarch, Gemma, Orion, OpenChat): a template matching one of them is not Vicuna.
        if (has("<|assistant|>") && (has("<|end|>") || has("<|user|>"))) || has("[gMASK]<sop>")
            || (has("<|{{ item['role'] }}|>") && has("<|begin_of_image|>")) || (has("<|user|>") && has("<|endoftext|>"))
            || has("bos_token + message['role']") || has("<start_of_turn>") || has("'\\n\\nAssistant: ' + eos_token")
            || has("GPT4 Correct ") {
            return nil
        }
        if has("USER: ") && has("ASSISTANT: ") {
            return has("SYSTEM: ") ? nil : .vicuna  // "SYSTEM: " is the Orca-Vicuna variant
        }
        return nil
    }

    /// llama.cpp's other built-in template names (`LLM_CHAT_TEMPLATES`), which it looks up before
    /// any marker: "mistral-v1" must not be taken for Llama-2 because it starts with "mistral".
    private static let otherBuiltinNames: Set<String> = [
        "mistral-v1", "mistral-v3", "mistral-v3-tekken", "mistral-v7", "mistral-v7-tekken", "phi3", "phi4",
        "falcon3", "zephyr", "monarch", "gemma", "orion", "openchat", "vicuna-orca", "deepseek", "deepseek2",
        "deepseek3", "deepseek-ocr", "command-r", "llama3", "chatglm3", "chatglm4", "glmedge", "minicpm", "exaone3",
        "exaone4", "exaone-moe", "rwkv-world", "granite", "granite-4.0", "granite-4.1", "gigachat", "megrez", "yandex",
        "bailing", "bailing-think", "bailing2", "llama4", "smolvlm", "hunyuan-moe", "gpt-oss", "hunyuan-dense",
        "hunyuan-vl", "kimi-k2", "seed_oss", "grok-2", "pangu-embedded", "solar-open",
    ]

    /// The prompt for `messages`, ending with the opening of the assistant's turn.
    ///
    /// `defaultSystem`, when given and the conversation does not start with a system message, is
    /// put first as one: SmolLM2's template does this with its built-in message (see
    /// `defaultSystemMessage(inTemplate:)`). Without it, llama.cpp's output is reproduced exactly.
    public func render(_ messages: [ChatMessage], defaultSystem: String?) -> String {
        parts(messages, defaultSystem: defaultSystem).map(\.text).joined()
    }

    /// The prompt `render` writes, as the template's markup and each message's content in order
    /// (every content goes through `content(_:)`, after whatever the template does to it).
    public func parts(_ messages: [ChatMessage], defaultSystem: String?) -> [ChatPromptPart] {
        var messages = messages
        if let defaultSystem, let first = messages.first, first.role != "system" {
            messages.insert(ChatMessage(role: "system", content: defaultSystem), at: 0)
        }
        var out: [ChatPromptPart] = []
        func markup(_ text: String) { out.append(ChatPromptPart(text, isContent: false)) }
        func content(_ text: String) { out.append(ChatPromptPart(text, isContent: true)) }
        switch self {
        case .chatml:
            for m in messages {
                markup("<|im_start|>\(m.role)\n")
                content(m.content)
                markup("<|im_end|>\n")
            }
            markup("<|im_start|>assistant\n")
        case .llama2:
            // The last user turn's " [/INST]" already opens the assistant's turn.
            markup("[INST] ")
            var insideTurn = true
            for m in messages {
                if !insideTurn {
                    insideTurn = true
                    markup("<s>[INST] ")
                }
                switch m.role {
                case "system":
                    markup("<<SYS>>\n")
                    content(m.content)
                    markup("\n<</SYS>>\n\n")
                case "user":
                    content(m.content)
                    markup(" [/INST]")
                default:
                    content(m.content)
                    markup("</s>")
                    insideTurn = false
                }
            }
        case .vicuna:
            for m in messages {
                switch m.role {
                case "system":
                    content(m.content)
                    markup("\n\n")
                case "user":
                    markup("USER: ")
                    content(m.content)
                    markup("\n")
                case "assistant":
                    markup("ASSISTANT: ")
                    content(m.content)
                    markup("</s>\n")
                default: break  // llama.cpp drops other roles
                }
            }
            markup("ASSISTANT:")
        }
        return out
    }
}

/// The default system message a jinja chat template writes literally when the conversation has
/// none, or nil. Two shapes are recognised: a ChatML system turn inside a string literal
/// (SmolLM2: `{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by
/// Hugging Face<|im_end|>\n' }}`) and an assignment `{% set system_message = '...' %}` (also
/// `default_system_message`). Jinja string escapes (\n, \', \", \\) are undone.
public func defaultSystemMessage(inTemplate template: String) -> String? {
    // 1. A literal ChatML system turn. The newline after "system" is a real one or an escape.
    for opener in ["<|im_start|>system\n", "<|im_start|>system\\n"] {
        var search = template[...]
        while let start = search.firstRange(of: opener) {
            let rest = search[start.upperBound...]
            search = rest
            guard let end = rest.firstRange(of: "<|im_end|>") else { break }
            let body = rest[..<end.lowerBound]
            // Text built from variables ("' + message['content'] + '") is not a literal: it
            // holds an unescaped quote or a brace.
            if !body.isEmpty && !hasUnescapedSyntax(body) {
                return unescapeJinja(body)
            }
        }
    }
    // 2. `set system_message = '...'` / `set default_system_message = "..."`.
    for name in ["default_system_message", "system_message"] {
        var search = template[...]
        while let found = search.firstRange(of: "set \(name)") {
            var rest = search[found.upperBound...].drop(while: { $0 == " " })
            search = search[found.upperBound...]
            guard rest.first == "=" else { continue }
            rest = rest.dropFirst().drop(while: { $0 == " " })
            guard let quote = rest.first, quote == "'" || quote == "\"" else { continue }
            var value = ""
            var escaped = false
            for ch in rest.dropFirst() {
                if escaped {
                    value.append(ch)
                    escaped = false
                } else if ch == "\\" {
                    value.append(ch)
                    escaped = true
                } else if ch == quote {
                    return value.isEmpty ? nil : unescapeJinja(value[...])
                } else {
                    value.append(ch)
                }
            }
        }
    }
    return nil
}

/// Whether `text` holds a quote or brace that is not escaped with a backslash.
private func hasUnescapedSyntax(_ text: Substring) -> Bool {
    var escaped = false
    for ch in text {
        if escaped {
            escaped = false
        } else if ch == "\\" {
            escaped = true
        } else if ch == "'" || ch == "\"" || ch == "{" || ch == "}" {
            return true
        }
    }
    return false
}

/// Undoes the escapes of a jinja string literal.
private func unescapeJinja(_ text: Substring) -> String {
    var out = ""
    var escaped = false
    for ch in text {
        if escaped {
            switch ch {
            case "n": out.append("\n")
            case "t": out.append("\t")
            case "r": out.append("\r")
            default: out.append(ch)
            }
            escaped = false
        } else if ch == "\\" {
            escaped = true
        } else {
            out.append(ch)
        }
    }
    if escaped { out.append("\\") }
    return out
}
