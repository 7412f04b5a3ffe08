// JsonSchemaRegex: a JSON Schema's guide accepts the JSON texts the schema
// allows (compact or single-spaced, properties in order, optional ones
// left out) and no others; unsupported keywords are refused naming them and
// where they are; a guided sampler fed random logits writes JSON that
// parses and fits the schema.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <random>
#include <string>
#include <vector>

#include "engine/json_schema_regex.h"
#include "engine/sampler.h"
#include "engine/token_guide.h"

namespace modserve {
namespace {

const char* const kPerson = R"({
  "type": "object",
  "title": "a person",
  "properties": {
    "name": {"type": "string", "maxLength": 8},
    "age": {"type": "integer"},
    "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
    "ok": {"type": "boolean"},
    "note": {"type": ["string", "null"]},
    "score": {"anyOf": [{"type": "number"}, {"const": "n/a"}]}
  },
  "required": ["name", "age"],
  "additionalProperties": false
})";

std::shared_ptr<const TokenGuide> SchemaGuide(const std::string& schema) {
  auto regex = JsonSchemaRegex(schema, "guided_json");
  EXPECT_TRUE(regex.ok()) << regex.status().ToString();
  if (!regex.ok()) return nullptr;
  auto g = TokenGuide::FromRegex(*regex, "guided_json");
  EXPECT_TRUE(g.ok()) << g.status().ToString() << "\n" << *regex;
  return g.ok() ? *g : nullptr;
}

bool Matches(const TokenGuide& g, const std::string& text) {
  const int32_t s = g.Walk(text);
  return s >= 0 && g.Accepting(s);
}

TEST(JsonSchemaRegex, AcceptsWhatTheSchemaAllowsAndNothingElse) {
  auto g = SchemaGuide(kPerson);
  ASSERT_NE(g, nullptr);
  for (std::string yes : {
           R"({"name":"Al","age":30})",
           R"({"name": "Al", "age": 30, "tags": ["a", "b"]})",
           R"({"name":"","age":-1,"ok":true,"note":null})",
           "{\"name\":\"x\",\"age\":0,\"note\":\"\xC3\xA9\\n\\u00e9\"}",
           R"({"name":"Al","age":7,"score":-1.5e3})",
           R"({"name":"Al","age":7,"tags":[],"score":"n/a"})",
       }) {
    EXPECT_TRUE(Matches(*g, yes)) << yes;
  }
  for (std::string no : {
           R"({"age":30,"name":"Al"})",               // out of order
           R"({"name":"Al"})",                        // age is required
           R"({"name":"toolongname","age":1})",       // maxLength 8
           R"({"name":"Al","age":1.5})",              // not an integer
           R"({"name":"Al","age":01})",               // not JSON
           R"({"name":"Al","age":30,"tags":["c"]})",  // not in the enum
           R"({"name":"Al","age":30,"tags":["a","a","a","a"]})",  // maxItems 3
           R"({"name":"Al","age":30,})",
           R"({"name":"Al","age":30,"extra":1})",
           R"({"name":"Al" ,"age":30})",
           R"({"name":"Al",  "age":30})",             // one space at most
           "{\"name\":\"a\nb\",\"age\":1}",           // a raw newline in a string
       }) {
    EXPECT_FALSE(Matches(*g, no)) << no;
  }
}

TEST(JsonSchemaRegex, OptionalPropertiesMayBeLeftOutAnywhere) {
  auto g = SchemaGuide(R"({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"},
                           "c": {"type": "integer"}}, "required": ["b"]})");
  ASSERT_NE(g, nullptr);
  for (std::string yes : {R"({"b":1})", R"({"a":1,"b":2})", R"({"b":2,"c":3})", R"({"a":1,"b":2,"c":3})"}) {
    EXPECT_TRUE(Matches(*g, yes)) << yes;
  }
  for (std::string no : {R"({})", R"({"a":1})", R"({"a":1,"c":3})", R"({,"b":1})"}) EXPECT_FALSE(Matches(*g, no)) << no;
  auto none = SchemaGuide(R"({"type": "object", "properties": {"a": {"type": "null"}, "b": {"type": "null"}}})");
  ASSERT_NE(none, nullptr);
  for (std::string yes : {R"({})", R"({"a":null})", R"({"b":null})", R"({"a":null,"b":null})"}) {
    EXPECT_TRUE(Matches(*none, yes)) << yes;
  }
  EXPECT_FALSE(Matches(*none, R"({"b":null,"a":null})"));
}

