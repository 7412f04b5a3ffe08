// Scheduler tests against a fake engine (no model): continuous batching under
// the token budget, chunked prefill sharing it with decode, route-aware
// admission, preemption and recomputation, queue limits, cancellation and
// deadlines freeing KV blocks within one step, streaming text that is valid
// UTF-8 and never leaks a stop string, logprobs (of generated and of prompt
// tokens) only when asked; and the
// scheduler driven from many threads at once, as the server drives it (run
// under ThreadSanitizer).
#include "server/scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "fake_engine.h"
#include "scheduler_test_util.h"
#include "server/utf8_stream.h"
#include "server/write_dispatcher.h"

namespace modserve {
namespace {

using testing::Collected;
using testing::Expected;
using testing::FakeEngine;
using testing::Into;
using testing::RecomputedSequences;
using testing::Req;
using testing::RunUntilIdle;

TEST(Scheduler, GeneratesMaxTokensAndReportsUsage) {
  FakeEngine e(1000, 4);
  Scheduler s(&e, {});
  Collected c;
  ASSERT_TRUE(s.Submit(Req("hello", 7), Into(&c)).ok());
  RunUntilIdle(s);
  ASSERT_TRUE(c.done());
  EXPECT_TRUE(c.last().status.ok());
  EXPECT_EQ(c.last().finish_reason, FinishReason::kLength);
  EXPECT_EQ(c.text, Expected("abcdefghij", 6, 7));
  EXPECT_EQ(c.ids.size(), 7u);
  EXPECT_EQ(c.last().usage.prompt_tokens, 6);
  EXPECT_EQ(c.last().usage.completion_tokens, 7);
  // The engine processed the prompt and the 6 generated tokens fed back.
  EXPECT_EQ(c.last().usage.routed_computed() + c.last().usage.routed_skipped(), 6 + 6);
  EXPECT_EQ(e.sequences(), 0);
  EXPECT_EQ(e.FreeBlocks(), 1000);
}

TEST(Scheduler, ACachedPrefixIsNotFedAgainAndCountsAsCachedPromptTokens) {
  FakeEngine e(1000, 4);
  e.prefix_hit = 8;
  Scheduler s(&e, {});
  Collected cached, scored;
  auto h1 = s.Submit(Req("hello world", 5), Into(&cached));  // 12 prompt tokens
  GenerationRequest r = Req("hello world", 5);
  r.return_prompt_logprobs = true;
  r.cache_salt = "tenant-b";
  auto h2 = s.Submit(r, Into(&scored));
  ASSERT_TRUE(h1.ok() && h2.ok());
  RunUntilIdle(s);
  EXPECT_EQ(e.match_limits, (std::vector<int64_t>{11, 0})) << "all but the last token; none for a prompt-logprobs request";
  EXPECT_EQ(e.match_salts, (std::vector<std::string>{"", "tenant-b"})) << "each request's prefixes are cached under its salt";
  for (const Collected* c : {&cached, &scored}) {
    ASSERT_TRUE(c->done());
    EXPECT_EQ(c->text, Expected("abcdefghij", 12, 5)) << "the cached positions still count";
  }
  EXPECT_EQ(cached.last().usage.cached_prompt_tokens, 8);
  EXPECT_EQ(scored.last().usage.cached_prompt_tokens, 0);
  EXPECT_EQ(scored.updates[0].prompt_logprobs.size(), 11u);
  std::map<SeqId, int64_t> fed;
  for (const auto& step : e.steps) {
    for (const auto& c : step) fed[c.id] += static_cast<int64_t>(c.tokens.size());
  }
  EXPECT_EQ(fed[static_cast<SeqId>(*h1)], 4 + 4) << "the 4 uncached prompt tokens and 4 generated ones";
  EXPECT_EQ(fed[static_cast<SeqId>(*h2)], 12 + 4);
  EXPECT_EQ(cached.last().usage.routed_computed() + cached.last().usage.routed_skipped(), 4 + 4)
      << "usage counts the tokens processed for the request";
  EXPECT_EQ(e.FreeBlocks(), 1000);
}

TEST(Scheduler, LogprobsComeWithEachTokenOnlyWhenAsked) {
  FakeEngine e(1000, 4);  // logits: 10 for the script's next byte, 0 for the other 257 ids
  Scheduler s(&e, {});
  Collected asked, plain;
  GenerationRequest r = Req("hello", 5);
  r.return_logprobs = true;
  r.top_logprobs = 2;
  ASSERT_TRUE(s.Submit(r, Into(&asked)).ok());
  ASSERT_TRUE(s.Submit(Req("hello", 5), Into(&plain)).ok());
  RunUntilIdle(s);
  const double log_z = std::log(std::exp(10.0) + 257.0);
  size_t n = 0;
  for (const auto& u : asked.updates) {
    ASSERT_EQ(u.logprobs.size(), u.token_ids.size());
    for (size_t i = 0; i < u.logprobs.size(); ++i, ++n) {
      const TokenLogprobs& lp = u.logprobs[i];
      EXPECT_EQ(lp.chosen.token, u.token_ids[i]);
      EXPECT_NEAR(lp.chosen.logprob, 10.0 - log_z, 1e-6);
      ASSERT_EQ(lp.top.size(), 2u);
      EXPECT_EQ(lp.top[0].token, lp.chosen.token);
      EXPECT_EQ(lp.top[1].token, 0) << "of the tied ids, the lowest";
      EXPECT_NEAR(lp.top[1].logprob, -log_z, 1e-6);
    }
  }
  EXPECT_EQ(n, 5u);
  for (const auto& u : plain.updates) EXPECT_TRUE(u.logprobs.empty());
  EXPECT_EQ(plain.ids, asked.ids);
}

// Counts the layer decisions the observer has been told of.
struct CountingObserver : SchedulerObserver {
  int64_t layer_tokens = 0, requests_done = 0, running = -1;
  double kv_usage = -1;
  void OnQueueChanged(int64_t /*waiting*/, int64_t r) override { running = r; }
  void OnKvUsage(double ratio) override { kv_usage = ratio; }
  void OnStep(const StepReport& r) override {
    for (const auto& l : r.stats->layers) {
      if (l.routed) layer_tokens += l.computed + l.skipped;
    }
  }
  void OnRequestDone(FinishReason, StatusCode, double, int64_t, int64_t) override { ++requests_done; }
};

TEST(Scheduler, CountersAreRecordedBeforeTheTokensReachTheClient) {
  FakeEngine e(1000, 4);
  CountingObserver obs;
  Scheduler s(&e, {}, &obs);
  Collected c;
  int64_t seen_at_finish = -1, usage_at_finish = -1, done_at_finish = -1, running_at_finish = -1;
  double kv_at_finish = -1;
  ASSERT_TRUE(s.Submit(Req("hello", 7), [&](RequestUpdate u) {
                 if (u.finished) {
                   running_at_finish = obs.running;
                   kv_at_finish = obs.kv_usage;
                   done_at_finish = obs.requests_done;
                   seen_at_finish = obs.layer_tokens;
                   usage_at_finish = u.usage.routed_computed() + u.usage.routed_skipped();
                 }
                 Into(&c)(std::move(u));
               }).ok());
  RunUntilIdle(s);
  ASSERT_TRUE(c.done());
  EXPECT_GT(usage_at_finish, 0);
  EXPECT_EQ(seen_at_finish, usage_at_finish) << "the last step's counters were recorded before the final update";
  EXPECT_EQ(done_at_finish, 1) << "the request was counted before the final update";
  EXPECT_EQ(running_at_finish, 0) << "the running gauge dropped before the final update";
  EXPECT_EQ(kv_at_finish, 0.0) << "the request's KV blocks were shown free before the final update";
}

TEST(Scheduler, DecodeAndChunkedPrefillShareTheTokenBudget) {
  FakeEngine e(1000, 4);
  SchedulerOptions o;
  o.max_batch_tokens = 8;
  Scheduler s(&e, o);
  Collected a, b;
  ASSERT_TRUE(s.Submit(Req("ab", 20), Into(&a)).ok());
  s.Step();  // a's prefill (3 tokens)
  ASSERT_TRUE(s.Submit(Req(std::string(30, 'x'), 5), Into(&b)).ok());
  RunUntilIdle(s);
  for (const auto& step : e.steps) {
    int64_t n = 0;
    for (const auto& c : step) n += static_cast<int64_t>(c.tokens.size());
    EXPECT_LE(n, 8);
  }
  // While b's 31-token prompt is read in chunks, a decodes one token every step.
  bool saw_shared = false;
  for (const auto& step : e.steps) {
    if (step.size() == 2 && step[0].tokens.size() == 1 && step[1].tokens.size() == 7) saw_shared = true;
  }
  EXPECT_TRUE(saw_shared);
  EXPECT_EQ(a.text, Expected("abcdefghij", 3, 20));
  EXPECT_EQ(b.text, Expected("abcdefghij", 31, 5));
}

TEST(Scheduler, PrefillIsCappedWhileRequestsDecodeAndTakesTheBudgetOtherwise) {
  FakeEngine e(1000, 4);
  SchedulerOptions o;
  o.max_batch_tokens = 64;
  o.max_prefill_tokens = 5;
  Scheduler s(&e, o);
  Collected a, b, c;
  ASSERT_TRUE(s.Submit(Req(std::string(40, 'x'), 30), Into(&a)).ok());
  s.Step();  // nothing decodes yet: a's whole 41-token prompt in one chunk
  ASSERT_EQ(e.steps.size(), 1u);
  EXPECT_EQ(e.steps[0].size(), 1u);
  EXPECT_EQ(e.steps[0][0].tokens.size(), 41u);
  ASSERT_TRUE(s.Submit(Req(std::string(11, 'y'), 3), Into(&b)).ok());
  ASSERT_TRUE(s.Submit(Req(std::string(6, 'z'), 3), Into(&c)).ok());
  RunUntilIdle(s);
  // While a decodes, the prompts of b (12 tokens) and c (7) arrive at most 5
  // tokens a step, in admission order, and a still gets its token every step.
  std::vector<int64_t> prefill_per_step;
  for (size_t i = 1; i < e.steps.size(); ++i) {
    int64_t decode = 0, prefill = 0;
    for (const auto& chunk : e.steps[i]) (chunk.tokens.size() == 1 ? decode : prefill) += static_cast<int64_t>(chunk.tokens.size());
    EXPECT_LE(prefill, 5) << "step " << i;
    if (prefill > 0) {
      EXPECT_GE(decode, 1) << "step " << i;
      prefill_per_step.push_back(prefill);
    }
  }
  // 19 prompt tokens in chunks of at most 5; single last tokens count as decode.
  int64_t total = 0;
  for (int64_t p : prefill_per_step) total += p;
  EXPECT_GE(total, 19 - 2);
  EXPECT_GE(prefill_per_step.size(), 4u);
  EXPECT_EQ(a.text, Expected("abcdefghij", 41, 30));
  EXPECT_EQ(b.text, Expected("abcdefghij", 12, 3));
  EXPECT_EQ(c.text, Expected("abcdefghij", 7, 3));
}

TEST(Scheduler, FullQueueAndDrainingAreRefusedAtOnce) {
  FakeEngine e(1000, 4);
  SchedulerOptions o;
  o.max_queue = 2;
  Scheduler s(&e, o);
  Collected c[3];
  ASSERT_TRUE(s.Submit(Req("a", 3), Into(&c[0])).ok());
  ASSERT_TRUE(s.Submit(Req("b", 3), Into(&c[1])).ok());
  auto third = s.Submit(Req("c", 3), Into(&c[2]));
  ASSERT_FALSE(third.ok());
  EXPECT_EQ(third.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(third.status().message().find("queue is full"), std::string::npos);
  s.StopAdmitting();
  auto late = s.Submit(Req("d", 3), Into(&c[2]));
  EXPECT_EQ(late.status().code(), StatusCode::kUnavailable);
  RunUntilIdle(s);  // the accepted ones still finish
  EXPECT_TRUE(c[0].done() && c[0].last().status.ok());
  EXPECT_TRUE(c[1].done() && c[1].last().status.ok());
  EXPECT_TRUE(c[2].updates.empty());
}

TEST(Scheduler, RequestLargerThanThePoolIsRefusedAtSubmit) {
  FakeEngine e(10, 4);
  Scheduler s(&e, {});
  Collected c;
  auto h = s.Submit(Req(std::string(40, 'x'), 10), Into(&c));
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(h.status().message().find("KV blocks"), std::string::npos);
}

TEST(Scheduler, CancelFreesBlocksWithinOneStep) {
  FakeEngine e(1000, 4);
  Scheduler s(&e, {});
  Collected c, other;
  auto h = s.Submit(Req("hello", 100), Into(&c));
  ASSERT_TRUE(s.Submit(Req("world", 5), Into(&other)).ok());
  ASSERT_TRUE(h.ok());
  s.Step();
  s.Step();
  EXPECT_EQ(e.sequences(), 2);
  s.Cancel(*h);
  s.Step();
  ASSERT_TRUE(c.done());
  EXPECT_EQ(c.last().status.code(), StatusCode::kCancelled);
  EXPECT_EQ(e.sequences(), 1);
  RunUntilIdle(s);
  EXPECT_TRUE(other.last().status.ok());
  EXPECT_EQ(e.FreeBlocks(), 1000);
}

TEST(Scheduler, CancelWhileWaitingNeverReachesTheEngine) {
  FakeEngine e(1000, 4);
  SchedulerOptions o;
  o.max_running = 1;
  Scheduler s(&e, o);
  Collected a, b;
  ASSERT_TRUE(s.Submit(Req("a", 5), Into(&a)).ok());
  auto hb = s.Submit(Req("b", 5), Into(&b));
  s.Step();
  s.Cancel(*hb);
  RunUntilIdle(s);
  EXPECT_EQ(b.last().status.code(), StatusCode::kCancelled);
  EXPECT_TRUE(b.ids.empty());
  for (const auto& step : e.steps) {
    for (const auto& c : step) EXPECT_NE(c.id, static_cast<SeqId>(*hb));
  }
}

TEST(Scheduler, ExpiredDeadlineEndsTheRequestAndFreesBlocks) {
  FakeEngine e(1000, 4);
  Scheduler s(&e, {});
  Collected c;
  GenerationRequest r = Req("hello", 1000);
  r.deadline = Clock::now() + std::chrono::milliseconds(30);
  ASSERT_TRUE(s.Submit(std::move(r), Into(&c)).ok());
  s.Step();
  EXPECT_EQ(e.sequences(), 1);
  std::this_thread::sleep_for(std::chrono::milliseconds(40));
  s.Step();
  ASSERT_TRUE(c.done());
  EXPECT_EQ(c.last().status.code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(e.sequences(), 0);
}

// gRPC ends a call past its deadline by cancelling it: a cancel that comes
// with an expired deadline ends the request as DEADLINE_EXCEEDED (as the
// client sees it), not CANCELLED.
TEST(Scheduler, ACancelAfterTheDeadlineEndsTheRequestAsDeadlineExceeded) {
  FakeEngine e(1000, 4);
  Scheduler s(&e, {});
  Collected expired, cancelled;
  GenerationRequest r = Req("hello", 1000);
  r.deadline = Clock::now() + std::chrono::milliseconds(30);
  auto h = s.Submit(std::move(r), Into(&expired));
  auto live = s.Submit(Req("hello", 1000), Into(&cancelled));
  ASSERT_TRUE(h.ok() && live.ok());
  s.Step();
  std::this_thread::sleep_for(std::chrono::milliseconds(40));
  s.Cancel(*h);
  s.Cancel(*live);
  s.Step();
  ASSERT_TRUE(expired.done() && cancelled.done());
  EXPECT_EQ(expired.last().status.code(), StatusCode::kDeadlineExceeded) << expired.last().status.ToString();
  EXPECT_EQ(cancelled.last().status.code(), StatusCode::kCancelled) << "no deadline: a cancel is a cancel";
  EXPECT_EQ(e.sequences(), 0);
}


// Sequences preempted before their first `prompt_len` tokens had all been
// fed (then fed again from BOS).
int PreemptedMidPrompt(const FakeEngine& e, size_t prompt_len) {
  std::map<SeqId, size_t> fed;
  std::set<SeqId> hit;
  for (const auto& step : e.steps) {
    for (const auto& c : step) {
      if (c.tokens[0] == 256) {  // from position 0 (generated tokens are never BOS)
        if (fed.count(c.id) && fed[c.id] < prompt_len) hit.insert(c.id);
        fed[c.id] = 0;
      }
      fed[c.id] += c.tokens.size();
    }
  }
  return static_cast<int>(hit.size());
}

// Runs request(0) .. request(5) together on `small` (a pool too small for
// the six at once) with `step_tokens` tokens a step until all end; some of
// them must have been preempted and recomputed.
std::vector<Collected> RunSixUnderMemoryPressure(FakeEngine& small, const std::function<GenerationRequest(int)>& request,
                                                 int64_t step_tokens = 64) {
  SchedulerOptions o;
  o.max_batch_tokens = step_tokens;
  Scheduler s(&small, o);
  std::vector<Collected> got(6);
  for (int i = 0; i < 6; ++i) EXPECT_TRUE(s.Submit(request(i), Into(&got[i])).ok());
  RunUntilIdle(s);
  EXPECT_GT(RecomputedSequences(small), 0) << "some sequence was recomputed after a preemption";
  return got;
}

TEST(Scheduler, PreemptsAndRecomputesWhenBlocksRunOut) {
  // 24 blocks of 4 tokens: not enough for 6 requests of 10 + 20 tokens at once.
  FakeEngine small(24, 4);
  std::vector<Collected> got = RunSixUnderMemoryPressure(small, [](int i) { return Req("prompt" + std::to_string(i) + "xx", 20); });
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(got[i].done());
    EXPECT_TRUE(got[i].last().status.ok()) << got[i].last().status.ToString();
    EXPECT_EQ(got[i].text, Expected("abcdefghij", 10, 20)) << "request " << i;
    // Recomputed tokens are counted once.
    EXPECT_EQ(got[i].last().usage.routed_computed() + got[i].last().usage.routed_skipped(), 10 + 19);
  }
  EXPECT_EQ(small.sequences(), 0);
  EXPECT_EQ(small.FreeBlocks(), 24);
}

struct PrefixLookups : SchedulerObserver {
  int64_t calls = 0, queried = 0, hit = 0;
  void OnPrefixLookup(int64_t q, int64_t h) override {
    ++calls;
    queried += q;
    hit += h;
  }
};

TEST(Scheduler, CachedPromptTokensAndLookupsCountEachRequestsFirstRunOnlyThroughPreemption) {
  FakeEngine small(24, 4);  // as above: preemptions
  small.prefix_hit = 4;
  SchedulerOptions o;
  o.max_batch_tokens = 64;
  PrefixLookups seen;
  Scheduler s(&small, o, &seen);
  std::vector<Collected> got(6);
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(s.Submit(Req("prompt" + std::to_string(i) + "xx", 20), Into(&got[i])).ok());
  RunUntilIdle(s);
  EXPECT_GT(small.match_limits.size(), 6u) << "preempted requests looked the cache up again";
  EXPECT_EQ(seen.calls, 6) << "a recomputation is not a prompt lookup";
  EXPECT_EQ(seen.queried, 6 * 9);
  EXPECT_EQ(seen.hit, 6 * 4);
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(got[i].done());
    EXPECT_EQ(got[i].text, Expected("abcdefghij", 10, 20)) << "request " << i;
    EXPECT_EQ(got[i].last().usage.cached_prompt_tokens, 4);
    EXPECT_EQ(got[i].last().usage.routed_computed() + got[i].last().usage.routed_skipped(), 10 - 4 + 19)
        << "request " << i << ": every token it ran, once";
  }
  EXPECT_EQ(small.FreeBlocks(), 24);
}

TEST(Scheduler, PenaltiesKeepTheirCountsThroughPreemption) {
  // The fake engine's logits put 10 on its script's next byte ('a' or 'b');
  // after the repetition penalty (10 / 1.5) a frequency penalty of 2 pushes
  // a byte below the untouched ones after 4 picks, so the text depends on
  // every count the sampler kept.
  auto request = [](int i) {
    GenerationRequest r = Req("prompt" + std::to_string(i) + "xx", 20);
    r.sampling.frequency_penalty = 2.0;
    r.sampling.repetition_penalty = 1.5;
    // EOS biased above everything but held back for 15 tokens: the 16th is
    // EOS only if the sampler's pick count survives the preemptions too.
    r.sampling.logit_bias = {{257, 100.0f}};
    r.sampling.min_tokens = r.stop.min_tokens = 15;
    r.sampling.eos_id = r.stop.eos_id = 257;
    return r;
  };
  std::vector<std::vector<int64_t>> alone(6);
  for (int i = 0; i < 6; ++i) {
    FakeEngine big(1000, 4, 256, "ab");
    Scheduler s(&big, {});
    Collected c;
    ASSERT_TRUE(s.Submit(request(i), Into(&c)).ok());
    RunUntilIdle(s);
    alone[i] = c.ids;
  }
  FakeEngine small(24, 4, 256, "ab");  // too small for the 6 at once, as above
  std::vector<Collected> got = RunSixUnderMemoryPressure(small, request);
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(got[i].ids, alone[i]) << "request " << i;
    ASSERT_EQ(alone[i].size(), 16u);
    EXPECT_EQ(alone[i].back(), 257);
    EXPECT_EQ(got[i].last().finish_reason, FinishReason::kEos);
  }
  const std::string plain = Expected("ab", 10, 15);
  EXPECT_NE(std::string(alone[0].begin(), alone[0].end() - 1), plain) << "the penalties change the text";
}


// Prompt logprobs: one per prompt token after BOS, from the logits of the
// position before it, all on the update with the first token; exact through
// chunked prefill and preemption; and the engine is asked for every token's
// logits only while a request still needs them.
TEST(Scheduler, PromptLogprobsScoreEachPromptTokenOnceThroughChunksAndPreemption) {
  const std::string script = "abcdefghij";
  // Prompt token i (BOS is 0) is predicted by the logits after i tokens: 10
  // on script[i % 10]. "bcd" match there, the other bytes do not.
  auto request = [](int i) {
    GenerationRequest r = Req("bcdX" + std::to_string(i) + "ghij", 6);
    r.return_prompt_logprobs = true;
    r.top_logprobs = 1;
    return r;
  };
  const double log_z = std::log(std::exp(10.0) + 257.0);
  auto check = [&](const GenerationRequest& r, const Collected& c) {
    ASSERT_TRUE(c.done());
    ASSERT_TRUE(c.last().status.ok()) << c.last().status.ToString();
    size_t with = 0;
    for (size_t u = 0; u < c.updates.size(); ++u) {
      if (c.updates[u].prompt_logprobs.empty()) continue;
      ++with;
      EXPECT_EQ(u, 0u) << "on the first update";
      EXPECT_FALSE(c.updates[u].token_ids.empty()) << "with the first token";
      const auto& lps = c.updates[u].prompt_logprobs;
      ASSERT_EQ(lps.size(), r.prompt.size() - 1);
      for (size_t k = 0; k < lps.size(); ++k) {
        const int64_t token = r.prompt[k + 1];
        const bool predicted = token == static_cast<unsigned char>(script[(k + 1) % script.size()]);
        EXPECT_EQ(lps[k].chosen.token, token) << k;
        EXPECT_NEAR(lps[k].chosen.logprob, predicted ? 10.0 - log_z : -log_z, 1e-6) << k;
        ASSERT_EQ(lps[k].top.size(), 1u);
        EXPECT_EQ(lps[k].top[0].token, static_cast<unsigned char>(script[(k + 1) % script.size()]));
      }
    }
    EXPECT_EQ(with, 1u);
    for (const auto& u : c.updates) EXPECT_TRUE(u.logprobs.empty()) << "return_logprobs was not set";
  };
  {
    FakeEngine e(1000, 4);
    SchedulerOptions o;
    o.max_batch_tokens = 4;  // the 10-token prompt in chunks of 4, 4, 2
    Scheduler s(&e, o);
    Collected c, plain;
    ASSERT_TRUE(s.Submit(request(0), Into(&c)).ok());
    RunUntilIdle(s);
    check(request(0), c);
    EXPECT_EQ(e.all_logits_steps, 3) << "the three prefill chunks, not the decode steps";
    ASSERT_TRUE(s.Submit(Req("bcdX0ghij", 6), Into(&plain)).ok());
    RunUntilIdle(s);
    EXPECT_EQ(e.all_logits_steps, 3) << "not asked for";
    EXPECT_TRUE(plain.updates[0].prompt_logprobs.empty());
    EXPECT_EQ(plain.ids, c.ids);
  }
  // 16 blocks, far too few for the 6 at once, and 8 tokens a step:
  // preemption, also of requests whose prompt was only partly read (and scored).
  FakeEngine small(16, 4);
  std::vector<Collected> got = RunSixUnderMemoryPressure(small, request, /*step_tokens=*/8);
  EXPECT_GT(PreemptedMidPrompt(small, request(0).prompt.size()), 0);
  for (int i = 0; i < 6; ++i) check(request(i), got[i]);
}

TEST(Scheduler, AdmissionUsesTheRoutedLayersRealOccupancy) {
  // A running request holds 8 blocks of 19; a new 16-token prompt needs
  // 2 * 4 dense blocks + about 2 routed blocks (capacity 0.5), not the
  // 3 * 4 = 12 of a dense worst case. ('x' is even: it skips the routed layer.)
  FakeEngine e(19, 4);
  Scheduler s(&e, {});
  Collected a, b;
  ASSERT_TRUE(s.Submit(Req(std::string(12, 'x'), 2), Into(&a)).ok());
  s.Step();
  ASSERT_TRUE(s.Submit(Req(std::string(15, 'x'), 1), Into(&b)).ok());
  const int64_t free_before = e.FreeBlocks();
  EXPECT_EQ(free_before, 11);  // a dense estimate (12) would not admit b now; the route-aware one (10) does
  s.Step();
  // b was admitted in the same step as a's decode.
  ASSERT_FALSE(e.steps.empty());
  EXPECT_EQ(e.steps.back().size(), 2u);
  RunUntilIdle(s);
  EXPECT_TRUE(b.last().status.ok());
}

TEST(Scheduler, StreamedTextIsValidUtf8AndHoldsSplitCharacters) {
  // The script spells "é" (C3 A9) and a stray continuation byte (80).
  FakeEngine e(1000, 4, 256, std::string("\xC3\xA9z\x80q", 5));
  Scheduler s(&e, {});
  Collected c;
  ASSERT_TRUE(s.Submit(Req("", 10), Into(&c)).ok());  // BOS only: outputs start at script[1]
  RunUntilIdle(s);
  for (const auto& u : c.updates) EXPECT_TRUE(IsValidUtf8(u.text)) << u.text;
  // script[1..]: A9 (invalid alone: U+FFFD), z, 80 (U+FFFD), q, C3 A9 (é), z, 80, q, C3 (held, then U+FFFD at the end).
  EXPECT_EQ(c.text, "\xEF\xBF\xBDz\xEF\xBF\xBDq\xC3\xA9z\xEF\xBF\xBDq\xEF\xBF\xBD");
  bool held = false;  // an update with a token but no text: the C3 waiting for its A9
  for (const auto& u : c.updates) held |= (!u.token_ids.empty() && u.token_ids[0] == 0xC3 && u.text.empty());
  EXPECT_TRUE(held);
}

TEST(Scheduler, StopStringSpanningTokensIsNeverStreamed) {
  FakeEngine e(1000, 4, 256, "abcdefghij");
  Scheduler s(&e, {});
  Collected c;
  GenerationRequest r = Req("", 20);  // generates bcdefg...
  r.stop.stop = {"efg"};
  ASSERT_TRUE(s.Submit(std::move(r), Into(&c)).ok());
  RunUntilIdle(s);
  EXPECT_EQ(c.text, "bcd");
  EXPECT_EQ(c.last().finish_reason, FinishReason::kStop);
  for (const auto& u : c.updates) EXPECT_EQ(u.text.find('e'), std::string::npos);
}

TEST(Scheduler, FullContextFinishesWithLength) {
  FakeEngine e(1000, 4, /*max_context=*/12);
  Scheduler s(&e, {});
  Collected c;
  ASSERT_TRUE(s.Submit(Req("abcdefgh", 100), Into(&c)).ok());  // 9 tokens
  RunUntilIdle(s);
  EXPECT_EQ(c.last().finish_reason, FinishReason::kLength);
  EXPECT_EQ(c.ids.size(), 3u);  // positions 9, 10, 11
}

TEST(Scheduler, CancelAllEndsEveryRequest) {
  FakeEngine e(1000, 4);
  Scheduler s(&e, {});
  Collected a, b;
  ASSERT_TRUE(s.Submit(Req("a", 100), Into(&a)).ok());
  s.Step();
  ASSERT_TRUE(s.Submit(Req("b", 100), Into(&b)).ok());
  s.CancelAll(Unavailable("shutting down"));
  s.Step();
  EXPECT_EQ(a.last().status.code(), StatusCode::kUnavailable);
  EXPECT_EQ(b.last().status.code(), StatusCode::kUnavailable);
  EXPECT_TRUE(s.idle());
  EXPECT_EQ(e.sequences(), 0);
}

// The scheduler's threading, as the server uses it, without gRPC (so that
// ThreadSanitizer sees every synchronization): a step-loop thread, client
// threads submitting and cancelling at random moments, sinks that hand their
// updates to a WriteDispatcher thread, and a drain (StopAdmitting, then
// CancelAll) while requests are in flight. Every accepted request gets
// exactly one final update, and the engine holds nothing at the end.
TEST(SchedulerThreads, ConcurrentSubmitCancelAndDrainLoseNothing) {
  FakeEngine e(/*total_blocks=*/120, /*block_size=*/4);  // small: requests preempt each other
  e.record_steps = false;
  SchedulerOptions opts;
  opts.max_queue = 64;
  Scheduler s(&e, opts);
  std::atomic<bool> stop{false};
  std::thread loop([&] {
    while (!stop) {
      if (!s.Step()) s.WaitForWork(std::chrono::milliseconds(5));
    }
  });
  struct Client {
    std::mutex mu;
    int updates = 0, finals = 0;
  };
  const int kThreads = 8, kPerThread = 60;
  std::vector<Client> clients(kThreads * kPerThread);
  std::atomic<int> accepted{0}, refused{0};
  {
    WriteDispatcher writes;
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        std::mt19937 rng(static_cast<unsigned>(t));
        for (int i = 0; i < kPerThread; ++i) {
          Client* c = &clients[static_cast<size_t>(t * kPerThread + i)];
          auto h = s.Submit(Req("thread " + std::to_string(t), 1 + static_cast<int64_t>(rng() % 30)),
                            [c, &writes](RequestUpdate u) {
                              writes.Post([c, finished = u.finished] {
                                std::lock_guard<std::mutex> lock(c->mu);
                                ++c->updates;
                                c->finals += finished;
                              });
                            });
          if (t == 0 && i == kPerThread / 2) s.StopAdmitting();  // the drain begins while clients still submit
          if (!h.ok()) {
            ++refused;
            continue;
          }
          ++accepted;
          if (rng() % 3 == 0) {
            std::this_thread::sleep_for(std::chrono::microseconds(rng() % 2000));
            s.Cancel(*h);
          }
        }
      });
    }
    for (auto& th : threads) th.join();
    s.CancelAll(Unavailable("drain grace over"));
    for (int i = 0; i < 2000 && !s.idle(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    stop = true;
    s.Wake();
    loop.join();
  }  // the dispatcher has run every posted update
  EXPECT_TRUE(s.idle());
  EXPECT_EQ(e.sequences(), 0);
  EXPECT_GT(accepted, 0);
  EXPECT_GE(refused, kPerThread / 2 - 1);  // at least thread 0's submissions after StopAdmitting
  int finals = 0;
  for (auto& c : clients) {
    EXPECT_LE(c.finals, 1);
    finals += c.finals;
  }
  EXPECT_EQ(finals, accepted.load());
  std::printf("%d accepted, %d refused, %d steps\n", accepted.load(), refused.load(), e.steps_run);
}

