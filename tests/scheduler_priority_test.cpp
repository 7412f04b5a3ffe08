// Scheduler tests of priority scheduling, against the fake engine: waiting
// requests enter by priority then arrival; a request of higher priority that
// finds no slot or no blocks preempts the newest of the lowest running
// priority (never one of its own, never where it cannot make room), the
// victim is not readmitted in the same step and still gets its exact
// tokens; memory preemption spares the highest priority.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <utility>
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
using testing::RecomputedSequences;
using testing::Req;
using testing::RunUntilIdle;
using testing::Starts;

GenerationRequest Prio(const std::string& prompt, int64_t max_tokens, int32_t priority) {
  GenerationRequest r = Req(prompt, max_tokens);
  r.priority = priority;
  return r;
}

struct Preemptions : SchedulerObserver {
  int memory = 0, priority = 0;
  void OnPreempted(bool for_priority) override { ++(for_priority ? priority : memory); }
};

// The ids of the sequences in the order of their first step.
std::vector<SeqId> FirstStepOrder(const FakeEngine& e) {
  std::vector<SeqId> order;
  for (const auto& step : e.steps) {
    for (const auto& c : step) {
      if (std::find(order.begin(), order.end(), c.id) == order.end()) order.push_back(c.id);
    }
  }
  return order;
}

TEST(Scheduler, WaitingRequestsEnterByPriorityThenArrival) {
  FakeEngine e(1000, 4);
  SchedulerOptions o;
  o.max_running = 1;
  Preemptions seen;
  Scheduler s(&e, o, &seen);
  std::vector<Collected> got(5);
  const std::vector<int32_t> priority = {5, 0, 5, -1, 0};
  std::vector<Scheduler::Handle> handle;
  for (int i = 0; i < 5; ++i) {
    auto h = s.Submit(Prio("p" + std::to_string(i), 3, priority[i]), Into(&got[i]));
    ASSERT_TRUE(h.ok());
    handle.push_back(*h);
  }
  RunUntilIdle(s);
  std::vector<SeqId> want;
  for (int i : {3, 1, 4, 0, 2}) want.push_back(static_cast<SeqId>(handle[i]));
  EXPECT_EQ(FirstStepOrder(e), want) << "lower values first; equal ones first come, first served";
  EXPECT_EQ(seen.priority, 0) << "no running request ranked below a waiting one";
  for (int i = 0; i < 5; ++i) EXPECT_EQ(got[i].text, Expected("abcdefghij", 3, 3)) << "request " << i;
}

TEST(Scheduler, AHigherPriorityRequestPreemptsTheNewestOfTheLowestRunning) {
  FakeEngine e(1000, 4);
  SchedulerOptions o;
  o.max_running = 3;
  Preemptions seen;
  Scheduler s(&e, o, &seen);
  std::vector<Collected> got(5);
  // Running: 0 (priority 1), 1 and 2 (priority 2, 2 the newer).
  auto h0 = s.Submit(Prio("first", 12, 1), Into(&got[0]));
  auto h1 = s.Submit(Prio("second", 12, 2), Into(&got[1]));
  auto h2 = s.Submit(Prio("third", 12, 2), Into(&got[2]));
  ASSERT_TRUE(h0.ok() && h1.ok() && h2.ok());
  for (int i = 0; i < 3; ++i) s.Step();
  ASSERT_EQ(e.sequences(), 3);
  // Equal to the lowest running: waits. Then one above them all: preempts 2.
  ASSERT_TRUE(s.Submit(Prio("equal", 4, 2), Into(&got[3])).ok());
  s.Step();
  EXPECT_EQ(seen.priority, 0) << "a request never preempts one of its own priority";
  auto h4 = s.Submit(Prio("urgent", 4, 0), Into(&got[4]));
  ASSERT_TRUE(h4.ok());
  s.Step();
  EXPECT_EQ(seen.priority, 1);
  std::set<SeqId> last_step;
  for (const auto& c : e.steps.back()) last_step.insert(c.id);
  EXPECT_EQ(last_step, (std::set<SeqId>{static_cast<SeqId>(*h0), static_cast<SeqId>(*h1), static_cast<SeqId>(*h4)}))
      << "the urgent request took the slot of the newest lowest-priority one";
  int order = 0;
  std::vector<int> done_at(5, -1);
  for (int step = 0; step < 1000 && !s.idle(); ++step) {
    s.Step();
    for (int i = 0; i < 5; ++i) {
      if (done_at[i] < 0 && got[i].done()) done_at[i] = order++;
    }
  }
  ASSERT_TRUE(s.idle());
  EXPECT_LT(done_at[4], done_at[2]) << "the urgent request finished before the one it preempted";
  EXPECT_EQ(seen.priority, 1) << "the preempted request did not bounce back and forth";
  EXPECT_EQ(seen.memory, 0);
  const std::vector<std::pair<std::string, int64_t>> want = {{"first", 12}, {"second", 12}, {"third", 12}, {"equal", 4}, {"urgent", 4}};
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(got[i].done()) << "request " << i;
    EXPECT_TRUE(got[i].last().status.ok()) << "preempted, never failed: " << got[i].last().status.ToString();
    const auto prompt_tokens = static_cast<int64_t>(want[i].first.size()) + 1;
    EXPECT_EQ(got[i].text, Expected("abcdefghij", prompt_tokens, want[i].second)) << "request " << i;
    EXPECT_EQ(got[i].last().usage.routed_computed() + got[i].last().usage.routed_skipped(), prompt_tokens + want[i].second - 1)
        << "request " << i << ": recomputed tokens count once";
  }
  EXPECT_EQ(RecomputedSequences(e), 1);
  EXPECT_EQ(e.FreeBlocks(), 1000);
}

