#include "server/guide_cache.h"

#include <chrono>
#include <exception>
#include <utility>

namespace modserve {
namespace {

constexpr int64_t kEntryOverheadBytes = 160;  // the map node, the list node, the future's shared state

// What keeping `result` under `key` costs in bytes.
int64_t EntryBytes(const std::string& key, const StatusOr<GuideCache::Guide>& result) {
  const int64_t kept = result.ok() ? (*result ? result.value()->memory_bytes() : 0)
                                   : static_cast<int64_t>(result.status().message().size());
  return kEntryOverheadBytes + static_cast<int64_t>(key.size()) + kept;
}

}  // namespace

GuideCache::GuideCache(int64_t capacity_bytes, Observer observer)
    : capacity_bytes_(capacity_bytes), observer_(std::move(observer)) {}

StatusOr<GuideCache::Guide> GuideCache::GetOrCompile(const std::string& key, const Compile& compile) {
  std::promise<Result> promise;
  {
    std::unique_lock<std::mutex> lock(mu_);
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.lru);
      ++hits_;
      std::shared_future<Result> result = it->second.result;
      const int64_t bytes = bytes_;
      lock.unlock();
      if (observer_) observer_(true, 0, bytes);
      return result.get();  // waits if another lookup is compiling it
    }
    ++misses_;
    lru_.push_front(key);
    Entry& e = entries_[key];
    e.result = promise.get_future().share();
    e.lru = lru_.begin();
  }
  const auto start = std::chrono::steady_clock::now();
  Result result = Internal("guide compile failed");
  bool threw = false;  // out of memory, say: passed to the waiters, not kept
  try {
    result = compile();
  } catch (const std::exception& ex) {
    threw = true;
    result = Internal(std::string("guide compile failed: ") + ex.what());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  promise.set_value(result);
  int64_t bytes_after = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = entries_.find(key);  // still there: compiling entries are never evicted
    Entry& e = it->second;
    e.ready = true;
    e.bytes = EntryBytes(key, result);
    bytes_ += e.bytes;
    if (threw || e.bytes > capacity_bytes_) {  // not kept (waiters hold the future, not the entry)
      bytes_ -= e.bytes;
      lru_.erase(e.lru);
      entries_.erase(it);
    }
    EvictLocked();
    bytes_after = bytes_;
  }
  if (observer_) observer_(false, seconds, bytes_after);
  return result;
}

void GuideCache::EvictLocked() {
  for (auto it = lru_.end(); bytes_ > capacity_bytes_ && it != lru_.begin();) {
    --it;
    auto e = entries_.find(*it);
    if (!e->second.ready) continue;
    bytes_ -= e->second.bytes;
    entries_.erase(e);
    it = lru_.erase(it);
  }
}

GuideCache::Stats GuideCache::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {hits_, misses_, static_cast<int64_t>(entries_.size()), bytes_};
}

}  // namespace modserve