// A cancel sent right after Submit, while the step loop runs, is never lost:
// the request ends CANCELLED, not after its 100000 tokens (a cancel swept
// between the step's taking of the inbox and of the cancels used to match
// nothing). The fake engine's steps take microseconds, so the requests are
// long enough that none can end on its own before its cancel arrives.
TEST(SchedulerThreads, ACancelRightAfterSubmitIsNeverLost) {
  FakeEngine e(/*total_blocks=*/int64_t{1} << 24, /*block_size=*/16, /*max_context=*/int64_t{1} << 17);
  e.record_steps = false;
  Scheduler s(&e, SchedulerOptions{});
  std::atomic<bool> stop{false};
  std::thread loop([&] {
    while (!stop) {
      if (!s.Step()) s.WaitForWork(std::chrono::milliseconds(1));
    }
  });
  const int kRequests = 2000;
  std::vector<std::atomic<int>> codes(kRequests);
  for (auto& c : codes) c = -1;
  for (int i = 0; i < kRequests; ++i) {
    auto h = s.Submit(Req("x", 100000), [&codes, i](RequestUpdate u) {
      if (u.finished) codes[static_cast<size_t>(i)] = static_cast<int>(u.status.code());
    });
    ASSERT_TRUE(h.ok()) << h.status().message();
    s.Cancel(*h);
    if (i % 64 == 63) {  // keep the queue short
      for (int w = 0; w < 2000 && !s.idle(); ++w) std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  }
  for (int w = 0; w < 5000 && !s.idle(); ++w) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  stop = true;
  s.Wake();
  loop.join();
  int cancelled = 0;
  for (int i = 0; i < kRequests; ++i) {
    EXPECT_EQ(codes[static_cast<size_t>(i)], static_cast<int>(StatusCode::kCancelled)) << "request " << i;
    cancelled += codes[static_cast<size_t>(i)] == static_cast<int>(StatusCode::kCancelled);
  }
  EXPECT_EQ(cancelled, kRequests);
  EXPECT_EQ(e.sequences(), 0);
}

TEST(Utf8StreamDecoder, HoldsIncompleteAndReplacesInvalid) {
  Utf8StreamDecoder d;
  EXPECT_EQ(d.Push("a\xE2\x82"), "a");
  EXPECT_EQ(d.held_bytes(), 2u);
  EXPECT_EQ(d.Push("\xAC"), "\xE2\x82\xAC");  // €
  EXPECT_EQ(d.Push("\xF0\x9F"), "");
  EXPECT_EQ(d.Flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(d.Push("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");   // overlong
  EXPECT_EQ(d.Push("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_TRUE(IsValidUtf8("h\xC3\xA9llo \xF0\x9F\x98\x80"));
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // > U+10FFFF
  EXPECT_FALSE(IsValidUtf8("abc\xC3"));
}

}  // namespace
}  // namespace modserve
