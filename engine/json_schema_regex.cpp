#include "engine/json_schema_regex.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>
#include <vector>

namespace modserve {
namespace {

using Json = nlohmann::ordered_json;  // keeps an object's keys in the text's order

// Keywords that say nothing about which values are valid.
const std::set<std::string> kAnnotations = {"title", "description", "default", "examples", "$schema", "$id", "$comment"};

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
    MODSERVE_RETURN_IF_ERROR(KnownKeywords(s, at));
    if (s.contains("const") || s.contains("enum")) return Values(s, at, depth);
    for (const char* key : {"anyOf", "oneOf"}) {
      if (!s.contains(key)) continue;
      for (const auto& [other, value] : s.items()) {
        if (other != key && kAnnotations.count(other) == 0) {
          return Error(at, "\"" + other + "\" next to " + key + " is not supported: move it into each of " + key + "'s schemas");
        }
      }
      MODSERVE_RETURN_IF_ERROR(Branches(s, key, at));
      const Json& list = s[key];
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
    auto types = TypeNames(s, at);
    if (!types.ok()) return types.status();
    std::string alts;
    for (const std::string& t : *types) {
      auto one = Typed(s, t, at, depth);
      if (!one.ok()) return one;
      alts += (alts.empty() ? "" : "|") + *one;
    }
    return "(?:" + alts + ")";
  }

 private:
  Status KnownKeywords(const Json& s, const std::string& at) const {
    static const std::set<std::string> kKnown = {"type", "properties", "required", "items", "minItems", "maxItems",
                                                 "minLength", "maxLength", "enum", "const", "anyOf", "oneOf",
                                                 "additionalProperties"};
    for (const auto& [key, value] : s.items()) {
      if (kKnown.count(key) == 0 && kAnnotations.count(key) == 0) return Error(at, "the keyword \"" + key + "\" is not supported");
    }
    return Status::Ok();
  }

  // The names in `type`: one, or a non-empty list.
  StatusOr<std::vector<std::string>> TypeNames(const Json& s, const std::string& at) const {
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
    return types;
  }

  // The names in `required` (none when absent).
  StatusOr<std::set<std::string>> RequiredNames(const Json& s, const std::string& at) const {
    std::set<std::string> names;
    if (!s.contains("required")) return names;
    if (!s["required"].is_array()) return Error(at + "/required", "required must be an array of names");
    for (const auto& r : s["required"]) {
      if (!r.is_string()) return Error(at + "/required", "required must be an array of names");
      names.insert(r.get<std::string>());
    }
    return names;
  }

  // The values of `enum`, which must be there.
  StatusOr<const Json*> EnumValues(const Json& s, const std::string& at) const {
    if (!s["enum"].is_array() || s["enum"].empty()) return Error(at + "/enum", "enum must be a non-empty array");
    return &s["enum"];
  }

  Status Branches(const Json& s, const char* key, const std::string& at) const {
    if (!s[key].is_array() || s[key].empty()) return Error(at + "/" + key, std::string(key) + " must be a non-empty array");
    return Status::Ok();
  }

  // const or enum: the listed values (written as JSON writes them) that the
  // schema's other keywords admit; refused when they admit none.
  StatusOr<std::string> Values(const Json& s, const std::string& at, int depth) {
    Json rest = s;
    std::vector<Json> values;
    if (s.contains("const")) {
      values.push_back(s["const"]);
      rest.erase("const");
    } else {
      auto listed = EnumValues(s, at);
      if (!listed.ok()) return listed.status();
      values.assign((*listed)->begin(), (*listed)->end());
      rest.erase("enum");
    }
    std::string alts;
    for (const Json& v : values) {
      auto admitted = Admits(rest, v, at, depth);
      if (!admitted.ok()) return admitted.status();
      if (*admitted) alts += (alts.empty() ? "" : "|") + Literal(v.dump());
    }
    if (alts.empty()) {
      return Error(at, std::string(s.contains("const") ? "const's value is not" : "no value of enum is") + " valid under the schema's other keywords");
    }
    return "(?:" + alts + ")";
  }

