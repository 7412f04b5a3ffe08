// mod-server: serves a Mixture-of-Depths model over gRPC (see README "Server").
// SIGTERM/SIGINT drain: health goes NOT_SERVING, new requests get UNAVAILABLE,
// in-flight requests get drain_grace_seconds to finish, then the process exits 0.
// Before the model is loaded (nothing accepted yet) they exit 0 at once; a
// second one during the drain ends the in-flight requests (UNAVAILABLE) now.
// SIGHUP reopens the request log file (after logrotate moved it).
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csignal>
#include <exception>
#include <new>
#include <cstdio>
#include <thread>

#include "engine/allocator_tuning.h"
#include "engine/thread_priority.h"
#include "server/engine_loader.h"
#include "server/server_app.h"
#include "server/server_config.h"

namespace {

// The signals are turned into a byte on this pipe: libraries start
// threads before main() (so blocking the signals in main cannot cover every
// thread), and a handler is safe in any of them.
int stop_pipe[2] = {-1, -1};
// False until just before the first request can be accepted: until then a
// stop signal exits at once (a large model can take longer to load than
// the orchestrator's grace period, and nothing is in flight to drain).
std::atomic<bool> accepting{false};
static_assert(std::atomic<bool>::is_always_lock_free, "read in a signal handler");

void OnSignal(int sig) {
  if (sig != SIGHUP && !accepting.load()) {
    static const char kMessage[] = "mod-server: stop signal before serving: exiting\n";
    [[maybe_unused]] ssize_t n = ::write(2, kMessage, sizeof(kMessage) - 1);
    ::_exit(0);
  }
  const unsigned char b = static_cast<unsigned char>(sig);
  [[maybe_unused]] ssize_t n = ::write(stop_pipe[1], &b, 1);
}

int WaitForSignal() {
  unsigned char b = 0;
  while (::read(stop_pipe[0], &b, 1) < 0 && errno == EINTR) {
  }
  return b;
}

// SIGHUP: the request log opens its path again.
void ReopenLogs(modserve::ServerApp& app) {
  const modserve::Status reopened = app.ReopenLogs();
  if (reopened.ok()) {
    std::fprintf(stderr, "mod-server: SIGHUP: request log reopened\n");
  } else {
    std::fprintf(stderr, "mod-server: SIGHUP: %s\n", reopened.message().c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (::pipe(stop_pipe) != 0) {
    std::perror("mod-server: pipe");
    return 1;
  }
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);

  modserve::TuneAllocatorForDecoding();
  bool help = false;
  auto cfg = modserve::LoadServerConfig(argc, argv, &help);
  if (help) return 0;
  if (!cfg.ok()) {
    std::fprintf(stderr, "mod-server: %s\n", cfg.status().message().c_str());
    return 2;
  }
  std::fprintf(stderr, "mod-server: loading %s (%s, %s)\n", cfg->model.c_str(), cfg->device.c_str(), cfg->dtype.c_str());
  // Start reports its errors as a status; anything thrown past it (memory
  // running out while loading, say) is reported the same way, not an abort.
  auto app = [&]() -> modserve::StatusOr<std::unique_ptr<modserve::ServerApp>> {
    try {
      return modserve::ServerApp::Start(*cfg, modserve::LoadLibTorchEngine, [] { accepting.store(true); });
    } catch (const std::bad_alloc&) {
      return modserve::ResourceExhausted("start-up ran out of memory (model " + cfg->model + ")");
    } catch (const std::exception& e) {
      return modserve::Internal(std::string("start-up failed: ") + e.what());
    }
  }();
  if (!app.ok()) {
    std::fprintf(stderr, "mod-server: %s\n", app.status().ToString().c_str());
    return 1;
  }
  // The step thread has marked itself; every other thread (gRPC's, the write
  // dispatcher, the metrics endpoint, the kernel pool's workers, this one)
  // yields the cores to it.
  const int cpus = modserve::UsableCpus();
  if (cfg->IdleIoPriority(cpus)) {
    auto moved = modserve::LowerOtherThreadsToIdle();
    if (moved.ok()) {
      std::fprintf(stderr, "mod-server: io_priority idle: %d threads besides the step thread under SCHED_IDLE (%d CPUs)\n", *moved, cpus);
    } else {
      std::fprintf(stderr, "mod-server: io_priority: threads kept at normal priority: %s\n", moved.status().message().c_str());
    }
  } else {
    std::fprintf(stderr, "mod-server: io_priority %s: every thread at normal priority (device %s, %d CPUs, %d LibTorch threads)\n",
                 cfg->io_priority.c_str(), cfg->device.c_str(), cpus, cfg->EngineTorchThreads());
  }
  std::fprintf(stderr, "mod-server: serving modserve.v1.Generator on %s (port %d), metrics on http://%s/metrics (port %d)\n",
               cfg->listen.c_str(), (*app)->grpc_port(), cfg->metrics_listen.c_str(), (*app)->metrics_port());
  int sig = WaitForSignal();
  for (; sig == SIGHUP; sig = WaitForSignal()) ReopenLogs(**app);
  (*app)->BeginDrain();
  std::fprintf(stderr, "mod-server: %s: draining (grace %.1f s; another SIGTERM or SIGINT ends it now)\n",
               sig == SIGTERM ? "SIGTERM" : "SIGINT", cfg->drain_grace_seconds);
  // Signals during the drain: SIGHUP still reopens the log; a second stop
  // signal cuts the grace short. The byte 0 (from main) ends the watch.
  std::thread watch([&app] {
    for (int s = WaitForSignal(); s != 0; s = WaitForSignal()) {
      if (s == SIGHUP) {
        ReopenLogs(**app);
        continue;
      }
      std::fprintf(stderr, "mod-server: %s during the drain: ending in-flight requests now\n", s == SIGTERM ? "SIGTERM" : "SIGINT");
      (*app)->CutGrace();
      return;
    }
  });
  (*app)->FinishDrain(std::chrono::duration<double>(cfg->drain_grace_seconds));
  const unsigned char end = 0;
  [[maybe_unused]] ssize_t n = ::write(stop_pipe[1], &end, 1);
  watch.join();
  std::fprintf(stderr, "mod-server: stopped\n");
  return 0;
}