TEST(Scheduler, AHigherPriorityRequestPreemptsForKvBlocks) {
  // 64 blocks of 4 tokens: two low-priority requests of 15 + 30 tokens fit
  // (at most 30 blocks each), but near their end leave too few for a third.
  FakeEngine e(64, 4);
  Preemptions seen;
  Scheduler s(&e, {}, &seen);
  std::vector<Collected> got(3);
  ASSERT_TRUE(s.Submit(Prio("background one", 30, 1), Into(&got[0])).ok());
  auto two = s.Submit(Prio("background two", 30, 1), Into(&got[1]));
  ASSERT_TRUE(two.ok());
  for (int i = 0; i < 40 && e.FreeBlocks() > 8; ++i) s.Step();
  ASSERT_LE(e.FreeBlocks(), 8);
  ASSERT_FALSE(got[0].done() || got[1].done());
  ASSERT_TRUE(s.Submit(Prio("urgent request", 2, 0), Into(&got[2])).ok());
  s.Step();
  ASSERT_EQ(seen.priority, 1);
  for (const auto& c : e.steps.back()) EXPECT_NE(c.id, static_cast<SeqId>(*two)) << "not readmitted in the step that preempted it";
  std::vector<int> done_at(3, -1);
  int order = 0;
  for (int step = 0; step < 1000 && !s.idle(); ++step) {
    s.Step();
    for (int i = 0; i < 3; ++i) {
      if (done_at[i] < 0 && got[i].done()) done_at[i] = order++;
    }
  }
  ASSERT_TRUE(s.idle());
  EXPECT_EQ(seen.priority, 1) << "the urgent request made room by preempting one";
  EXPECT_EQ(seen.memory, 0) << "the preempted request did not come back too soon and run the pool out";
  EXPECT_EQ(Starts(e)[static_cast<SeqId>(*two)], 2) << "started once, recomputed once";
  EXPECT_LT(done_at[2], done_at[1]) << "and finished before the one it preempted";
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(got[i].done());
    EXPECT_TRUE(got[i].last().status.ok()) << got[i].last().status.ToString();
    EXPECT_EQ(got[i].text, Expected("abcdefghij", 15, i == 2 ? 2 : 30)) << "request " << i;
  }
  EXPECT_EQ(RecomputedSequences(e), 1);
  EXPECT_EQ(e.FreeBlocks(), 64);
}

// The setup of the two tests below: a priority-0 and a priority-5 request
// of 80 tokens run 41 steps on `s` (into got[0], got[1]), leaving too few
// blocks for a 151-token prompt.
void RunBackgroundHoldingTheBlocks(Scheduler& s, std::vector<Collected>& got) {
  ASSERT_TRUE(s.Submit(Prio("background one", 80, 0), Into(&got[0])).ok());
  ASSERT_TRUE(s.Submit(Prio("b", 80, 5), Into(&got[1])).ok());
  for (int i = 0; i < 41; ++i) s.Step();
  ASSERT_FALSE(got[0].done() || got[1].done());
}

TEST(Scheduler, NoPreemptionWhereItCouldNotMakeRoom) {
  // The blocks are held by a request of higher priority than the newcomer:
  // preempting the one below it would not free enough, so nothing is preempted.
  FakeEngine e(120, 4);
  SchedulerOptions o;
  o.max_prefill_tokens = 0;  // the newcomer's whole prompt in one chunk
  Preemptions seen;
  Scheduler s(&e, o, &seen);
  std::vector<Collected> got(3);
  ASSERT_NO_FATAL_FAILURE(RunBackgroundHoldingTheBlocks(s, got));
  const int64_t free_before = e.FreeBlocks();
  ASSERT_LT(free_before, 90) << "too few blocks for the 151-token prompt (about 95 by the estimate)";
  ASSERT_TRUE(s.Submit(Prio(std::string(150, 'x'), 4, 1), Into(&got[2])).ok());
  RunUntilIdle(s);
  EXPECT_EQ(seen.priority, 0) << "preempting the priority-5 request alone could not make room";
  EXPECT_EQ(seen.memory, 0);
  EXPECT_EQ(got[0].text, Expected("abcdefghij", 15, 80));
  EXPECT_EQ(got[1].text, Expected("abcdefghij", 2, 80));
  EXPECT_EQ(got[2].text, Expected("abcdefghij", 151, 4));
  EXPECT_EQ(e.FreeBlocks(), 120);
}

