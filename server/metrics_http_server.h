// MetricsHttpServer: a minimal HTTP/1.1 server for Prometheus scrapes: GET
// /metrics returns the text exposition format; other paths 404, other
// methods 405; Connection: close. It runs on its own thread, so scrapes
// never wait behind inference, and serves up to kMaxConnections at once
// with one poll loop: each exchange (request and response) must finish
// within its exchange timeout (kExchangeTimeout unless given), so a slow
// or silent client never holds up a scrape and is dropped when its time is
// up.
//
// Why not prometheus-cpp's Exposer: its civetweb server fails to start
// ("null context when constructing CivetServer") in any process that links
// Debian's libtorch_cpu 1.13; a five-line program that only links
// libtorch_cpu and constructs an Exposer reproduces it. The metrics
// themselves are still prometheus-cpp's (registry, families, serializer).
//
// Thread-safety: Start/destructor from one thread; `render` is called on the
// server's thread and must be thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "engine/status.h"

namespace modserve {

class MetricsHttpServer {
 public:
  using Render = std::function<std::string()>;
  static constexpr size_t kMaxConnections = 64;
  static constexpr size_t kMaxRequestBytes = 16384;  // the head: anything longer is answered as it stands
  static constexpr std::chrono::milliseconds kExchangeTimeout{5000};

  // Binds host:port (port 0 picks a free one) and starts serving.
  static StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& address, Render render,
                                                            std::chrono::milliseconds exchange_timeout = kExchangeTimeout);
  MetricsHttpServer(int fd, int port, Render render, std::chrono::milliseconds exchange_timeout);
  ~MetricsHttpServer();  // stops the thread and closes the socket

  int port() const { return port_; }

 private:
  void Serve();
  std::string Respond(const std::string& request) const;  // the whole HTTP response

  int fd_;
  int port_;
  Render render_;
  std::chrono::milliseconds exchange_timeout_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace modserve
