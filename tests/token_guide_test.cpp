// TokenGuide (guided decoding's automaton) and the Sampler under a guide:
// patterns match what std::regex matches (a randomized cross-check on ASCII
// patterns and strings, and a table with UTF-8), unsupported syntax is
// refused naming the offset, oversized automata are refused, and a guided
// sampler only ever produces matches, ending with EOS where the match is
// complete.
#include <gtest/gtest.h>

#include <random>
#include <regex>
#include <string>
#include <vector>

#include "engine/generation_state.h"
#include "engine/sampler.h"
#include "engine/token_guide.h"

namespace modserve {
namespace {

constexpr int64_t kEos = 257;

std::shared_ptr<const TokenGuide> Guide(const std::string& pattern) {
  auto g = TokenGuide::FromRegex(pattern);
  EXPECT_TRUE(g.ok()) << pattern << ": " << g.status().ToString();
  return g.ok() ? *g : nullptr;
}

bool Matches(const TokenGuide& g, const std::string& text) {
  const int32_t s = g.Walk(text);
  return s >= 0 && g.Accepting(s);
}

TEST(TokenGuide, MatchesWholeTextsLikeARegexEngine) {
  struct Case {
    std::string pattern;
    std::vector<std::string> yes, no;
  } cases[] = {
      {"[0-9]{3}-[0-9]{4}", {"555-1234"}, {"555-123", "5551234", "555-12345", "a55-1234"}},
      {"(cat|dog)s?", {"cat", "dogs"}, {"cats!", "catdog", ""}},
      {"yes|no", {"yes", "no"}, {"yesno", "y", "maybe"}},
      {"\\d+(\\.\\d+)?", {"3", "3.14"}, {"3.", ".5", "3.1.4"}},
      {"[A-Z][a-z]*", {"H", "Hello"}, {"hello", "HeLlo"}},
      {"[^a-z]+", {"ABC", "\xC3\xA9", "1 2"}, {"aB", ""}},  // a negated class takes UTF-8 characters too
      {".", {"a", "\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x98\x80"}, {"\n", "ab", "", "\xC3"}},
      {"\\w+@\\w+\\.com", {"a_b@c9.com"}, {"a b@c.com", "a@b.org"}},
      {"x{2,3}", {"xx", "xxx"}, {"x", "xxxx"}},
      {"x{2,}", {"xx", "xxxxxxx"}, {"x"}},
      {"(?:ab){0}c", {"c"}, {"abc"}},
      {"^h\xC3\xA9+$", {"h\xC3\xA9", "h\xC3\xA9\xC3\xA9"}, {"h", "he"}},
      {"\\u00e9|\\x41", {"\xC3\xA9", "A"}, {"e"}},
      {"[\xC3\xA9\xC3\xBC]x", {"\xC3\xA9x", "\xC3\xBCx"}, {"ex", "\xC3x"}},
      {"\\{\\}\\[\\]\\(\\)\\*\\+\\?\\|\\.\\\\\\^\\$", {"{}[]()*+?|.\\^$"}, {""}},
      {"\\s\\S\\D\\W", {" xa!", "\tx-\xC3\xA9"}, {"  a!", " x1!", " xa_"}},
      {"", {""}, {"a"}},
      {"a*", {"", "aaaa"}, {"b"}},
      {"(a|)b", {"ab", "b"}, {"a"}},
      {"[-a]z[a-]", {"-za", "az-"}, {"bzb"}},
      {"}]", {"}]"}, {""}},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.pattern);
    auto g = Guide(c.pattern);
    ASSERT_NE(g, nullptr);
    for (const auto& t : c.yes) EXPECT_TRUE(Matches(*g, t)) << "\"" << t << "\"";
    for (const auto& t : c.no) EXPECT_FALSE(Matches(*g, t)) << "\"" << t << "\"";
  }
}

// Random patterns over a small alphabet and the syntax both engines share,
// random strings: our whole-match answer is std::regex_match's.
TEST(TokenGuide, AgreesWithStdRegexOnRandomPatternsAndStrings) {
  std::mt19937 rng(7);
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  // Unbounded quantifiers only on single characters: std::regex backtracks,
  // and nested unbounded loops would take it exponential time.
  std::function<std::string(int)> gen = [&](int depth) -> std::string {
    std::string out;
    const int parts = 1 + pick(3);
    for (int i = 0; i < parts; ++i) {
      static const char* kLeafQuant[] = {"", "", "*", "+", "?", "{2}", "{1,2}", "{0,}"};
      static const char* kGroupQuant[] = {"", "", "?", "{2}", "{0,2}"};
      switch (depth > 1 ? pick(3) : pick(6)) {
        case 0: out += std::string(1, "abc"[pick(3)]) + kLeafQuant[pick(8)]; break;
        case 1: out += std::string(pick(2) ? "[ab]" : "[^a]") + kLeafQuant[pick(8)]; break;
        case 2: out += std::string(".") + kLeafQuant[pick(8)]; break;
        case 3: out += "(" + gen(depth + 1) + ")" + kGroupQuant[pick(5)]; break;
        case 4: out += "(" + gen(depth + 1) + "|" + gen(depth + 1) + ")" + kGroupQuant[pick(5)]; break;
        default: out += "(?:" + gen(depth + 1) + ")" + kGroupQuant[pick(5)]; break;
      }
    }
    return out;
  };
  int matched = 0, total = 0, refused = 0;
  for (int p = 0; p < 300; ++p) {
    const std::string pattern = gen(0);
    SCOPED_TRACE(pattern);
    auto compiled = TokenGuide::FromRegex(pattern);
    if (!compiled.ok()) {  // only a pattern whose automaton is too big may be refused
      EXPECT_NE(compiled.status().message().find("too complex"), std::string::npos) << compiled.status().message();
      ++refused;
      continue;
    }
    const auto& g = *compiled;
    const std::regex ref(pattern, std::regex::ECMAScript);
    for (int s = 0; s < 40; ++s) {
      std::string text;
      const int len = pick(7);
      for (int i = 0; i < len; ++i) text += "abcd"[pick(4)];
      const bool want = std::regex_match(text, ref);
      EXPECT_EQ(Matches(*g, text), want) << "\"" << text << "\"";
      matched += want;
      ++total;
    }
  }
  EXPECT_GT(matched, total / 20) << "the random cases should match often enough to mean something";
  // Those refused nest overlapping unbounded repeats of "." (1 of 300 when written).
  EXPECT_LE(refused, 10) << "nearly every random pattern compiles";
}

TEST(TokenGuide, ChoicesMatchExactlyOneOfThem) {
  auto g = TokenGuide::FromChoices({"yes", "no", "n/a", "y\xC3\xA9s"});
  ASSERT_TRUE(g.ok());
  for (std::string t : {"yes", "no", "n/a", "y\xC3\xA9s"}) EXPECT_TRUE(Matches(**g, t)) << t;
  for (std::string t : {"ye", "yesno", "n", ""}) EXPECT_FALSE(Matches(**g, t)) << t;
  // Special characters are literal in a choice.
  auto lit = TokenGuide::FromChoices({"a.b*"});
  ASSERT_TRUE(lit.ok());
  EXPECT_TRUE(Matches(**lit, "a.b*"));
  EXPECT_FALSE(Matches(**lit, "axb"));
  EXPECT_FALSE(TokenGuide::FromChoices({}).ok());
}

TEST(TokenGuide, UnsupportedOrBrokenPatternsAreRefusedNamingTheOffset) {
  struct Case {
    std::string pattern, expect;
  } cases[] = {
      {"(ab", "unclosed ( at offset 0"},
      {"ab)", "unmatched ) at offset 2"},
      {"*a", "nothing to repeat before * at offset 0"},
      {"a|+", "nothing to repeat before + at offset 2"},
      {"a{2,1}", "{n,m} has m < n at offset 1"},
      {"a{1001}", "a repeat count is over 1000 at offset 1"},
      {"a{x}", "{ must be {n}, {n,} or {n,m}"},
      {"{3}", "{ must follow something to repeat"},
      {"[z-a]", "the class range is reversed at offset 1"},
      {"[abc", "unclosed [ at offset 0"},
      {"[]", "[] is an empty class"},
      {"[\xC3\xA9-\xC3\xBC]", "ranges of non-ASCII characters are not supported in a class at offset 1"},
      {"[^\xC3\xA9]", "a negated class can list only ASCII characters"},
      {"[\\D]", "\\D is not supported inside a class"},
      {"\\bword", "\\b is not supported"},
      {"(a)\\1", "\\1 is not supported"},
      {"a\\", "a pattern can not end in a lone \\ at offset 1"},
      {"(?=a)", "(? groups other than (?: ) are not supported"},
      {"a+?", "lazy and possessive quantifiers are not supported at offset 2"},
      {"a**", "a quantifier can not follow a quantifier at offset 2"},
      {"a^b", "^ is supported only at the start of the pattern at offset 1"},
      {"a$b", "$ is supported only at the end of the pattern at offset 1"},
      {"\\xZZ", "\\x needs 2 and \\u 4 hex digits at offset 0"},
      {"\\ud800", "\\u names a surrogate"},
      {"ab\xFF", "not valid UTF-8 at offset 2"},
      {std::string(101, '(') + std::string(101, ')'), "groups nest deeper than 100 at offset 100"},
      {"(a{1000}){1000}", "is too large: it would need over 50000 automaton states"},
      {"(a|b)*a(a|b){14}", "is too complex: its automaton would need over 16384 states"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.pattern);
    auto g = TokenGuide::FromRegex(c.pattern, "guided_regex");
    ASSERT_FALSE(g.ok());
    EXPECT_EQ(g.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(g.status().message().rfind("guided_regex", 0), 0u) << g.status().message();
    EXPECT_NE(g.status().message().find(c.expect), std::string::npos) << g.status().message();
  }
  // A smaller version of the exploding pattern compiles: the limit is the automaton's size.
  EXPECT_TRUE(TokenGuide::FromRegex("(a|b)*a(a|b){8}").ok());
}

TEST(TokenGuide, EveryKeptStateCanStillReachAMatch) {
  // "ab|ac" and "a(b|c)": after "a", only b and c; after "ab", only the end.
  auto g = Guide("ab|ac|a(d|e)f");
  ASSERT_NE(g, nullptr);
  const int32_t a = g->Walk("a");
  ASSERT_GE(a, 0);
  std::string next;
  for (int b = 0; b < 256; ++b) {
    if (g->Next(a, static_cast<uint8_t>(b)) >= 0) next += static_cast<char>(b);
  }
  EXPECT_EQ(next, "bcde");
  const int32_t ab = g->Walk("ab");
  EXPECT_TRUE(g->Accepting(ab));
  for (int b = 0; b < 256; ++b) EXPECT_LT(g->Next(ab, static_cast<uint8_t>(b)), 0);
  EXPECT_FALSE(g->Accepting(g->Walk("ad")));
}

// --- the sampler under a guide -------------------------------------------------

SamplingParams Guided(const std::string& pattern) {
  SamplingParams p;
  p.guide = Guide(pattern);
  p.guide_eos_id = kEos;
  p.eos_id = kEos;
  return p;
}

// Samples until EOS (or `limit` tokens); returns the bytes.
std::string SampleText(Sampler& s, const std::function<std::vector<float>(int)>& logits, int limit = 64, bool* ended = nullptr) {
  std::string text;
  for (int i = 0; i < limit; ++i) {
    const int64_t t = s.Sample(logits(i));
    if (t == kEos) {
      if (ended != nullptr) *ended = true;
      return text;
    }
    EXPECT_LT(t, 256) << "a guided sampler picked a non-byte id other than EOS";
    text += static_cast<char>(t);
  }
  if (ended != nullptr) *ended = false;
  return text;
}

TEST(SamplerGuide, GreedyFollowsTheGuideAgainstTheLogitsAndEndsWithEos) {
  // The logits prefer 'z' and EOS; the guide allows neither until "555-1234" is complete.
  std::vector<float> l(258, 0.0f);
  l['z'] = 10;
  l[kEos] = 9;
  l['5'] = 1;
  Sampler s(Guided("[0-9]{3}-[0-9]{4}"));
  bool ended = false;
  EXPECT_EQ(SampleText(s, [&](int) { return l; }, 64, &ended), "555-5555");
  EXPECT_TRUE(ended) << "EOS is allowed, and most likely, once the match is complete";
}

TEST(SamplerGuide, RandomSamplingOnlyEverProducesMatches) {
  const std::string pattern = "(yes|no|maybe)(, [a-z]{1,4}\\d?)*!";
  const std::regex ref(pattern);
  std::mt19937 rng(11);
  int ended = 0;
  for (uint64_t seed = 0; seed < 200; ++seed) {
    SamplingParams p = Guided(pattern);
    p.temperature = 1.0;
    p.top_k = 50;
    p.seed = seed;
    Sampler s(p);
    bool done = false;
    std::normal_distribution<float> noise(0, 2);
    const std::string text = SampleText(s, [&](int) {
      std::vector<float> l(258);
      for (auto& v : l) v = noise(rng);
      return l;
    }, 80, &done);
    if (done) {
      ++ended;
      EXPECT_TRUE(std::regex_match(text, ref)) << "\"" << text << "\"";
    } else {
      // Cut off by the limit: still a prefix of some match.
      EXPECT_GE(p.guide->Walk(text), 0) << "\"" << text << "\"";
    }
  }
  EXPECT_GT(ended, 100);
}

TEST(SamplerGuide, MinTokensHoldsEosBackOnlyWhileTheGuideOffersMore) {
  std::vector<float> l(258, 0.0f);
  l[kEos] = 5;
  l['a'] = 1;
  {
    SamplingParams p = Guided("a*");  // complete from the start, and "a" can always follow
    p.min_tokens = 3;
    Sampler s(p);
    EXPECT_EQ(SampleText(s, [&](int) { return l; }), "aaa") << "EOS held back for 3 tokens, then picked";
  }
  {
    SamplingParams p = Guided("ab|a");  // after "ab" the guide offers only EOS
    p.min_tokens = 5;
    std::vector<float> m(258, 0.0f);
    m['b'] = 2;
    m['a'] = 1;
    Sampler s(p);
    bool ended = false;
    EXPECT_EQ(SampleText(s, [&](int) { return m; }, 64, &ended), "ab");
    EXPECT_TRUE(ended) << "a complete match with nothing more to add ends within min_tokens";
  }
}

// The sampler and the generation state as the scheduler pairs them: the EOS
// a fully matched guide forces within min_tokens ends generation as EOS
// (it used to be taken as output and sampled again until min_tokens).
TEST(SamplerGuide, TheEosAFullMatchForcesWithinMinTokensEndsGeneration) {
  for (const char* pattern : {"ab|a", "ab"}) {
    SamplingParams p = Guided(pattern);
    p.min_tokens = 5;
    std::vector<float> m(258, 0.0f);
    m['b'] = 2;
    m['a'] = 1;
    Sampler s(p);
    StopCriteria c;
    c.max_tokens = 5;
    c.min_tokens = 5;
    c.eos_id = kEos;
    GenerationState g(c);
    std::vector<bool> released;
    FinishReason r = FinishReason::kNone;
    for (int i = 0; i < 5 && r == FinishReason::kNone; ++i) {
      const int64_t t = s.Sample(m);
      released.push_back(s.released_hold());
      r = g.Add(t, s.released_hold());
    }
    EXPECT_EQ(r, FinishReason::kEos) << pattern;
    EXPECT_EQ(g.tokens(), (std::vector<int64_t>{'a', 'b', kEos})) << pattern;
    EXPECT_EQ(g.text(), "ab") << pattern;
    EXPECT_EQ(released, (std::vector<bool>{false, false, true})) << pattern;
  }
  // Without a guide the hold is never released.
  SamplingParams p;
  p.min_tokens = 3;
  p.eos_id = kEos;
  std::vector<float> l(258, 0.0f);
  l[kEos] = 5;
  Sampler s(p);
  for (int i = 0; i < 3; ++i) {
    EXPECT_NE(s.Sample(l), kEos);
    EXPECT_FALSE(s.released_hold());
  }
}

TEST(SamplerGuide, BiasAndPenaltiesCanNotLeaveTheGuide) {
  SamplingParams p = Guided("(ab)+");
  p.logit_bias = {{'z', 100.0f}, {'b', -100.0f}};
  p.repetition_penalty = 5;
  p.presence_penalty = 2;
  std::vector<float> l(258, 0.0f);
  l[kEos] = -50;
  Sampler s(p);
  bool ended = false;
  const std::string text = SampleText(s, [&](int) { return l; }, 6, &ended);
  EXPECT_EQ(text, "ababab");  // 'b' is the only move after 'a' whatever its bias
}

}  // namespace
}  // namespace modserve
