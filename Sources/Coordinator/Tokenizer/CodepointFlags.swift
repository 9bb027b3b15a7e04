/// The Unicode classes the pre-tokenizer regexes use (\p{L}, \p{N}, \s, ...), with exactly the
/// values llama.cpp's tables give them.
///
/// llama.cpp generates its table (`unicode-data.cpp`) from UnicodeData.txt of Unicode 15.1; this
/// Swift toolchain's `Unicode.Scalar.Properties` is newer (17.0 for Swift 6.3). The two agree on
/// every code point assigned by 15.1 (checked code point by code point); code points assigned
/// later are *unassigned* (category Cn, flag `undefined`) to llama.cpp, so they are treated that
/// way here too. Otherwise a letter added in Unicode 16 would split differently from llama.cpp.
/// White space is the Unicode White_Space property, as in llama.cpp.
struct CodepointFlags: OptionSet, Sendable {
    let rawValue: UInt16

    static let undefined = CodepointFlags(rawValue: 0x0001)    // Cn
    static let number = CodepointFlags(rawValue: 0x0002)       // \p{N}
    static let letter = CodepointFlags(rawValue: 0x0004)       // \p{L}
    static let separator = CodepointFlags(rawValue: 0x0008)    // \p{Z}
    static let mark = CodepointFlags(rawValue: 0x0010)         // \p{M}
    static let punctuation = CodepointFlags(rawValue: 0x0020)  // \p{P}
    static let symbol = CodepointFlags(rawValue: 0x0040)       // \p{S}
    static let control = CodepointFlags(rawValue: 0x0080)      // \p{C}
    static let whitespace = CodepointFlags(rawValue: 0x0100)   // \s

    /// The last Unicode version whose assignments llama.cpp's table knows.
    static let unicodeMajorVersionLimit = 16

    /// Flags of a code point; `CodepointFlags()` (nothing set) is what llama.cpp uses for
    /// "outside the current piece", which callers model by not calling this.
    static func of(_ cp: UInt32) -> CodepointFlags {
        if cp < 0x1_0000 { return bmpTable[Int(cp)] }
        return compute(cp)
    }

    /// Precomputed for the Basic Multilingual Plane, where nearly all text lives.
    private static let bmpTable: [CodepointFlags] = (0..<0x1_0000).map { compute(UInt32($0)) }

    private static func compute(_ cp: UInt32) -> CodepointFlags {
        // Surrogate code points are category Cs (control) in UnicodeData.txt; Swift cannot form
        // them as scalars, and valid UTF-8 never holds them.
        guard let scalar = Unicode.Scalar(cp) else {
            return cp <= 0x10_FFFF ? .control : .undefined
        }
        let props = scalar.properties
        var flags: CodepointFlags
        if let age = props.age, age.major >= unicodeMajorVersionLimit {
            flags = .undefined
        } else {
            switch props.generalCategory {
            case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
                flags = .letter
            case .nonspacingMark, .spacingMark, .enclosingMark:
                flags = .mark
            case .decimalNumber, .letterNumber, .otherNumber:
                flags = .number
            case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
                 .initialPunctuation, .finalPunctuation, .otherPunctuation:
                flags = .punctuation
            case .mathSymbol, .currencySymbol, .modifierSymbol, .otherSymbol:
                flags = .symbol
            case .spaceSeparator, .lineSeparator, .paragraphSeparator:
                flags = .separator
            case .control, .format, .surrogate, .privateUse:
                flags = .control
            case .unassigned:
                flags = .undefined
            @unknown default:
                flags = .undefined
            }
        }
        if props.isWhitespace { flags.insert(.whitespace) }
        return flags
    }
}
