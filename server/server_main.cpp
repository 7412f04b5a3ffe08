// mod-server: serves a Mixture-of-Depths model over gRPC (see README "Server").
// SIGTERM/SIGINT drain: health goes NOT_SERVING, new requests get UNAVAILABLE,
// in-flight requests get drain_grace_seconds to finish, then the process exits 0.
#include <csignal>
#include <cstdio>

#include "engine/allocator_tuning.h"
#include "server/server_app.h"
#include "server/server_config.h"

int main(int argc, char** argv) {
  // Block the stop signals in every thread; main waits for them below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  modserve::TuneAllocatorForDecoding();
  bool help = false;
  auto cfg = modserve::LoadServerConfig(argc, argv, &help);
  if (help) return 0;
  if (!cfg.ok()) {
    std::fprintf(stderr, "mod-server: %s\n", cfg.status().message().c_str());
    return 2;
  }
  std::fprintf(stderr, "mod-server: loading %s (%s, %s)\n", cfg->model.c_str(), cfg->device.c_str(), cfg->dtype.c_str());
  auto app = modserve::ServerApp::Start(*cfg);
  if (!app.ok()) {
    std::fprintf(stderr, "mod-server: %s\n", app.status().ToString().c_str());
    return 1;
  }
  std::fprintf(stderr, "mod-server: serving modserve.v1.Generator on %s (port %d), metrics on http://%s/metrics (port %d)\n",
               cfg->listen.c_str(), (*app)->grpc_port(), cfg->metrics_listen.c_str(), (*app)->metrics_port());
  int sig = 0;
  sigwait(&stop_signals, &sig);
  (*app)->BeginDrain();
  std::fprintf(stderr, "mod-server: %s: draining (grace %.1f s)\n", sig == SIGTERM ? "SIGTERM" : "SIGINT",
               cfg->drain_grace_seconds);
  (*app)->FinishDrain(std::chrono::duration<double>(cfg->drain_grace_seconds));
  std::fprintf(stderr, "mod-server: stopped\n");
  return 0;
}
