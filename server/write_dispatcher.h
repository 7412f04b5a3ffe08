// WriteDispatcher: one thread that runs small tasks in order, so the
// scheduler's step thread can hand gRPC writes off instead of performing them
// itself (a StartWrite serializes the message and may send it inline). On a
// CPU server the engine's step then runs while another core sends the
// previous step's tokens.
//
// Thread-safety: Post may be called from any thread; tasks run on the
// dispatcher's thread. The destructor runs the tasks already posted, then
// joins.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace modserve {

class WriteDispatcher {
 public:
  WriteDispatcher();
  ~WriteDispatcher();
  WriteDispatcher(const WriteDispatcher&) = delete;
  WriteDispatcher& operator=(const WriteDispatcher&) = delete;

  void Post(std::function<void()> task);

 private:
  void Run();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  std::thread thread_;  // last: starts after the members above exist
};

}  // namespace modserve
