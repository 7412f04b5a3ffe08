// engine/thread_priority: LowerOtherThreadsToIdle moves every unmarked thread
// of the process under SCHED_IDLE, leaves marked ones as they are, and
// threads created afterwards inherit their creator's policy. Each case runs
// in a forked child (EXPECT_EXIT), since a thread cannot leave SCHED_IDLE and
// the test binary's own threads must keep their priority.
#include "engine/thread_priority.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

namespace modserve {
namespace {

// A thread that waits until released, so it exists while the process lowers
// its threads, then reports its policy.
class Parked {
 public:
  Parked() : thread_([this] { Run(); }) {}
  ~Parked() {
    Release();
    thread_.join();
  }
  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }
  bool idle() {
    Release();
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return reported_; });
    return idle_;
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return released_; });
    idle_ = RunsAtIdlePriority();
    reported_ = true;
    cv_.notify_all();
  }
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false, reported_ = false, idle_ = false;
  std::thread thread_;
};

bool IdleInNewThread() {
  bool idle = true;
  std::thread([&] { idle = RunsAtIdlePriority(); }).join();
  return idle;
}

#define CHILD_CHECK(cond)                                  \
  do {                                                     \
    if (!(cond)) {                                         \
      std::fprintf(stderr, "failed: %s\n", #cond);         \
      std::exit(1);                                        \
    }                                                      \
  } while (0)

// Child bodies: exit 0 when every check holds.
[[noreturn]] void MarkedStayUnmarkedGoIdle() {
  CHILD_CHECK(!RunsAtIdlePriority());
  MarkComputeThread();
  CHILD_CHECK(IsComputeThread());
  Parked other;  // exists, unmarked, when the threads are lowered
  auto moved = LowerOtherThreadsToIdle();
  CHILD_CHECK(moved.ok());
  CHILD_CHECK(*moved >= 1);
  CHILD_CHECK(!RunsAtIdlePriority());  // marked: unchanged
  CHILD_CHECK(other.idle());
  CHILD_CHECK(!IdleInNewThread());  // a compute thread's new thread: normal
  // An idle thread's new thread is idle too.
  bool grandchild_idle = false, child_marked = true, lowered = false;
  std::thread([&] {
    child_marked = IsComputeThread();
    lowered = LowerOtherThreadsToIdle().ok();  // from an unmarked thread: lowers itself
    grandchild_idle = IdleInNewThread();
  }).join();
  CHILD_CHECK(!child_marked);
  CHILD_CHECK(lowered);
  CHILD_CHECK(grandchild_idle);
  CHILD_CHECK(!RunsAtIdlePriority());
  std::exit(0);
}

[[noreturn]] void NothingMarkedAllGoIdle() {
  auto moved = LowerOtherThreadsToIdle();
  CHILD_CHECK(moved.ok());
  CHILD_CHECK(RunsAtIdlePriority());
  CHILD_CHECK(IdleInNewThread());
  std::exit(0);
}

TEST(ThreadPriority, UnmarkedThreadsGoIdleMarkedOnesStayAndChildrenInherit) {
  EXPECT_EXIT(MarkedStayUnmarkedGoIdle(), ::testing::ExitedWithCode(0), "");
}

TEST(ThreadPriority, WithNothingMarkedEveryThreadGoesIdle) {
  EXPECT_EXIT(NothingMarkedAllGoIdle(), ::testing::ExitedWithCode(0), "");
}

TEST(ThreadPriority, UsableCpusCountsTheAffinityMask) {
  const int n = UsableCpus();
  EXPECT_GE(n, 1);
  EXPECT_LE(n, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
}

}  // namespace
}  // namespace modserve
