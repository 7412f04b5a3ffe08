#include "engine/json_schema_regex.h"

#include <nlohmann/json.hpp>

#include <set>
#include <vector>

namespace modserve {
namespace {

using Json = nlohmann::ordered_json;  // keeps an object's keys in the text's order

constexpr int kMaxDepth = 16;       // nesting of schemas
constexpr int64_t kMaxCount = 1000;  // minItems, maxItems, minLength, maxLength (TokenGuide::kMaxRepeat)

// One character of a JSON string, as JSON writes it.
const char* const kStringChar = R"((?:[^"\\\x00-\x1F]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4}))";
const char* const kInteger = R"(-?(?:0|[1-9][0-9]*))";
const char* const kNumber = R"(-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)";
const char* const kComma = ", ?";
const char* const kColon = ": ?";

// `text` with the pattern language's special characters escaped.
std::string Literal(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (std::string_view("()[]{}*+?|.\\^$").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

// "{min,max}" (max -1: unbounded).
std::string Counts(int64_t min, int64_t max) {
  return "{" + std::to_string(min) + "," + (max < 0 ? "" : std::to_string(max)) + "}";
}

class Converter {
 public:
  explicit Converter(const std::string& field) : field_(field) {}

  StatusOr<std::string> Schema(const Json& s, const std::string& at, int depth) {
    if (depth > kMaxDepth) return Error(at, "schemas nest deeper than " + std::to_string(kMaxDepth));
    if (!s.is_object()) return Error(at, "a schema must be a JSON object");
    static const std::set<std::string> kKnown = {
        "type", "properties", "required", "items", "minItems", "maxItems", "minLength", "maxLength", "enum", "const",
        "anyOf", "oneOf", "title", "description", "default", "examples", "$schema", "$id", "$comment",
        "additionalProperties"};
    for (const auto& [key, value] : s.items()) {
      if (kKnown.count(key) == 0) return Error(at, "the keyword \"" + key + "\" is not supported");
    }
    if (s.contains("const")) return "(?:" + Literal(s["const"].dump()) + ")";
    if (s.contains("enum")) {
      if (!s["enum"].is_array() || s["enum"].empty()) return Error(at + "/enum", "enum must be a non-empty array");
      std::string alts;
      for (const auto& v : s["enum"]) alts += (alts.empty() ? "" : "|") + Literal(v.dump());
      return "(?:" + alts + ")";
    }
    for (const char* key : {"anyOf", "oneOf"}) {
      if (!s.contains(key)) continue;
      const Json& list = s[key];
      if (!list.is_array() || list.empty()) return Error(at + "/" + key, std::string(key) + " must be a non-empty array");
      std::string alts;
      for (size_t i = 0; i < list.size(); ++i) {
        auto sub = Schema(list[i], at + "/" + key + "/" + std::to_string(i), depth + 1);
        if (!sub.ok()) return sub;
        alts += (alts.empty() ? "" : "|") + *sub;
      }
      return "(?:" + alts + ")";
    }
    if (!s.contains("type")) {
      return Error(at, "a schema needs a type, enum, const, anyOf or oneOf (any JSON value at all is not a regular language)");
    }
    std::vector<std::string> types;
    if (s["type"].is_string()) {
      types.push_back(s["type"].get<std::string>());
    } else if (s["type"].is_array() && !s["type"].empty()) {
      for (const auto& t : s["type"]) {
        if (!t.is_string()) return Error(at + "/type", "type must be a name or a list of names");
        types.push_back(t.get<std::string>());
      }
    } else {
      return Error(at + "/type", "type must be a name or a list of names");
    }
    std::string alts;
    for (const std::string& t : types) {
      auto one = Typed(s, t, at, depth);
      if (!one.ok()) return one;
      alts += (alts.empty() ? "" : "|") + *one;
    }
    return "(?:" + alts + ")";
  }

 private:
  Status Error(const std::string& at, const std::string& what) const {
    return InvalidArgument(field_ + ": " + what + " (at " + (at.empty() ? "the root" : at) + ")");
  }

  // A count keyword in [0, kMaxCount], or `fallback` when absent.
  Status Count(const Json& s, const char* key, const std::string& at, int64_t fallback, int64_t* out) const {
    *out = fallback;
    if (!s.contains(key)) return Status::Ok();
    if (!s[key].is_number_integer() || s[key].get<int64_t>() < 0 || s[key].get<int64_t>() > kMaxCount) {
      return Error(at + "/" + key, std::string(key) + " must be an integer in [0, " + std::to_string(kMaxCount) + "]");
    }
    *out = s[key].get<int64_t>();
    return Status::Ok();
  }

  StatusOr<std::string> Typed(const Json& s, const std::string& type, const std::string& at, int depth) {
    if (type == "string") {
      int64_t min = 0, max = -1;
      MODSERVE_RETURN_IF_ERROR(Count(s, "minLength", at, 0, &min));
      MODSERVE_RETURN_IF_ERROR(Count(s, "maxLength", at, -1, &max));
      if (max >= 0 && max < min) return Error(at, "maxLength is below minLength");
      return std::string("\"") + kStringChar + (min == 0 && max < 0 ? "*" : Counts(min, max)) + "\"";
    }
    if (type == "integer") return std::string(kInteger);
    if (type == "number") return std::string(kNumber);
    if (type == "boolean") return std::string("(?:true|false)");
    if (type == "null") return std::string("null");
    if (type == "array") return Array(s, at, depth);
    if (type == "object") return Object(s, at, depth);
    return Error(at + "/type", "\"" + type + "\" is not a JSON Schema type");
  }

  StatusOr<std::string> Array(const Json& s, const std::string& at, int depth) {
    int64_t min = 0, max = -1;
    MODSERVE_RETURN_IF_ERROR(Count(s, "minItems", at, 0, &min));
    MODSERVE_RETURN_IF_ERROR(Count(s, "maxItems", at, -1, &max));
    if (max >= 0 && max < min) return Error(at, "maxItems is below minItems");
    if (max == 0) return std::string("\\[\\]");
    if (!s.contains("items")) return Error(at, "an array needs items (a schema for its elements)");
    auto item = Schema(s["items"], at + "/items", depth + 1);
    if (!item.ok()) return item;
    // The first element, then min - 1 to max - 1 more after commas.
    const std::string rest = "(?:" + std::string(kComma) + *item + ")" + Counts(min > 0 ? min - 1 : 0, max < 0 ? -1 : max - 1);
    const std::string elements = *item + rest;
    return "\\[" + (min > 0 ? elements : "(?:" + elements + ")?") + "\\]";
  }

  StatusOr<std::string> Object(const Json& s, const std::string& at, int depth) {
    std::vector<std::string> parts;  // "key": value, in the schema's order
    std::vector<bool> required;
    std::set<std::string> listed;
    if (s.contains("required") && !s["required"].is_array()) return Error(at + "/required", "required must be an array of names");
    std::set<std::string> names;
    if (s.contains("required")) {
      for (const auto& r : s["required"]) {
        if (!r.is_string()) return Error(at + "/required", "required must be an array of names");
        names.insert(r.get<std::string>());
      }
    }
    if (s.contains("properties")) {
      if (!s["properties"].is_object()) return Error(at + "/properties", "properties must be an object");
      for (const auto& [key, sub] : s["properties"].items()) {
        auto value = Schema(sub, at + "/properties/" + key, depth + 1);
        if (!value.ok()) return value;
        parts.push_back(Literal(Json(key).dump()) + kColon + *value);
        required.push_back(names.count(key) != 0);
        listed.insert(key);
      }
    }
    for (const std::string& r : names) {
      if (listed.count(r) == 0) return Error(at + "/required", "\"" + r + "\" is required but not in properties");
    }
    // From property i on, with at least one written before (`after`): each
    // optional one is ", key: value" or nothing. With none written yet, the
    // first one written starts without a comma: an alternative per optional
    // property that may come first.
    const size_t n = parts.size();
    std::vector<std::string> after(n + 1);
    for (size_t i = n; i-- > 0;) {
      const std::string one = kComma + parts[i];
      after[i] = (required[i] ? one : "(?:" + one + ")?") + after[i + 1];
    }
    std::string first;  // the properties from i on with none written yet, built from the end
    for (size_t i = n; i-- > 0;) {
      const std::string here = parts[i] + after[i + 1];
      first = required[i] ? here : "(?:" + here + (first.empty() ? ")?" : "|" + first + ")");
    }
    return "\\{" + first + "\\}";
  }

  const std::string& field_;
};

}  // namespace

StatusOr<std::string> JsonSchemaRegex(std::string_view schema, const std::string& field) {
  Json j;
  try {
    j = Json::parse(schema);
  } catch (const Json::exception& e) {
    return InvalidArgument(field + " is not valid JSON: " + e.what());
  }
  return Converter(field).Schema(j, "", 0);
}

}  // namespace modserve
