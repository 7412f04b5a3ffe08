// Tests for the small torch-free pieces: tokenizer, sampler, token logprobs, flags, LR schedule.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <set>

#include "engine/flags.h"
#include "engine/lr_schedule.h"
#include "engine/sampler.h"
#include "engine/token_logprobs.h"
#include "engine/tokenizer.h"

namespace modserve {
namespace {

TEST(ByteTokenizer, EncodesUtf8BytesAndDropsSpecialsOnDecode) {
  ByteTokenizer t(256, 257);
  const std::string text = "h\xc3\xa9!";  // "hé!"
  auto ids = t.Encode(text, /*add_bos=*/true);
  EXPECT_EQ(ids, (std::vector<int64_t>{256, 'h', 0xc3, 0xa9, '!'}));
  ids.push_back(257);
  EXPECT_EQ(t.Decode(ids), text);
}

TEST(Sampler, GreedyPicksTheFirstMaximum) {
  Sampler s(SamplingParams{});
  EXPECT_EQ(s.Sample({0.1f, 3.0f, 3.0f, -1.0f}), 1);
}

TEST(Sampler, SameSeedSameTokensAndTopKOneIsGreedy) {
  std::vector<float> logits(50);
  for (size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>((i * 37) % 11) * 0.3f;
  SamplingParams p;
  p.temperature = 1.0;
  p.seed = 42;
  Sampler a(p), b(p);
  std::vector<int64_t> ta, tb;
  for (int i = 0; i < 100; ++i) {
    ta.push_back(a.Sample(logits));
    tb.push_back(b.Sample(logits));
  }
  EXPECT_EQ(ta, tb);
  EXPECT_GT(std::set<int64_t>(ta.begin(), ta.end()).size(), 1u) << "temperature 1 explores";
  p.top_k = 1;
  Sampler k1(p);
  Sampler greedy(SamplingParams{});
  for (int i = 0; i < 20; ++i) EXPECT_EQ(k1.Sample(logits), greedy.Sample(logits));
}

TEST(Sampler, TopPKeepsOnlyTheNucleus) {
  SamplingParams p;
  p.temperature = 1.0;
  p.top_p = 0.5;
  p.seed = 3;
  Sampler s(p);
  // Token 2 holds ~88% of the mass: the 0.5 nucleus is token 2 alone.
  for (int i = 0; i < 50; ++i) EXPECT_EQ(s.Sample({0.0f, 0.0f, 3.0f, 0.0f}), 2);
}

TEST(TokenLogprobs, LogSoftmaxOfTheRawLogitsWithTheTopInOrder) {
  // Large logits: a naive exp would overflow float.
  const std::vector<float> logits = {1000.f, 1002.f, 999.f, 1002.f, -std::numeric_limits<float>::infinity()};
  const TokenLogprobs r = ComputeTokenLogprobs(logits, /*token=*/2, /*top_n=*/3);
  double z = 0;
  for (float l : logits) z += std::exp(static_cast<double>(l) - 1002.0);
  auto expect = [&](int64_t id) { return static_cast<double>(logits[static_cast<size_t>(id)]) - 1002.0 - std::log(z); };
  EXPECT_EQ(r.chosen.token, 2);
  EXPECT_NEAR(r.chosen.logprob, expect(2), 1e-6);
  ASSERT_EQ(r.top.size(), 3u);
  EXPECT_EQ(r.top[0].token, 1) << "ties go to the lower id";
  EXPECT_EQ(r.top[1].token, 3);
  EXPECT_EQ(r.top[2].token, 0);
  for (const auto& t : r.top) EXPECT_NEAR(t.logprob, expect(t.token), 1e-6);
  EXPECT_EQ(r.top[0].logprob, r.top[1].logprob);

  const TokenLogprobs all = ComputeTokenLogprobs(logits, 4, 99);  // capped at the vocabulary
  ASSERT_EQ(all.top.size(), logits.size());
  double mass = 0;
  for (const auto& t : all.top) mass += std::exp(static_cast<double>(t.logprob));
  EXPECT_NEAR(mass, 1.0, 1e-6);
  EXPECT_EQ(all.chosen.logprob, -std::numeric_limits<float>::infinity());
  EXPECT_EQ(all.top.back().token, 4);
  EXPECT_TRUE(ComputeTokenLogprobs(logits, 0, 0).top.empty());
}

TEST(Flags, ParsesAndRejectsUnknownFlags) {
  Flags f;
  f.Define("steps", "10", "steps");
  f.Define("dense", "false", "dense", true);
  f.Define("name", "", "name");
  const char* argv[] = {"prog", "--steps=20", "--dense", "--name", "x"};
  ASSERT_TRUE(f.Parse(5, const_cast<char**>(argv)).ok());
  EXPECT_EQ(*f.Int("steps"), 20);
  EXPECT_TRUE(f.Bool("dense"));
  EXPECT_EQ(f.Str("name"), "x");
  Flags g;
  g.Define("steps", "10", "steps");
  const char* bad[] = {"prog", "--stepz", "3"};
  Status st = g.Parse(3, const_cast<char**>(bad));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.message().find("--stepz"), std::string::npos);
  const char* notint[] = {"prog", "--steps", "ten"};
  ASSERT_TRUE(g.Parse(3, const_cast<char**>(notint)).ok());
  EXPECT_FALSE(g.Int("steps").ok());
}

TEST(Flags, ToolFlagsHandleHelp) {
  Flags f("prog", "does things");
  f.Define("steps", "10", "steps");
  const char* argv[] = {"prog", "--help"};
  ::testing::internal::CaptureStdout();
  ASSERT_TRUE(f.Parse(2, const_cast<char**>(argv)).ok());
  const std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_TRUE(f.help_requested());
  EXPECT_NE(out.find("usage: prog"), std::string::npos);
  EXPECT_NE(out.find("--steps"), std::string::npos);
}

TEST(LrSchedule, WarmsUpThenDecaysToTheFloor) {
  EXPECT_DOUBLE_EQ(WarmupCosineLr(0, 10, 100, 1.0, 0.1), 0.1);
  EXPECT_DOUBLE_EQ(WarmupCosineLr(9, 10, 100, 1.0, 0.1), 1.0);
  EXPECT_DOUBLE_EQ(WarmupCosineLr(10, 10, 100, 1.0, 0.1), 1.0);
  EXPECT_NEAR(WarmupCosineLr(55, 10, 100, 1.0, 0.1), 0.55, 1e-12);
  EXPECT_NEAR(WarmupCosineLr(100, 10, 100, 1.0, 0.1), 0.1, 1e-12);
}

}  // namespace
}  // namespace modserve
