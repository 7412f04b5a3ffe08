// Helpers of the scheduler tests (scheduler_test.cpp, scheduler_priority_test.cpp):
// a sink that collects a request's updates, requests over byte prompts, what
// the fake engine generates, and what its recorded steps say about
// recomputation.
//
// Thread-safety: Collected and its sink are used from one thread at a time.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "fake_engine.h"
#include "server/scheduler.h"

namespace modserve::testing {

// Collects every update of one request.
struct Collected {
  std::vector<RequestUpdate> updates;
  std::string text;
  std::vector<int64_t> ids;
  bool done() const { return !updates.empty() && updates.back().finished; }
  const RequestUpdate& last() const { return updates.back(); }
};

inline UpdateSink Into(Collected* c) {
  return [c](RequestUpdate u) {
    c->text += u.text;
    c->ids.insert(c->ids.end(), u.token_ids.begin(), u.token_ids.end());
    c->updates.push_back(std::move(u));
  };
}

inline GenerationRequest Req(const std::string& prompt, int64_t max_tokens) {
  GenerationRequest r;
  r.prompt.push_back(256);  // BOS
  for (unsigned char ch : prompt) r.prompt.push_back(ch);
  r.stop.max_tokens = max_tokens;
  return r;
}

// What the fake engine generates after `prompt_tokens` tokens.
inline std::string Expected(const std::string& script, int64_t prompt_tokens, int64_t n) {
  std::string out;
  for (int64_t i = 0; i < n; ++i) out += script[static_cast<size_t>(prompt_tokens + i) % script.size()];
  return out;
}

inline void RunUntilIdle(Scheduler& s, int max_steps = 10000) {
  for (int i = 0; i < max_steps && !s.idle(); ++i) s.Step();
  ASSERT_TRUE(s.idle()) << "scheduler did not finish in " << max_steps << " steps";
}

// Per sequence, the prompt chunks that fed it from BOS: its first start,
// then one per recomputation after a preemption.
inline std::map<SeqId, int> Starts(const FakeEngine& e) {
  std::map<SeqId, int> starts;
  for (const auto& step : e.steps) {
    for (const auto& c : step) {
      if (c.tokens.size() > 1 && c.tokens[0] == 256) ++starts[c.id];
    }
  }
  return starts;
}

// Sequences the engine was fed from position 0 (BOS first) more than once:
// recomputed after a preemption.
inline int RecomputedSequences(const FakeEngine& e) {
  int recomputed = 0;
  for (const auto& [id, n] : Starts(e)) recomputed += n > 1;
  return recomputed;
}

}  // namespace modserve::testing