// Many optional properties: the pattern grows as n log n (listing every
// property that may come first grew as n^2 and refused 30 optional
// strings as too large). Every ordered selection matches, nothing else.
TEST(JsonSchemaRegex, ManyOptionalPropertiesStayWithinTheGuidesSize) {
  for (int required : {-1, 0, 31, 59}) {
    std::string schema = R"({"type": "object", "properties": {)";
    for (int i = 0; i < 60; ++i) schema += (i ? ", " : "") + std::string("\"p") + std::to_string(i) + R"(": {"type": "string"})";
    schema += "}";
    if (required >= 0) schema += R"(, "required": ["p)" + std::to_string(required) + "\"]";
    schema += "}";
    SCOPED_TRACE(schema.substr(schema.size() - 40));
    auto regex = JsonSchemaRegex(schema, "guided_json");
    ASSERT_TRUE(regex.ok()) << regex.status().ToString();
    EXPECT_LT(regex->size(), 20000u);
    auto g = TokenGuide::FromRegex(*regex, "guided_json");
    ASSERT_TRUE(g.ok()) << g.status().ToString();
    std::mt19937 rng(static_cast<unsigned>(required + 2));
    for (int trial = 0; trial < 200; ++trial) {
      std::string text = "{";
      bool has_required = required < 0, any = false;
      for (int i = 0; i < 60; ++i) {
        if (i != required && rng() % 4 != 0) continue;
        text += (any ? "," : "") + std::string("\"p") + std::to_string(i) + R"(":"v")";
        any = true;
        has_required = has_required || i == required;
      }
      text += "}";
      EXPECT_EQ(Matches(**g, text), has_required) << text;
    }
    EXPECT_FALSE(Matches(**g, R"({"p1":"v","p0":"v"})"));
    EXPECT_FALSE(Matches(**g, R"({,"p1":"v"})"));
    EXPECT_FALSE(Matches(**g, R"({"p1":"v",})"));
  }
}

TEST(JsonSchemaRegex, ASchemaTooLargeForTheGuideSaysWhatToChange) {
  // A string's largest count fits (a class's byte ranges are moves, not
  // states: 32 states a character), and so do a hundred short items.
  for (const char* fits : {R"({"type": "string", "maxLength": 1000})",
                           R"({"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 100})"}) {
    auto regex = JsonSchemaRegex(fits, "guided_json");
    ASSERT_TRUE(regex.ok());
    auto g = TokenGuide::FromRegex(*regex, "guided_json", kJsonSchemaSizeHint);
    EXPECT_TRUE(g.ok()) << fits << ": " << g.status().ToString();
  }
  auto regex = JsonSchemaRegex(R"({"type": "array", "items": {"type": "string", "maxLength": 100}, "maxItems": 100})", "guided_json");
  ASSERT_TRUE(regex.ok());
  auto g = TokenGuide::FromRegex(*regex, "guided_json", kJsonSchemaSizeHint);
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.status().message().find("guided_json is too large"), std::string::npos) << g.status().message();
  EXPECT_NE(g.status().message().find("(smaller maxLength or maxItems"), std::string::npos) << g.status().message();
}

// const and enum are filtered by the keywords beside them (JSON Schema's
// meaning: all of a schema's keywords hold), so no value they rule out can
// be written.
TEST(JsonSchemaRegex, EnumAndConstKeepOnlyTheValuesTheirSiblingKeywordsAdmit) {
  struct Case {
    std::string schema;
    std::vector<std::string> yes, no;
  } cases[] = {
      {R"({"type": "string", "enum": ["a", 1, null]})", {R"("a")"}, {"1", "null"}},
      {R"({"enum": ["a", "bbb", "\u00e9"], "maxLength": 1})", {R"("a")", R"("é")"}, {R"("bbb")"}},
      {R"({"type": ["integer", "null"], "enum": [1, 1.5, 2.0, null, "x"]})", {"1", "2.0", "null"}, {"1.5", R"("x")"}},
      {R"({"enum": [[1], [1, 2, 3], ["a"]], "items": {"type": "integer"}, "maxItems": 2})", {"[1]"}, {"[1,2,3]", R"(["a"])"}},
      {R"({"enum": [{"a": 1}, {"b": 1}, {"a": "x"}], "properties": {"a": {"type": "integer"}}, "required": ["a"]})",
       {R"({"a":1})"},
       {R"({"b":1})", R"({"a":"x"})"}},
      {R"({"enum": [{"a": 1}, {"a": 1, "z": 2}], "properties": {"a": {}}, "additionalProperties": false})",
       {R"({"a":1})"},
       {R"({"a":1,"z":2})"}},
      {R"({"enum": [1, "a", true], "anyOf": [{"type": "boolean"}, {"const": 1}]})", {"1", "true"}, {R"("a")"}},
      {R"({"enum": [1, 2, 3], "oneOf": [{"enum": [1, 2]}, {"enum": [2, 3]}]})", {"1", "3"}, {"2"}},  // exactly one
      {R"({"const": "ab", "type": "string", "minLength": 2, "enum": ["ab", "c"]})", {R"("ab")"}, {R"("c")"}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.schema);
    auto g = SchemaGuide(c.schema);
    ASSERT_NE(g, nullptr);
    for (const auto& yes : c.yes) EXPECT_TRUE(Matches(*g, yes)) << yes;
    for (const auto& no : c.no) EXPECT_FALSE(Matches(*g, no)) << no;
  }
}

