// GuideCache: compiled guides (TokenGuide) kept across requests, keyed by the
// guide's kind and its source (a guided_regex pattern, a guided_choice list,
// a guided_json schema), so a guide clients send again is compiled once
// rather than on every request (1-16 ms for realistic patterns, up to the
// compile-work limit for a pathological one). Refusals are kept too: a
// pattern refused after its compile ran out of work costs that work once.
//
// The entries' memory (automata, keys, messages) is bounded by a byte
// budget; the least recently used entries go first. A guide larger than the
// whole budget is compiled and used but not kept. Lookups of a key another
// thread is compiling wait for that compile instead of starting their own.
//
// Thread-safety: all methods may be called from any thread. The observer is
// called on the looking-up thread, without the cache's lock held.
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "engine/status.h"
#include "engine/token_guide.h"

namespace modserve {

class GuideCache {
 public:
  using Guide = std::shared_ptr<const TokenGuide>;
  using Compile = std::function<StatusOr<Guide>()>;
  // After each lookup: whether it was a hit (a kept or in-flight compile),
  // the seconds this lookup spent compiling (0 on a hit), and the bytes the
  // cache holds afterwards.
  using Observer = std::function<void(bool hit, double compile_seconds, int64_t cached_bytes)>;

  // `capacity_bytes` 0 keeps nothing: every lookup compiles.
  explicit GuideCache(int64_t capacity_bytes, Observer observer = nullptr);
  GuideCache(const GuideCache&) = delete;
  GuideCache& operator=(const GuideCache&) = delete;

  // The guide (or refusal) kept for `key`, else compile()'s, kept for next time.
  StatusOr<Guide> GetOrCompile(const std::string& key, const Compile& compile);

  struct Stats {
    int64_t hits = 0;
    int64_t misses = 0;
    int64_t entries = 0;  // kept, compiles in flight included
    int64_t bytes = 0;    // of the kept entries
  };
  Stats stats() const;

 private:
  using Result = StatusOr<Guide>;
  struct Entry {
    std::shared_future<Result> result;
    int64_t bytes = 0;  // 0 while compiling
    bool ready = false;
    std::list<std::string>::iterator lru;  // its key in lru_
  };
  // Drops ready entries from the least recent end while over the budget. mu_ held.
  void EvictLocked();

  const int64_t capacity_bytes_;
  const Observer observer_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
  std::list<std::string> lru_;  // keys, most recently used first
  int64_t bytes_ = 0;
  int64_t hits_ = 0;
  int64_t misses_ = 0;
};

}  // namespace modserve
