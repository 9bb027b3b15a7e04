import Foundation

/// A parsed JSON document: Hugging Face's config.json, safetensors headers, shard indexes and
/// tokenizer files. Integers stay integers (a `1` is not a `1.0`) and booleans are not numbers,
/// so a key of the wrong type is reported as such.
public enum JSONValue: Sendable, Equatable, Decodable {
    case null
    case bool(Bool)
    case integer(Int)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let i = try? c.decode(Int.self) {
            self = .integer(i)
        } else if let d = try? c.decode(Double.self) {
            self = .number(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    /// Parses `data`; malformed JSON is a `WeightFileError` naming `path` and `what` was read.
    public static func parse(_ data: Data, path: String, what: String) throws(WeightFileError) -> JSONValue {
        do {
            return try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw WeightFileError(path: path, problem: .invalidJSON(what: what, reason: describe(error)))
        }
    }

    /// Reads and parses the JSON file at `path`.
    public static func read(path: String, what: String) throws(WeightFileError) -> JSONValue {
        try decode(JSONValue.self, path: path, what: what)
    }

    /// Reads the JSON file at `path` into `T`; a missing file, malformed JSON or a value of the
    /// wrong shape is a `WeightFileError` naming the file (and the key, for a wrong shape).
    public static func decode<T: Decodable>(_: T.Type, path: String, what: String) throws(WeightFileError) -> T {
        guard let data = FileManager.default.contents(atPath: path) else {
            let reason = FileManager.default.fileExists(atPath: path) ? "not readable" : "no such file"
            throw WeightFileError(path: path, problem: .cannotOpen(reason: reason))
        }
        do {
            return try JSONDecoder().decode(T.self, from: data)
        } catch {
            throw WeightFileError(path: path, problem: .invalidJSON(what: what, reason: describe(error)))
        }
    }

    /// One line from a decoding error: the parser's own message, or what was expected where.
    static func describe(_ error: any Error) -> String {
        func at(_ path: [any CodingKey]) -> String {
            path.isEmpty ? "the top level" : path.map { $0.intValue.map(String.init) ?? $0.stringValue }.joined(separator: ".")
        }
        switch error {
        case DecodingError.dataCorrupted(let context):
            if let underlying = context.underlyingError {
                let text = "\(underlying)"
                if let range = text.range(of: "NSDebugDescription=") {
                    return String(text[range.upperBound...].prefix { $0 != "," && $0 != "}" })
                }
                return text
            }
            return context.codingPath.isEmpty ? context.debugDescription : "\(at(context.codingPath)): \(context.debugDescription)"
        case DecodingError.typeMismatch(let type, let context), DecodingError.valueNotFound(let type, let context):
            return "\(at(context.codingPath)) should be \(type)"
        case DecodingError.keyNotFound(let key, let context):
            return "\(at(context.codingPath + [key])) is missing"
        default:
            return "\(error)"
        }
    }

    /// How the value is named in errors ("an integer", "a string", ...).
    public var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .integer: "an integer"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }

    public var objectValue: [String: JSONValue]? {
        if case .object(let o) = self { return o }
        return nil
    }

    public var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    public var integerValue: Int? {
        if case .integer(let i) = self { return i }
        return nil
    }

    /// Integers and numbers as a Double.
    public var numberValue: Double? {
        switch self {
        case .integer(let i): Double(i)
        case .number(let d): d
        default: nil
        }
    }

    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    public var isNull: Bool { self == .null }

    /// `self[key]` of an object; nil for a missing key or a value that is not an object.
    public subscript(key: String) -> JSONValue? {
        objectValue?[key]
    }
}

/// Typed reads of one JSON object's keys, with errors that name the file and the key (missing,
/// or of the wrong type). A key holding `null` counts as missing.
public struct JSONObjectReader {
    public let path: String
    public let object: [String: JSONValue]
    /// Prefix for key names in errors (e.g. "rope_scaling.").
    public let context: String

    public init(_ value: JSONValue, path: String, what: String, context: String = "") throws(WeightFileError) {
        guard case .object(let object) = value else {
            throw WeightFileError(path: path, problem: .invalidJSON(what: what, reason: "expected an object, found \(value.typeName)"))
        }
        self.path = path
        self.object = object
        self.context = context
    }

    public func has(_ key: String) -> Bool {
        if let v = object[key], !v.isNull { return true }
        return false
    }

    func value(_ key: String) throws(WeightFileError) -> JSONValue {
        guard let v = object[key], !v.isNull else { throw WeightFileError(path: path, problem: .missingKey(context + key)) }
        return v
    }

    func wrongType(_ key: String, _ expected: String, _ found: JSONValue) -> WeightFileError {
        WeightFileError(path: path, problem: .wrongKeyType(key: context + key, expected: expected, found: found.typeName))
    }

    public func integer(_ key: String) throws(WeightFileError) -> Int {
        let v = try value(key)
        guard let i = v.integerValue else { throw wrongType(key, "an integer", v) }
        return i
    }

    public func number(_ key: String) throws(WeightFileError) -> Double {
        let v = try value(key)
        guard let d = v.numberValue else { throw wrongType(key, "a number", v) }
        return d
    }

    public func string(_ key: String) throws(WeightFileError) -> String {
        let v = try value(key)
        guard let s = v.stringValue else { throw wrongType(key, "a string", v) }
        return s
    }

    public func bool(_ key: String) throws(WeightFileError) -> Bool {
        let v = try value(key)
        guard let b = v.boolValue else { throw wrongType(key, "a boolean", v) }
        return b
    }

    public func array(_ key: String) throws(WeightFileError) -> [JSONValue] {
        let v = try value(key)
        guard let a = v.arrayValue else { throw wrongType(key, "an array", v) }
        return a
    }

    public func object(_ key: String) throws(WeightFileError) -> JSONObjectReader {
        let v = try value(key)
        guard v.objectValue != nil else { throw wrongType(key, "an object", v) }
        return try JSONObjectReader(v, path: path, what: context + key, context: context + key + ".")
    }

    public func integer(_ key: String, default value: Int) throws(WeightFileError) -> Int {
        has(key) ? try integer(key) : value
    }

    public func number(_ key: String, default value: Double) throws(WeightFileError) -> Double {
        has(key) ? try number(key) : value
    }

    public func bool(_ key: String, default value: Bool) throws(WeightFileError) -> Bool {
        has(key) ? try bool(key) : value
    }

    public func string(_ key: String, default value: String?) throws(WeightFileError) -> String? {
        has(key) ? try string(key) : value
    }
}
