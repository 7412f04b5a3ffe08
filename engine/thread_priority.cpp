#include "engine/thread_priority.h"

#include <algorithm>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#if defined(__linux__)
#include <dirent.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#endif

namespace modserve {

namespace {

std::mutex mu;
std::set<long> compute_tids;  // under mu

long ThisTid() {
#if defined(__linux__)
  return static_cast<long>(::syscall(SYS_gettid));
#else
  return 0;
#endif
}

}  // namespace

void MarkComputeThread() {
  std::lock_guard<std::mutex> lock(mu);
  compute_tids.insert(ThisTid());
}

bool IsComputeThread() {
  std::lock_guard<std::mutex> lock(mu);
  return compute_tids.count(ThisTid()) > 0;
}

StatusOr<int> LowerOtherThreadsToIdle() {
#if defined(__linux__) && defined(SCHED_IDLE)
  DIR* dir = ::opendir("/proc/self/task");
  if (dir == nullptr) return Unavailable(std::string("cannot list /proc/self/task: ") + std::strerror(errno));
  std::lock_guard<std::mutex> lock(mu);
  int moved = 0;
  Status failure = Status::Ok();
  while (const dirent* e = ::readdir(dir)) {
    char* end = nullptr;
    const long tid = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || compute_tids.count(tid) > 0) continue;  // ".", "..", compute threads
    sched_param param{};
    param.sched_priority = 0;
    if (::sched_setscheduler(static_cast<pid_t>(tid), SCHED_IDLE, &param) == 0) {
      ++moved;
    } else if (errno != ESRCH && failure.ok()) {  // ESRCH: the thread has exited since the listing
      failure = Unavailable("cannot put thread " + std::to_string(tid) + " under SCHED_IDLE: " + std::strerror(errno));
    }
  }
  ::closedir(dir);
  if (!failure.ok()) return failure;
  return moved;
#else
  return FailedPrecondition("SCHED_IDLE needs Linux");
#endif
}

bool RunsAtIdlePriority() {
#if defined(__linux__) && defined(SCHED_IDLE)
  return ::sched_getscheduler(0) == SCHED_IDLE;
#else
  return false;
#endif
}

int UsableCpus() {
#if defined(__linux__)
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace modserve
