// FakeEngine: a StepEngine for scheduler tests. It "appends a token per
// request": the next token of a sequence depends only on its position (a
// script of bytes), so outputs do not depend on batching. A token computes
// the routed layer iff its id is odd. KV blocks are counted like the real
// engine's sparse cache (dense layers: every token; routed layer: computing
// tokens only), and a step that does not fit fails with RESOURCE_EXHAUSTED
// and changes nothing.
//
// Thread-safety: none; the scheduler's step thread only.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "server/step_engine.h"

namespace modserve::testing {

class FakeEngine : public StepEngine {
 public:
  // Layers: 0 dense, 1 routed, 2 dense.
  FakeEngine(int64_t total_blocks, int64_t block_size, int64_t max_context = 256, std::string script = "abcdefghij")
      : total_(total_blocks), bs_(block_size), ctx_(max_context), script_(std::move(script)) {}

  StepEngineInfo Info() const override {
    StepEngineInfo i;
    i.n_layers = 3;
    i.routed_layers = {1};
    i.capacity = 0.5;
    i.block_size = bs_;
    i.total_blocks = total_;
    i.max_context = ctx_;
    i.vocab_size = 258;
    i.prefix_caching = prefix_hit > 0;
    return i;
  }
  Status AddSequence(SeqId id) override {
    if (seqs_.count(id)) return InvalidArgument("sequence exists");
    if (refuse_add.count(id)) return Status::Error(StatusCode::kInternal, "fake engine refuses sequence " + std::to_string(id));
    seqs_[id] = {};
    return Status::Ok();
  }
  void Release(SeqId id) override { seqs_.erase(id); }
  int64_t FreeBlocks() const override { return total_ - Used(seqs_); }
  // Its blocks, less those `shared_blocks` says other sequences also use.
  int64_t ReleasableBlocks(SeqId id) const override {
    auto it = seqs_.find(id);
    if (it == seqs_.end()) return 0;
    const auto shared = shared_blocks.find(id);
    return std::max<int64_t>(0, Blocks(it->second) - (shared == shared_blocks.end() ? 0 : shared->second));
  }
  // A stand-in prefix cache (Info().prefix_caching once prefix_hit > 0):
  // every new sequence finds its first `prefix_hit` tokens cached (at most
  // `limit`, never its last token).
  int64_t MatchPrefix(SeqId id, const std::vector<int64_t>& tokens, int64_t limit, const std::string& salt) override {
    match_limits.push_back(limit);
    match_salts.push_back(salt);
    const int64_t n = std::max<int64_t>(0, std::min({prefix_hit, limit, static_cast<int64_t>(tokens.size()) - 1}));
    Seq& s = seqs_.at(id);
    s.tokens = n;
    for (int64_t i = 0; i < n; ++i) s.routed += tokens[static_cast<size_t>(i)] % 2;
    return n;
  }

  StatusOr<StepResult> Step(const std::vector<SequenceChunk>& batch, bool all_logits = false) override {
    if (step_delay.count() > 0) std::this_thread::sleep_for(step_delay);
    if (fail_steps > 0) {
      --fail_steps;
      return Status::Error(StatusCode::kInternal, "fake engine failure");
    }
    auto next = seqs_;
    StepResult r;
    for (const auto& c : batch) {
      if (!next.count(c.id)) return InvalidArgument("unknown sequence " + std::to_string(c.id));
      Seq& s = next[c.id];
      std::vector<uint64_t> routes;
      std::vector<float> rows;  // [tokens * 258], with all_logits
      for (int64_t t : c.tokens) {
        ++s.tokens;
        const bool computes = (t % 2) == 1;
        s.routed += computes;
        routes.push_back(computes ? 1 : 0);
        if (all_logits) {
          const std::vector<float> row = Logits(s.tokens);
          rows.insert(rows.end(), row.begin(), row.end());
        }
      }
      if (s.tokens > ctx_) return InvalidArgument("past the context");
      r.logits.push_back(Logits(s.tokens));
      if (all_logits) r.all_logits.push_back(std::move(rows));
      r.routes.push_back(routes);
      r.stats.tokens += static_cast<int64_t>(c.tokens.size());
    }
    if (Used(next) > total_) return Status::Error(StatusCode::kResourceExhausted, "fake KV pool full");
    seqs_ = std::move(next);
    r.stats.sequences = static_cast<int64_t>(batch.size());
    int64_t computed = 0;
    for (const auto& row : r.routes) {
      for (uint64_t b : row) computed += static_cast<int64_t>(b);
    }
    r.stats.layers = {{0, false, r.stats.tokens, 0}, {1, true, computed, r.stats.tokens - computed}, {2, false, r.stats.tokens, 0}};
    r.stats.kv_blocks_used = Used(seqs_);
    r.stats.kv_blocks_free = total_ - r.stats.kv_blocks_used;
    if (record_steps) steps.push_back(batch);
    all_logits_steps += all_logits;
    ++steps_run;
    return r;
  }

  // The logits after `position` tokens: 10 at the script's byte there, 0 elsewhere.
  std::vector<float> Logits(int64_t position) const {
    std::vector<float> logits(258, 0.0f);
    logits[static_cast<size_t>(static_cast<unsigned char>(script_[static_cast<size_t>(position) % script_.size()]))] = 10.0f;
    return logits;
  }
  int64_t sequences() const { return static_cast<int64_t>(seqs_.size()); }
  int64_t prefix_hit = 0;
  std::map<SeqId, int64_t> shared_blocks;  // per sequence: blocks ReleasableBlocks leaves out (as if shared)
  std::set<SeqId> refuse_add;  // sequences AddSequence fails for (INTERNAL)
  std::vector<int64_t> match_limits;  // the limit of every MatchPrefix call
  std::vector<std::string> match_salts;
  int all_logits_steps = 0;  // steps asked for every token's logits
  bool record_steps = true;
  int steps_run = 0;  // successful steps
  std::vector<std::vector<SequenceChunk>> steps;  // every successful step's batch (when record_steps)
  std::chrono::microseconds step_delay{0};         // to make steps take time, like a real engine
  std::atomic<int> fail_steps{0};  // the next fail_steps steps fail with INTERNAL (not a memory error: nothing is retried)

 private:
  struct Seq {
    int64_t tokens = 0, routed = 0;
  };
  int64_t Blocks(int64_t n) const { return (n + bs_ - 1) / bs_; }
  int64_t Blocks(const Seq& s) const { return 2 * Blocks(s.tokens) + Blocks(s.routed); }  // two dense layers, one routed
  int64_t Used(const std::map<SeqId, Seq>& seqs) const {
    int64_t used = 0;
    for (const auto& [id, s] : seqs) used += Blocks(s);
    return used;
  }

  int64_t total_, bs_, ctx_;
  std::string script_;
  std::map<SeqId, Seq> seqs_;
};

}  // namespace modserve::testing
