// Scheduler tests of request groups (SubmitGroup: the n completions of one
// GenerateRequest) against the fake engine: a group is queued whole or not
// at all; with prefix caching its later completions wait for the first to
// read the prompt they share (and only when there is a whole block of it to
// share); when one fails, the others end before they run again.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "fake_engine.h"
#include "scheduler_test_util.h"
#include "server/scheduler.h"

namespace modserve {
namespace {

using testing::Collected;
using testing::Expected;
using testing::FakeEngine;
using testing::Into;
using testing::Req;
using testing::RunUntilIdle;

struct Group {
  std::vector<Collected> out;
  StatusOr<std::vector<Scheduler::Handle>> handles = Status::Ok();
};

// Submits `n` copies of Req(prompt, max_tokens) as one group.
void SubmitGroup(Scheduler& s, Group& g, int n, const std::string& prompt, int64_t max_tokens) {
  g.out.resize(static_cast<size_t>(n));
  std::vector<GenerationRequest> reqs;
  std::vector<UpdateSink> sinks;
  for (int i = 0; i < n; ++i) {
    reqs.push_back(Req(prompt, max_tokens));
    sinks.push_back(Into(&g.out[static_cast<size_t>(i)]));
  }
  g.handles = s.SubmitGroup(std::move(reqs), std::move(sinks));
}

// The index of the first recorded step that carries a chunk of `id` (-1: none).
int FirstStepOf(const FakeEngine& e, Scheduler::Handle id) {
  for (size_t i = 0; i < e.steps.size(); ++i) {
    for (const auto& c : e.steps[i]) {
      if (c.id == static_cast<SeqId>(id)) return static_cast<int>(i);
    }
  }
  return -1;
}

// The index of the last recorded step that carries a prompt token of `id`.
int LastPromptStepOf(const FakeEngine& e, Scheduler::Handle id, size_t prompt_tokens) {
  int last = -1;
  size_t fed = 0;
  for (size_t i = 0; i < e.steps.size() && fed < prompt_tokens; ++i) {
    for (const auto& c : e.steps[i]) {
      if (c.id != static_cast<SeqId>(id)) continue;
      fed += c.tokens.size();
      last = static_cast<int>(i);
    }
  }
  return last;
}

TEST(SchedulerGroup, LaterCompletionsWaitForTheFirstToReadTheSharedPromptUnderPrefixCaching) {
  FakeEngine e(1000, 4);
  e.prefix_hit = 8;  // every new sequence finds 8 prompt tokens cached
  Scheduler s(&e, {});  // the step's budget has room for all three prompts
  Group g;
  SubmitGroup(s, g, 3, "hello world", 5);  // 12 prompt tokens
  ASSERT_TRUE(g.handles.ok()) << g.handles.status().message();
  RunUntilIdle(s);
  const auto& h = *g.handles;
  const int leader_done = LastPromptStepOf(e, h[0], 12 - 8);
  ASSERT_EQ(leader_done, 0) << "the leader reads its 4 uncached prompt tokens in the first step";
  for (size_t i = 1; i < h.size(); ++i) {
    EXPECT_GT(FirstStepOf(e, h[i]), leader_done) << "completion " << i << " ran before the leader had read the prompt";
  }
  for (const Collected& c : g.out) {
    ASSERT_TRUE(c.done());
    EXPECT_TRUE(c.last().status.ok());
    EXPECT_EQ(c.text, Expected("abcdefghij", 12, 5));
    EXPECT_EQ(c.last().usage.cached_prompt_tokens, 8);
  }
  EXPECT_EQ(e.FreeBlocks(), 1000);
}

TEST(SchedulerGroup, WithoutPrefixCachingOrAWholeBlockToShareTheCompletionsStartTogether) {
  for (const bool caching : {false, true}) {
    FakeEngine e(1000, 4);
    e.prefix_hit = caching ? 8 : 0;
    Scheduler s(&e, {});
    Group g;
    // With caching the prompt ("hi": 3 tokens) is shorter than a block: nothing to share.
    SubmitGroup(s, g, 3, caching ? "hi" : "hello world", 4);
    ASSERT_TRUE(g.handles.ok());
    RunUntilIdle(s);
    for (size_t i = 0; i < g.handles->size(); ++i) {
      EXPECT_EQ(FirstStepOf(e, (*g.handles)[i]), 0) << "completion " << i << (caching ? " (caching)" : "");
      EXPECT_TRUE(g.out[i].done());
    }
  }
}

TEST(SchedulerGroup, IsQueuedWholeOrNotAtAll) {
  FakeEngine e(1000, 4);
  SchedulerOptions o;
  o.max_queue = 4;
  Scheduler s(&e, o);
  Collected a, b;
  ASSERT_TRUE(s.Submit(Req("one", 3), Into(&a)).ok());
  ASSERT_TRUE(s.Submit(Req("two", 3), Into(&b)).ok());
  Group refused;
  SubmitGroup(s, refused, 3, "three", 3);
  ASSERT_FALSE(refused.handles.ok());
  EXPECT_EQ(refused.handles.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(refused.handles.status().message().find("n = 3 completions need 3"), std::string::npos)
      << refused.handles.status().message();
  EXPECT_EQ(s.waiting(), 2) << "none of the refused group was queued";
  Group fits;
  SubmitGroup(s, fits, 2, "four", 3);
  ASSERT_TRUE(fits.handles.ok());
  EXPECT_EQ(s.waiting(), 4);
  RunUntilIdle(s);
  for (const Collected& c : fits.out) EXPECT_TRUE(c.done() && c.last().status.ok());
  for (const Collected& c : refused.out) EXPECT_TRUE(c.updates.empty()) << "a refused group's sinks get nothing";
}

TEST(SchedulerGroup, ACompletionThatFailsEndsTheOthersBeforeTheyRunAgain) {
  for (const bool caching : {true, false}) {
    SCOPED_TRACE(caching ? "waiting for the leader" : "running beside it");
    FakeEngine e(1000, 4);
    e.prefix_hit = caching ? 8 : 0;
    SchedulerOptions o;
    o.max_batch_tokens = 2;  // the leader reads its prompt over several steps
    Scheduler s(&e, o);
    Group g, other;
    SubmitGroup(s, g, 3, "hello world", 5);
    SubmitGroup(s, other, 1, "unrelated", 5);
    ASSERT_TRUE(g.handles.ok() && other.handles.ok());
    s.Step();
    const size_t steps_before = e.steps.size();
    s.Cancel(g.handles->at(caching ? 0 : 1));  // the leader, or a later completion
    RunUntilIdle(s);
    for (size_t i = 0; i < g.out.size(); ++i) {
      ASSERT_TRUE(g.out[i].done());
      EXPECT_EQ(g.out[i].last().status.code(), StatusCode::kCancelled) << "completion " << i;
      for (size_t k = steps_before; k < e.steps.size(); ++k) {
        for (const auto& c : e.steps[k]) EXPECT_NE(c.id, static_cast<SeqId>(g.handles->at(i))) << "ran after the failure";
      }
    }
    const size_t failed = caching ? 0 : 1;
    EXPECT_NE(g.out[(failed + 1) % 3].last().status.message().find("another completion of the request ended first with CANCELLED"),
              std::string::npos)
        << g.out[(failed + 1) % 3].last().status.message();
    ASSERT_TRUE(other.out[0].done());
    EXPECT_TRUE(other.out[0].last().status.ok()) << "another request is not part of the group";
    EXPECT_EQ(e.FreeBlocks(), 1000);
  }
}

TEST(SchedulerGroup, ACompletionTheEngineRefusesEndsTheOthersBeforeTheyEnterIt) {
  FakeEngine e(1000, 4);
  e.refuse_add = {1};  // the first handle of a fresh scheduler: completion 0
  Scheduler s(&e, {});
  Group g;
  SubmitGroup(s, g, 3, "hello world", 5);
  ASSERT_TRUE(g.handles.ok());
  ASSERT_EQ(g.handles->front(), 1u);
  RunUntilIdle(s);
  EXPECT_EQ(g.out[0].last().status.code(), StatusCode::kInternal);
  for (size_t i = 1; i < g.out.size(); ++i) {
    EXPECT_EQ(g.out[i].last().status.code(), StatusCode::kCancelled) << "completion " << i;
    EXPECT_EQ(FirstStepOf(e, g.handles->at(i)), -1) << "completion " << i << " ran after completion 0 failed";
  }
  EXPECT_EQ(e.steps_run, 0);
}

TEST(SchedulerGroup, RefusesAGroupWithoutOneSinkPerRequest) {
  FakeEngine e(1000, 4);
  Scheduler s(&e, {});
  std::vector<GenerationRequest> reqs;
  reqs.push_back(Req("x", 1));
  reqs.push_back(Req("x", 1));
  Collected c;
  std::vector<UpdateSink> sinks;
  sinks.push_back(Into(&c));
  auto h = s.SubmitGroup(std::move(reqs), std::move(sinks));
  EXPECT_EQ(h.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.waiting(), 0);
}

}  // namespace
}  // namespace modserve
