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

TEST(Sampler, RepetitionPenaltyCoversThePromptAndTheOutput) {
  SamplingParams p;
  p.repetition_penalty = 2.0;
  Sampler s(p, /*prompt=*/{0, 3});
  // Token 0 (in the prompt): 2 / 2 = 1 < 1.5; token 3: -1 * 2 = -2.
  EXPECT_EQ(s.Sample({2.0f, 1.5f, 0.0f, -1.0f}), 1);
  // Token 1 is output now: 1.5 / 2 = 0.75 and 1.4 / 2 = 0.7 < token 2's 0.8.
  EXPECT_EQ(s.Sample({1.4f, 1.5f, 0.8f, -1.0f}), 2);
  Sampler plain(SamplingParams{}, {0, 3});
  EXPECT_EQ(plain.Sample({2.0f, 1.5f, 0.0f, -1.0f}), 0);
  // Below 1 it favours them: -1 * 0.5 = -0.5 beats -0.6.
  p.repetition_penalty = 0.5;
  Sampler favour(p, {3});
  EXPECT_EQ(favour.Sample({-0.6f, -2.0f, -2.0f, -1.0f}), 3);
}

TEST(Sampler, FrequencyAndPresencePenaltiesCountTheOutput) {
  // Greedy picks over the rows `rows`, with the penalties, after a prompt of
  // three 0s (which counts for the repetition penalty only).
  auto run = [](double frequency, double presence, double repetition, const std::vector<std::vector<float>>& rows) {
    SamplingParams p;
    p.frequency_penalty = frequency;
    p.presence_penalty = presence;
    p.repetition_penalty = repetition;
    Sampler s(p, /*prompt=*/{0, 0, 0});
    std::vector<int64_t> out;
    for (const auto& row : rows) out.push_back(s.Sample(row));
    return out;
  };
  const std::vector<float> same = {1.0f, 0.0f};
  // Token 0 after n picks: 1 - 0.6 n, so 1.0, 0.4, then -0.2 < 0.
  EXPECT_EQ(run(0.6, 0.0, 1.0, {same, same, same}), (std::vector<int64_t>{0, 0, 1}));
  // Presence once per token, not per occurrence: 1 - 1.5 = -0.5 < 0; then
  // both are penalized, -0.5 > -1.5, and token 0 stays at -0.5 (per
  // occurrence it would be 1 - 3 = -2 < -1.5).
  EXPECT_EQ(run(0.0, 1.5, 1.0, {same, same, same, same}), (std::vector<int64_t>{0, 1, 0, 0}));
  // Negative: repeats favoured. Row 2 prefers token 1, but 0 + 2 > 1.
  EXPECT_EQ(run(-2.0, 0.0, 1.0, {same, {0.0f, 1.0f}}), (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(run(0.0, 0.0, 1.0, {same, {0.0f, 1.0f}}), (std::vector<int64_t>{0, 1}));
  // The repetition penalty comes first, and once for a token in both prompt
  // and output: token 0 at 2.0 is 2 / 2 - 0.5 = 0.5 < 0.6 (the other order
  // gives 0.75 > 0.6).
  EXPECT_EQ(run(0.5, 0.0, 2.0, {{2.0f, 0.0f}, {2.0f, 0.6f}}), (std::vector<int64_t>{0, 1}));
  // Repetition alone, token 0 in prompt and output: 2 / 2 = 1.0 > 0.9 (a
  // double division gives 0.5 < 0.9).
  EXPECT_EQ(run(0.0, 0.0, 2.0, {{2.0f, 0.0f}, {2.0f, 0.9f}}), (std::vector<int64_t>{0, 0}));
  // The prompt is not output: with the repetition penalty on, the frequency
  // penalty still sees no 0s before the first pick (1.8 / 2 = 0.9 > 0.8).
  EXPECT_EQ(run(2.0, 0.0, 2.0, {{1.8f, 0.8f}}), (std::vector<int64_t>{0}));
  // Sampling with penalties keeps the same-seed guarantee.
  SamplingParams p;
  p.temperature = 1.0;
  p.seed = 11;
  p.frequency_penalty = 0.5;
  p.repetition_penalty = 1.3;
  Sampler a(p, {5}), b(p, {5});
  const std::vector<float> wide(16, 0.25f);
  for (int i = 0; i < 40; ++i) EXPECT_EQ(a.Sample(wide), b.Sample(wide));
}

TEST(Sampler, MinTokensHoldsBackEosUntilThatManyPicks) {
  SamplingParams p;
  p.min_tokens = 3;
  p.eos_id = 2;
  Sampler s(p);
  const std::vector<float> eos_first = {0.5f, 0.0f, 9.0f};
  // Picks 1 and 2 and 3 come before min_tokens is reached for pick 4.
  EXPECT_EQ(s.Sample(eos_first), 0);
  EXPECT_EQ(s.Sample(eos_first), 0);
  EXPECT_EQ(s.Sample(eos_first), 0);
  EXPECT_EQ(s.Sample(eos_first), 2) << "the 4th pick may end the request";
  // Sampling never draws EOS while held back, however likely it is.
  p.temperature = 2.0;
  p.min_tokens = 200;
  p.seed = 9;
  Sampler t(p);
  for (int i = 0; i < 200; ++i) EXPECT_NE(t.Sample({0.0f, 0.0f, 5.0f}), 2);
  p.eos_id = -1;  // ignore_eos: nothing to hold back
  Sampler u(p);
  bool drew_eos = false;
  for (int i = 0; i < 50; ++i) drew_eos |= u.Sample({0.0f, 0.0f, 5.0f}) == 2;
  EXPECT_TRUE(drew_eos);
}

TEST(Sampler, MinTokensHoldsBackTheStopTokenIdsToo) {
  SamplingParams p;
  p.min_tokens = 2;
  p.stop_token_ids = {1, 3};  // no EOS id: the stop ids alone are held
  Sampler s(p);
  const std::vector<float> stops_first = {0.0f, 9.0f, 0.5f, 8.0f};
  EXPECT_EQ(s.Sample(stops_first), 2);
  EXPECT_EQ(s.Sample(stops_first), 2);
  EXPECT_EQ(s.Sample(stops_first), 1) << "from the 3rd pick on a stop id may be picked";
}

TEST(Sampler, MinPKeepsTokensAtLeastThatFractionOfTheMostLikely) {
  // At temperature 1 the relative probabilities are e^(l - max): ids 0 and 1
  // at 1 and e^-0.5 = 0.61, id 2 at e^-1 = 0.37, id 3 at e^-3 = 0.05.
  const std::vector<float> logits = {2.0f, 1.5f, 1.0f, -1.0f};
  auto drawn = [&](double min_p, double top_p, int64_t top_k) {
    SamplingParams p;
    p.temperature = 1.0;
    p.min_p = min_p;
    p.top_p = top_p;
    p.top_k = top_k;
    p.seed = 3;
    Sampler s(p);
    std::vector<int> seen(logits.size(), 0);
    for (int i = 0; i < 2000; ++i) ++seen[static_cast<size_t>(s.Sample(logits))];
    return seen;
  };
  auto ids = [](const std::vector<int>& seen) {
    std::vector<int64_t> out;
    for (size_t i = 0; i < seen.size(); ++i) {
      if (seen[i] > 0) out.push_back(static_cast<int64_t>(i));
    }
    return out;
  };
  EXPECT_EQ(ids(drawn(0.0, 1.0, 0)), (std::vector<int64_t>{0, 1, 2, 3})) << "no cut";
  EXPECT_EQ(ids(drawn(0.5, 1.0, 0)), (std::vector<int64_t>{0, 1})) << "0.37 < 0.5";
  EXPECT_EQ(ids(drawn(0.3, 1.0, 0)), (std::vector<int64_t>{0, 1, 2}));
  EXPECT_EQ(ids(drawn(1.0, 1.0, 0)), (std::vector<int64_t>{0})) << "min_p 1 keeps only the most likely";
  EXPECT_EQ(ids(drawn(0.3, 1.0, 2)), (std::vector<int64_t>{0, 1})) << "top_k cuts too";
  // top_p applies to what min_p left, renormalized: ids 0 and 1 hold
  // 1 / 1.61 = 0.62 of it, so top_p 0.6 keeps id 0 alone. Without min_p
  // id 0 holds 1 / 2.03 = 0.49 and top_p 0.6 keeps ids 0 and 1.
  EXPECT_EQ(ids(drawn(0.5, 0.6, 0)), (std::vector<int64_t>{0}));
  EXPECT_EQ(ids(drawn(0.0, 0.6, 0)), (std::vector<int64_t>{0, 1}));
  // The kept ids are drawn in proportion: id 1 about 0.61 / 1.61 = 38%.
  const std::vector<int> two = drawn(0.5, 1.0, 0);
  EXPECT_NEAR(two[1] / 2000.0, 0.38, 0.04);
  // A higher temperature flattens the row, so the same min_p keeps more.
  SamplingParams hot;
  hot.temperature = 2.0;
  hot.min_p = 0.5;
  Sampler h(hot);
  bool drew_2 = false;
  for (int i = 0; i < 500; ++i) drew_2 |= h.Sample(logits) == 2;
  EXPECT_TRUE(drew_2) << "at temperature 2 id 2 is at e^-0.5 = 0.61 of the most likely";
}

TEST(Sampler, LogitBiasIsAddedBeforeThePenalties) {
  SamplingParams p;
  p.logit_bias = {{1, 1.0f}, {7, 50.0f}};  // id 7 is outside the row: ignored
  Sampler s(p);
  EXPECT_EQ(s.Sample({1.5f, 1.0f, 0.0f}), 1) << "1 + 1 > 1.5";
  p.logit_bias = {{0, -100.0f}};
  Sampler ban(p);
  EXPECT_EQ(ban.Sample({50.0f, 0.0f, 0.0f}), 1);
  // Bias first, then the repetition penalty on the biased logit: token 0 in
  // the prompt at (1 + 3) / 2 = 2 > 1.9; the other order, 1 / 2 + 3 = 3.5,
  // would also win, so compare with 2.1: 2 < 2.1 picks token 1.
  p.logit_bias = {{0, 3.0f}};
  p.repetition_penalty = 2.0;
  Sampler order(p, /*prompt=*/{0});
  EXPECT_EQ(order.Sample({1.0f, 2.1f}), 1);
  Sampler order2(p, {0});
  EXPECT_EQ(order2.Sample({1.0f, 1.9f}), 0);
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
  EXPECT_TRUE(ComputeTokenLogprobs(logits, 0, -3).top.empty());

  // A NaN logit counts as -inf: last in the order, and the rest unharmed.
  const std::vector<float> with_nan = {0.f, std::numeric_limits<float>::quiet_NaN(), 1.f};
  const TokenLogprobs n = ComputeTokenLogprobs(with_nan, 2, 3);
  EXPECT_EQ(n.top[0].token, 2);
  EXPECT_EQ(n.top[2].token, 1);
  EXPECT_EQ(n.top[2].logprob, -std::numeric_limits<float>::infinity());
  EXPECT_NEAR(n.chosen.logprob, 1.0 - std::log(1.0 + std::exp(1.0)), 1e-6);
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
  // A boolean is bare, or takes "true"/"false" after it (not other words).
  Flags b;
  b.Define("dense", "false", "dense", true);
  b.Define("fast", "true", "fast", true);
  const char* bools[] = {"prog", "--dense", "--fast", "false", "word"};
  ASSERT_TRUE(b.Parse(5, const_cast<char**>(bools)).ok());
  EXPECT_TRUE(b.Bool("dense"));
  EXPECT_FALSE(b.Bool("fast"));
  EXPECT_EQ(b.positional(), std::vector<std::string>{"word"});
  Flags b2;
  b2.Define("dense", "false", "dense", true);
  const char* bad_bool[] = {"prog", "--dense=1"};
  Status sb = b2.Parse(2, const_cast<char**>(bad_bool));
  ASSERT_FALSE(sb.ok());
  EXPECT_NE(sb.message().find("--dense takes true or false"), std::string::npos) << sb.message();
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
