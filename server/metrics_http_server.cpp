#include "server/metrics_http_server.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <vector>

namespace modserve {
namespace {

std::string Response(const char* status, const char* type, const std::string& body, const char* extra = "") {
  return std::string("HTTP/1.1 ") + status + "\r\nContent-Type: " + type + "\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n" + extra + "Connection: close\r\n\r\n" + body;
}

}  // namespace

StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(const std::string& address, Render render,
                                                                      std::chrono::milliseconds exchange_timeout) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos) return InvalidArgument("metrics_listen must be host:port, got \"" + address + "\"");
  std::string host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* res = nullptr;
  if (int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    return InvalidArgument("metrics_listen " + address + ": " + gai_strerror(rc));
  }
  std::string error = "no address";
  int fd = -1;
  for (addrinfo* a = res; a != nullptr && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);  // accept never blocks the loop
    if (fd < 0) continue;
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, 64) != 0) {
      error = std::strerror(errno);
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(res);
  if (fd < 0) return Unavailable("metrics_listen " + address + ": cannot listen: " + error);
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  const int bound_port = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                                     : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return std::make_unique<MetricsHttpServer>(fd, bound_port, std::move(render), exchange_timeout);
}

MetricsHttpServer::MetricsHttpServer(int fd, int port, Render render, std::chrono::milliseconds exchange_timeout)
    : fd_(fd), port_(port), render_(std::move(render)), exchange_timeout_(exchange_timeout), thread_([this] { Serve(); }) {}

MetricsHttpServer::~MetricsHttpServer() {
  stop_.store(true);
  thread_.join();
  ::close(fd_);
}

void MetricsHttpServer::Serve() {
  using Clock = std::chrono::steady_clock;
  struct Connection {
    int fd;
    Clock::time_point deadline;  // the whole exchange: a slow client is dropped
    std::string in, out;         // the request so far; the response (empty while reading)
    size_t sent = 0;
  };
  std::vector<Connection> conns;
  std::vector<pollfd> fds;
  while (!stop_.load()) {
    fds.clear();
    fds.push_back({fd_, static_cast<short>(conns.size() < kMaxConnections ? POLLIN : 0), 0});
    auto wait = std::chrono::milliseconds(100);
    const auto now = Clock::now();
    for (const Connection& c : conns) {
      fds.push_back({c.fd, static_cast<short>(c.out.empty() ? POLLIN : POLLOUT), 0});
      wait = std::min(wait, std::chrono::ceil<std::chrono::milliseconds>(std::max(c.deadline - now, Clock::duration(0))));
    }
    if (::poll(fds.data(), fds.size(), static_cast<int>(wait.count())) < 0) continue;
    // Connections first (their pollfds are 1..n), then new ones.
    for (size_t i = 0; i < conns.size(); ++i) {
      Connection& c = conns[i];
      const short ev = fds[i + 1].revents;
      if (ev == 0) continue;
      if (c.out.empty()) {
        char buf[2048];
        const ssize_t n = ::recv(c.fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n > 0) c.in.append(buf, static_cast<size_t>(n));
        const bool ended = n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
        if (ended || c.in.find("\r\n\r\n") != std::string::npos || c.in.size() >= kMaxRequestBytes) {
          c.out = Respond(c.in);
        }
      } else {
        const ssize_t n = ::send(c.fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) c.sent += static_cast<size_t>(n);
        if (n < 0 && errno != EAGAIN && errno != EINTR) c.sent = c.out.size();  // the client went away
      }
    }
    const auto after = Clock::now();
    conns.erase(std::remove_if(conns.begin(), conns.end(),
                               [&](const Connection& c) {
                                 const bool done = (!c.out.empty() && c.sent == c.out.size()) || after >= c.deadline;
                                 if (done) ::close(c.fd);
                                 return done;
                               }),
                conns.end());
    if ((fds[0].revents & POLLIN) != 0) {
      while (conns.size() < kMaxConnections) {
        const int conn = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (conn < 0) break;
        conns.push_back({conn, after + exchange_timeout_, {}, {}, 0});
      }
    }
  }
  for (const Connection& c : conns) ::close(c.fd);
}

std::string MetricsHttpServer::Respond(const std::string& req) const {
  const auto line_end = req.find("\r\n");
  if (line_end == std::string::npos) return Response("400 Bad Request", "text/plain", "bad request\n");
  const std::string line = req.substr(0, line_end);
  const auto sp1 = line.find(' ');
  const auto sp2 = line.find(' ', sp1 + 1);
  const std::string method = line.substr(0, sp1);
  std::string path = sp1 == std::string::npos ? "" : line.substr(sp1 + 1, sp2 - sp1 - 1);
  path = path.substr(0, path.find('?'));
  if (method != "GET" && method != "HEAD") {
    return Response("405 Method Not Allowed", "text/plain", "only GET\n", "Allow: GET, HEAD\r\n");
  }
  if (path != "/metrics") return Response("404 Not Found", "text/plain", "metrics are at /metrics\n");
  std::string resp = Response("200 OK", "text/plain; version=0.0.4; charset=utf-8", render_());
  if (method == "HEAD") resp = resp.substr(0, resp.find("\r\n\r\n") + 4);
  return resp;
}

}  // namespace modserve