// As NoPreemptionWhereItCouldNotMakeRoom, but the newcomer also finds no
// slot: preempting the priority-5 request would give it a slot but not the
// blocks, so nothing is preempted then either (before, it was preempted for
// the slot, the newcomer still did not fit, and its progress was lost).
TEST(Scheduler, NoPreemptionForASlotWhereTheBlocksWouldStillBeShort) {
  FakeEngine e(120, 4);
  SchedulerOptions o;
  o.max_prefill_tokens = 0;
  o.max_running = 2;
  Preemptions seen;
  Scheduler s(&e, o, &seen);
  std::vector<Collected> got(3);
  ASSERT_NO_FATAL_FAILURE(RunBackgroundHoldingTheBlocks(s, got));
  ASSERT_LT(e.FreeBlocks(), 90) << "too few blocks for the 151-token prompt (about 95 by the estimate)";
  ASSERT_TRUE(s.Submit(Prio(std::string(150, 'x'), 4, 1), Into(&got[2])).ok());
  RunUntilIdle(s);
  EXPECT_EQ(seen.priority, 0) << "a slot without the blocks does not admit the newcomer";
  EXPECT_EQ(seen.memory, 0);
  EXPECT_EQ(RecomputedSequences(e), 0);
  EXPECT_EQ(got[1].text, Expected("abcdefghij", 2, 80));
  EXPECT_EQ(got[2].text, Expected("abcdefghij", 151, 4));
  EXPECT_EQ(e.FreeBlocks(), 120);
}

// As AHigherPriorityRequestPreemptsForKvBlocks, but the two background
// requests share their blocks with each other (as an n > 1 group shares its
// prompt's): preempting them would free nothing, so the urgent request waits
// for them instead of throwing their progress away.
TEST(Scheduler, NoPreemptionOfRequestsWhoseBlocksAreShared) {
  FakeEngine e(64, 4);
  Preemptions seen;
  Scheduler s(&e, {}, &seen);
  std::vector<Collected> got(3);
  auto one = s.Submit(Prio("background one", 30, 1), Into(&got[0]));
  auto two = s.Submit(Prio("background two", 30, 1), Into(&got[1]));
  ASSERT_TRUE(one.ok() && two.ok());
  e.shared_blocks[static_cast<SeqId>(*one)] = 1000;
  e.shared_blocks[static_cast<SeqId>(*two)] = 1000;
  for (int i = 0; i < 40 && e.FreeBlocks() > 8; ++i) s.Step();
  ASSERT_LE(e.FreeBlocks(), 8);
  ASSERT_FALSE(got[0].done() || got[1].done());
  ASSERT_TRUE(s.Submit(Prio("urgent request", 2, 0), Into(&got[2])).ok());
  RunUntilIdle(s);
  EXPECT_EQ(seen.priority, 0) << "preempting requests that free no blocks makes no room";
  EXPECT_EQ(RecomputedSequences(e), 0);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(got[i].done());
    EXPECT_TRUE(got[i].last().status.ok()) << got[i].last().status.ToString();
  }
  EXPECT_EQ(e.FreeBlocks(), 64);
}

TEST(Scheduler, MemoryPreemptionSparesTheHighestPriority) {
  // As PreemptsAndRecomputesWhenBlocksRunOut, but the newest request ranks
  // first: memory preemption takes the newest of the lowest priority instead.
  FakeEngine small(24, 4);
  Preemptions seen;
  SchedulerOptions o;
  o.max_batch_tokens = 64;
  Scheduler s(&small, o, &seen);
  std::vector<Collected> got(6);
  std::vector<Scheduler::Handle> handle;
  for (int i = 0; i < 6; ++i) {
    auto h = s.Submit(Prio("prompt" + std::to_string(i) + "xx", 20, i == 5 ? -1 : 0), Into(&got[i]));
    ASSERT_TRUE(h.ok());
    handle.push_back(*h);
  }
  RunUntilIdle(s);
  EXPECT_GT(seen.memory, 0);
  EXPECT_EQ(Starts(small)[static_cast<SeqId>(handle[5])], 1) << "the highest-priority request was never preempted";
  for (int i = 0; i < 6; ++i) EXPECT_EQ(got[i].text, Expected("abcdefghij", 10, 20)) << "request " << i;
  EXPECT_EQ(small.FreeBlocks(), 24);
}

}  // namespace
}  // namespace modserve