  // Whether the JSON value `v` is valid under schema `s` (JSON Schema's
  // meaning: a keyword about strings, arrays or objects constrains only
  // values of that type), with the same checks of the keywords as Schema.
  StatusOr<bool> Admits(const Json& s, const Json& v, const std::string& at, int depth) const {
    if (depth > kMaxDepth) return Error(at, "schemas nest deeper than " + std::to_string(kMaxDepth));
    if (!s.is_object()) return Error(at, "a schema must be a JSON object");
    MODSERVE_RETURN_IF_ERROR(KnownKeywords(s, at));
    if (s.contains("const") && s["const"] != v) return false;
    if (s.contains("enum")) {
      auto listed = EnumValues(s, at);
      if (!listed.ok()) return listed.status();
      if (std::find((*listed)->begin(), (*listed)->end(), v) == (*listed)->end()) return false;
    }
    for (const char* key : {"anyOf", "oneOf"}) {
      if (!s.contains(key)) continue;
      MODSERVE_RETURN_IF_ERROR(Branches(s, key, at));
      size_t admitted = 0;
      for (size_t i = 0; i < s[key].size(); ++i) {
        auto one = Admits(s[key][i], v, at + "/" + key + "/" + std::to_string(i), depth + 1);
        if (!one.ok()) return one;
        admitted += *one;
      }
      if (admitted == 0 || (std::string(key) == "oneOf" && admitted > 1)) return false;
    }
    if (s.contains("type")) {
      auto types = TypeNames(s, at);
      if (!types.ok()) return types.status();
      bool any = false;
      for (const std::string& t : *types) {
        static const std::set<std::string> kTypes = {"string", "integer", "number", "boolean", "null", "array", "object"};
        if (kTypes.count(t) == 0) return Error(at + "/type", "\"" + t + "\" is not a JSON Schema type");
        any = any || (t == "string" && v.is_string()) || (t == "number" && v.is_number()) ||
              (t == "integer" && (v.is_number_integer() || (v.is_number_float() && std::nearbyint(v.get<double>()) == v.get<double>()))) ||
              (t == "boolean" && v.is_boolean()) || (t == "null" && v.is_null()) || (t == "array" && v.is_array()) ||
              (t == "object" && v.is_object());
      }
      if (!any) return false;
    }
    int64_t min = 0, max = -1;
    if (v.is_string()) {
      MODSERVE_RETURN_IF_ERROR(Count(s, "minLength", at, 0, &min));
      MODSERVE_RETURN_IF_ERROR(Count(s, "maxLength", at, -1, &max));
      int64_t chars = 0;  // code points: bytes that do not continue a UTF-8 sequence
      for (unsigned char c : v.get_ref<const std::string&>()) chars += (c & 0xC0) != 0x80;
      if (chars < min || (max >= 0 && chars > max)) return false;
    }
    if (v.is_array()) {
      MODSERVE_RETURN_IF_ERROR(Count(s, "minItems", at, 0, &min));
      MODSERVE_RETURN_IF_ERROR(Count(s, "maxItems", at, -1, &max));
      const auto n = static_cast<int64_t>(v.size());
      if (n < min || (max >= 0 && n > max)) return false;
      for (size_t i = 0; s.contains("items") && i < v.size(); ++i) {
        auto one = Admits(s["items"], v[i], at + "/items", depth + 1);
        if (!one.ok() || !*one) return one;
      }
    }
    if (v.is_object()) {
      if (s.contains("properties") && !s["properties"].is_object()) return Error(at + "/properties", "properties must be an object");
      auto names = RequiredNames(s, at);
      if (!names.ok()) return names.status();
      for (const std::string& r : *names) {
        if (!v.contains(r)) return false;
      }
      for (const auto& [key, value] : v.items()) {
        const bool listed = s.contains("properties") && s["properties"].contains(key);
        if (listed) {
          auto one = Admits(s["properties"][key], value, at + "/properties/" + key, depth + 1);
          if (!one.ok() || !*one) return one;
        } else if (s.contains("additionalProperties")) {
          const Json& extra = s["additionalProperties"];
          if (extra.is_boolean()) {
            if (!extra.get<bool>()) return false;
          } else {
            auto one = Admits(extra, value, at + "/additionalProperties", depth + 1);
            if (!one.ok() || !*one) return one;
          }
        }
      }
    }
    return true;
  }

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
    auto required_names = RequiredNames(s, at);
    if (!required_names.ok()) return required_names.status();
    const std::set<std::string>& names = *required_names;
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
    // After the first required property r every property follows a comma;
    // before it, the optional ones written (if any) are a non-empty ordered
    // selection followed by a comma. A selection of [lo, hi) either starts
    // in its first half, the second half's choices then each following a
    // comma, or lies in the second half: O(n log n) pattern bytes, where
    // listing every possible first property would take O(n^2).
    const size_t n = parts.size();
    const size_t r = static_cast<size_t>(std::find(required.begin(), required.end(), true) - required.begin());
    auto with_commas = [&](size_t lo, size_t hi) {
      std::string out;
      for (size_t i = lo; i < hi; ++i) out += required[i] ? kComma + parts[i] : "(?:" + (kComma + parts[i]) + ")?";
      return out;
    };
    std::function<std::string(size_t, size_t)> selection = [&](size_t lo, size_t hi) -> std::string {
      if (hi - lo == 1) return parts[lo];
      const size_t mid = lo + (hi - lo) / 2;
      return "(?:" + selection(lo, mid) + with_commas(mid, hi) + "|" + selection(mid, hi) + ")";
    };
    std::string body;
    if (r == n) {
      if (n > 0) body = "(?:" + selection(0, n) + ")?";
    } else {
      if (r > 0) body = "(?:" + selection(0, r) + kComma + ")?";
      body += parts[r] + with_commas(r + 1, n);
    }
    return "\\{" + body + "\\}";
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
