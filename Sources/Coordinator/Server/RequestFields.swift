import Foundation
import Worker

extension JSONValue {
    /// A request body's top-level object; malformed JSON or another kind of value is a 400.
    ///
    /// Bodies are parsed into `JSONValue` (which keeps booleans, integers and other numbers apart)
    /// and then read field by field (`Fields`), so every error names the field at fault and what
    /// it should hold, in words a client can act on (a `Decodable` struct's `DecodingError` does not).
    static func requestObject(_ data: Data) throws(APIError) -> [String: JSONValue] {
        let value: JSONValue
        do {
            value = try JSONDecoder().decode(JSONValue.self, from: data)
        } catch {
            throw .invalid("the request body is not valid JSON (\(Self.parserMessage(data, error)))", param: nil, code: "invalid_json")
        }
        guard case .object(let object) = value else {
            throw .invalid("the request body must be a JSON object, got \(value.typeName)", param: nil, code: "invalid_json")
        }
        return object
    }

    /// Where the JSON is malformed. JSONDecoder only says that it is; JSONSerialization's parser
    /// says where ("Invalid value around character 8."), so it is asked again on this error path.
    private static func parserMessage(_ data: Data, _ error: any Error) -> String {
        do {
            _ = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            if let detail = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String { return detail }
        }
        if case DecodingError.dataCorrupted(let context) = error { return context.debugDescription }
        return "\(error)"
    }
}

/// The fields of one JSON object, read with errors that name the field (`param`, e.g.
/// `messages[2].content`). A field set to null counts as absent, as in OpenAI's API.
struct Fields {
    let values: [String: JSONValue]
    /// Prefix of the names given in errors ("" at the top level, "messages[0]." inside a message).
    let path: String

    init(_ values: [String: JSONValue], path: String = "") {
        self.values = values
        self.path = path
    }

    func name(_ key: String) -> String { path + key }

    /// The value of `key` unless it is absent or null.
    subscript(key: String) -> JSONValue? {
        guard let value = values[key], value != .null else { return nil }
        return value
    }

    func wrongType(_ key: String, _ expected: String, got value: JSONValue) -> APIError {
        .invalid("'\(name(key))' must be \(expected), got \(value.typeName)", param: name(key), code: "invalid_type")
    }

    func string(_ key: String) throws(APIError) -> String? {
        guard let value = self[key] else { return nil }
        guard case .string(let s) = value else { throw wrongType(key, "a string", got: value) }
        return s
    }

    func bool(_ key: String) throws(APIError) -> Bool? {
        guard let value = self[key] else { return nil }
        guard case .bool(let b) = value else { throw wrongType(key, "a boolean", got: value) }
        return b
    }

    /// A whole number (1.0 counts; 1.5 does not).
    func integer(_ key: String) throws(APIError) -> Int? {
        guard let value = self[key] else { return nil }
        switch value {
        case .integer(let i): return i
        case .number(let d) where d.rounded() == d && abs(d) < 9.0e18: return Int(d)
        default: throw wrongType(key, "an integer", got: value)
        }
    }

    func number(_ key: String) throws(APIError) -> Double? {
        guard let value = self[key] else { return nil }
        switch value {
        case .integer(let i): return Double(i)
        case .number(let d): return d
        default: throw wrongType(key, "a number", got: value)
        }
    }

    func object(_ key: String) throws(APIError) -> Fields? {
        guard let value = self[key] else { return nil }
        guard case .object(let o) = value else { throw wrongType(key, "an object", got: value) }
        return Fields(o, path: name(key) + ".")
    }

    /// A string, or an array of strings (`stop`, `prompt`).
    func strings(_ key: String) throws(APIError) -> [String]? {
        guard let value = self[key] else { return nil }
        switch value {
        case .string(let s): return [s]
        case .array(let items):
            var out: [String] = []
            for (i, item) in items.enumerated() {
                guard case .string(let s) = item else {
                    throw .invalid("'\(name(key))[\(i)]' must be a string, got \(item.typeName)", param: name(key), code: "invalid_type")
                }
                out.append(s)
            }
            return out
        default: throw wrongType(key, "a string or an array of strings", got: value)
        }
    }

    /// Whether `key` holds something other than null, an empty array, an empty object or an empty
    /// string: options we do not implement may be sent empty, as some clients always send them.
    func isSet(_ key: String) -> Bool {
        switch self[key] {
        case nil: false
        case .array(let a): !a.isEmpty
        case .object(let o): !o.isEmpty
        case .string(let s): !s.isEmpty
        default: true
        }
    }
}
