// Test helpers for the /metrics endpoint: HttpGet sends a raw HTTP request to
// 127.0.0.1:port and returns the whole response; Scrape fetches /metrics and
// parses it into {"name{labels}": value} (labels as the server prints them).
//
// Thread-safety: pure functions.
#pragma once

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <sstream>
#include <string>

namespace modserve::testing {

inline std::string HttpGet(int port, const std::string& request) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    ::close(fd);
    return "";
  }
  ::send(fd, request.data(), request.size(), 0);
  ::shutdown(fd, SHUT_WR);  // the request is complete
  std::string out;
  char buf[8192];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof(buf), 0)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return out;
}

inline std::map<std::string, double> Scrape(int port) {
  std::map<std::string, double> out;
  const std::string page = HttpGet(port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n");
  const auto body = page.find("\r\n\r\n");
  if (body == std::string::npos) return out;
  std::istringstream lines(page.substr(body + 4));
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] == '#') continue;
    const auto sp = line.rfind(' ');
    if (sp == std::string::npos) continue;
    out[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  return out;
}

}  // namespace modserve::testing