TEST(JsonSchemaRegex, UnsupportedSchemasAreRefusedNamingTheKeywordAndWhere) {
  struct Case {
    std::string schema, expect;
  } cases[] = {
      {R"({"type": "string", "pattern": "x"})", "the keyword \"pattern\" is not supported (at the root)"},
      {R"({"type": "object", "properties": {"a": {"$ref": "#"}}})", "the keyword \"$ref\" is not supported (at /properties/a)"},
      {R"({"type": "integer", "minimum": 0})", "the keyword \"minimum\" is not supported"},
      {R"({})", "a schema needs a type, enum, const, anyOf or oneOf"},
      {R"(true)", "a schema must be a JSON object"},
      {R"({"type": "array"})", "an array needs items"},
      {R"({"type": "array", "items": {"type": "integer"}, "maxItems": 5000})", "maxItems must be an integer in [0, 1000] (at /maxItems)"},
      {R"({"type": "string", "minLength": 5, "maxLength": 2})", "maxLength is below minLength"},
      {R"({"type": "object", "required": ["z"]})", "\"z\" is required but not in properties (at /required)"},
      {R"({"type": "date"})", "\"date\" is not a JSON Schema type (at /type)"},
      {R"({"enum": []})", "enum must be a non-empty array (at /enum)"},
      {R"({"anyOf": [{"type": "integer"}, {"format": "email"}]})", "the keyword \"format\" is not supported (at /anyOf/1)"},
      {R"({"type": "string", "enum": [1, 2]})", "no value of enum is valid under the schema's other keywords (at the root)"},
      {R"({"type": "object", "properties": {"a": {"const": "abc", "maxLength": 2}}})", "const's value is not valid under the schema's other keywords (at /properties/a)"},
      {R"({"enum": ["a"], "minLength": -1})", "minLength must be an integer in [0, 1000] (at /minLength)"},
      {R"({"enum": ["a"], "anyOf": [{"type": "text"}]})", "\"text\" is not a JSON Schema type (at /anyOf/0/type)"},
      {R"({"type": "object", "anyOf": [{"type": "object"}]})", "\"type\" next to anyOf is not supported: move it into each of anyOf's schemas"},
      {R"({"oneOf": [{"type": "null"}], "maxLength": 3, "title": "t"})", "\"maxLength\" next to oneOf is not supported"},
      {"{\"type\": ", "guided_json is not valid JSON"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.schema);
    auto r = JsonSchemaRegex(c.schema, "guided_json");
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message().rfind("guided_json", 0), 0u) << r.status().message();
    EXPECT_NE(r.status().message().find(c.expect), std::string::npos) << r.status().message();
  }
  std::string deep = R"({"type": "integer"})";
  for (int i = 0; i < 20; ++i) deep = R"({"type": "array", "items": )" + deep + "}";
  auto r = JsonSchemaRegex(deep, "guided_json");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("schemas nest deeper than 16"), std::string::npos) << r.status().message();
}

// Random logits, the person schema's guide: whatever ends with EOS parses as
// JSON and fits the schema.
TEST(JsonSchemaRegex, GuidedSamplingWritesJsonThatFitsTheSchema) {
  auto guide = SchemaGuide(kPerson);
  ASSERT_NE(guide, nullptr);
  constexpr int64_t kEos = 257;
  std::mt19937 rng(5);
  std::normal_distribution<float> noise(0, 3);
  int complete = 0;
  for (uint64_t seed = 0; seed < 100; ++seed) {
    SamplingParams p;
    p.temperature = 1;
    p.seed = seed;
    p.guide = guide;
    p.guide_eos_id = kEos;
    p.eos_id = kEos;
    Sampler s(p);
    std::string text;
    bool ended = false;
    for (int i = 0; i < 400 && !ended; ++i) {
      std::vector<float> l(258);
      for (auto& v : l) v = noise(rng);
      l['"'] += 3;  // lean towards short strings, so most runs end within the limit
      l['}'] += 3;
      const int64_t t = s.Sample(l);
      ended = t == kEos;
      if (!ended) text += static_cast<char>(t);
    }
    if (!ended) continue;
    ++complete;
    SCOPED_TRACE(text);
    nlohmann::json j;
    ASSERT_NO_THROW(j = nlohmann::json::parse(text));
    ASSERT_TRUE(j.is_object());
    ASSERT_TRUE(j.contains("name") && j["name"].is_string());
    EXPECT_LE(j["name"].get<std::string>().size(), 8u * 6);  // 8 characters, escapes included
    ASSERT_TRUE(j.contains("age") && j["age"].is_number_integer());
    for (const auto& [key, value] : j.items()) {
      EXPECT_TRUE(key == "name" || key == "age" || key == "tags" || key == "ok" || key == "note" || key == "score") << key;
    }
    if (j.contains("tags")) {
      ASSERT_TRUE(j["tags"].is_array());
      EXPECT_LE(j["tags"].size(), 3u);
    }
    if (j.contains("ok")) {
      EXPECT_TRUE(j["ok"].is_boolean());
    }
    if (j.contains("note")) {
      EXPECT_TRUE(j["note"].is_string() || j["note"].is_null());
    }
    if (j.contains("score")) {
      EXPECT_TRUE(j["score"].is_number() || j["score"] == "n/a");
    }
  }
  EXPECT_GT(complete, 50);
}

}  // namespace
}  // namespace modserve
