// Tests of GuideCache (server/guide_cache.h): a guide or a refusal compiled
// once, least-recently-used eviction under the byte budget, concurrent
// lookups sharing one compile (also run under TSan), and a compile that
// throws. Torch-free and gRPC-free.
#include "server/guide_cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <new>
#include <string>
#include <thread>
#include <vector>

namespace modserve {
namespace {

// A compile of `pattern` that counts its calls.
GuideCache::Compile Counting(const std::string& pattern, std::atomic<int>* calls) {
  return [pattern, calls] {
    calls->fetch_add(1);
    return TokenGuide::FromRegex(pattern, "guided_regex");
  };
}

TEST(GuideCache, AGuideOrARefusalIsCompiledOnce) {
  int lookups = 0, hits = 0;
  GuideCache cache(1 << 20, [&](bool hit, double seconds, int64_t bytes) {
    ++lookups;
    hits += hit;
    EXPECT_EQ(seconds == 0, hit);
    EXPECT_GT(bytes, 0);
  });
  std::atomic<int> calls{0};
  auto first = cache.GetOrCompile("regex\n[0-9]{3}", Counting("[0-9]{3}", &calls));
  auto again = cache.GetOrCompile("regex\n[0-9]{3}", Counting("[0-9]{3}", &calls));
  ASSERT_TRUE(first.ok() && again.ok());
  EXPECT_EQ(first->get(), again->get());  // the same automaton, shared
  EXPECT_EQ(calls.load(), 1);
  std::atomic<int> bad_calls{0};
  auto refused = cache.GetOrCompile("regex\n(a", Counting("(a", &bad_calls));
  auto refused_again = cache.GetOrCompile("regex\n(a", Counting("(a", &bad_calls));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused_again.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(refused_again.status().message(), refused.status().message());
  EXPECT_EQ(bad_calls.load(), 1);
  const GuideCache::Stats st = cache.stats();
  EXPECT_EQ(st.hits, 2);
  EXPECT_EQ(st.misses, 2);
  EXPECT_EQ(st.entries, 2);
  EXPECT_EQ(lookups, 4);
  EXPECT_EQ(hits, 2);
}

TEST(GuideCache, TheLeastRecentlyUsedGoFirstAndTheBudgetHolds) {
  auto one = TokenGuide::FromRegex("[a-z]{20}");
  ASSERT_TRUE(one.ok());
  const int64_t entry = one.value()->memory_bytes() + 400;  // a guide, its key and bookkeeping, with room
  GuideCache cache(2 * entry);                               // room for two
  std::atomic<int> a{0}, b{0}, c{0};
  ASSERT_TRUE(cache.GetOrCompile("a", Counting("[a-z]{20}", &a)).ok());
  ASSERT_TRUE(cache.GetOrCompile("b", Counting("[b-z]{20}", &b)).ok());
  ASSERT_TRUE(cache.GetOrCompile("a", Counting("[a-z]{20}", &a)).ok());  // a is now the most recent
  ASSERT_TRUE(cache.GetOrCompile("c", Counting("[c-z]{20}", &c)).ok());  // evicts b
  EXPECT_LE(cache.stats().bytes, 2 * entry);
  EXPECT_EQ(cache.stats().entries, 2);
  ASSERT_TRUE(cache.GetOrCompile("a", Counting("[a-z]{20}", &a)).ok());
  ASSERT_TRUE(cache.GetOrCompile("c", Counting("[c-z]{20}", &c)).ok());
  EXPECT_EQ(a.load(), 1);
  EXPECT_EQ(c.load(), 1);
  ASSERT_TRUE(cache.GetOrCompile("b", Counting("[b-z]{20}", &b)).ok());
  EXPECT_EQ(b.load(), 2);  // compiled again after its eviction

  // A guide larger than the whole budget is used but not kept; with no budget nothing is.
  GuideCache tiny(64);
  std::atomic<int> t{0};
  EXPECT_TRUE(tiny.GetOrCompile("a", Counting("[a-z]{20}", &t)).ok());
  EXPECT_TRUE(tiny.GetOrCompile("a", Counting("[a-z]{20}", &t)).ok());
  EXPECT_EQ(t.load(), 2);
  EXPECT_EQ(tiny.stats().entries, 0);
  EXPECT_EQ(tiny.stats().bytes, 0);
}

TEST(GuideCache, ConcurrentLookupsOfOneGuideShareOneCompile) {
  GuideCache cache(1 << 20);
  std::atomic<int> calls{0};
  auto slow = [&]() -> StatusOr<GuideCache::Guide> {
    calls.fetch_add(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    return TokenGuide::FromRegex("[0-9]+");
  };
  std::vector<const TokenGuide*> got(8, nullptr);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < got.size(); ++i) {
    threads.emplace_back([&, i] {
      auto g = cache.GetOrCompile("k", slow);
      if (g.ok()) got[i] = g->get();
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(calls.load(), 1);
  for (const TokenGuide* g : got) EXPECT_EQ(g, got[0]);
  EXPECT_NE(got[0], nullptr);
}

TEST(GuideCache, ACompileThatThrowsFailsItsLookupsAndIsNotKept) {
  GuideCache cache(1 << 20);
  int calls = 0;
  auto throws = [&]() -> StatusOr<GuideCache::Guide> {
    ++calls;
    throw std::bad_alloc();
  };
  auto g = cache.GetOrCompile("k", throws);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.status().code(), StatusCode::kInternal);
  EXPECT_NE(g.status().message().find("guide compile failed"), std::string::npos) << g.status().message();
  EXPECT_FALSE(cache.GetOrCompile("k", throws).ok());
  EXPECT_EQ(calls, 2);  // tried again: an out-of-memory is not the guide's fault
  EXPECT_EQ(cache.stats().entries, 0);
}

}  // namespace
}  // namespace modserve
