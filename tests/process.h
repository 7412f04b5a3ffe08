// Test helpers for tests that run mod-server as a child process: Spawn
// starts it with stderr on a pipe, ReadUntil reads that stderr until a
// pattern matches, WaitExit waits for the exit code (killing it after a
// timeout), ResidentBytes reads a process's resident set size, ThreadPolicies
// its threads' scheduling policies.
//
// Thread-safety: one thread per Process.
#pragma once

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace modserve::testing {

struct Process {
  pid_t pid = -1;
  int err_fd = -1;
  std::string err;  // stderr read so far
};

inline Process Spawn(const std::vector<std::string>& args) {
  int fds[2];
  EXPECT_EQ(::pipe(fds), 0);
  Process p;
  p.pid = ::fork();
  if (p.pid == 0) {
    ::dup2(fds[1], 2);
    ::close(fds[0]);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  p.err_fd = fds[0];
  return p;
}

// Reads the child's stderr until `pattern` matches (or EOF / timeout).
inline std::smatch ReadUntil(Process& p, const std::regex& pattern, double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  std::smatch m;
  char buf[512];
  while (!std::regex_search(p.err, m, pattern) && std::chrono::steady_clock::now() < until) {
    pollfd pfd{p.err_fd, POLLIN, 0};
    if (::poll(&pfd, 1, 100) <= 0) continue;
    const ssize_t n = ::read(p.err_fd, buf, sizeof(buf));
    if (n <= 0) break;
    p.err.append(buf, static_cast<size_t>(n));
  }
  std::regex_search(p.err, m, pattern);
  return m;
}

// Reads the rest of the child's stderr (until EOF, or `seconds`).
inline void ReadToEnd(Process& p, double seconds) { ReadUntil(p, std::regex("\\x01never\\x02"), seconds); }

inline int WaitExit(pid_t pid, double seconds) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < until) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return -1;
}

// Kills and reaps the process at the end of the scope unless it was reaped
// (pid set to -1): a failed ASSERT must not leave a server running.
struct KillAtExit {
  Process& p;
  ~KillAtExit() {
    if (p.pid <= 0) return;
    ::kill(p.pid, SIGKILL);
    ::waitpid(p.pid, nullptr, 0);
  }
};

// The scheduling policy (SCHED_OTHER 0, SCHED_IDLE 5, ...) of each thread
// of process `pid`, by thread id: field 41 of /proc/PID/task/TID/stat.
inline std::map<int, int> ThreadPolicies(pid_t pid) {
  std::map<int, int> out;
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(entry.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), {});
    const auto close = stat.rfind(')');  // the name may hold spaces and parentheses
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));  // from field 3 (state) on
    std::string field;
    for (int f = 3; f <= 41 && rest >> field; ++f) {
      if (f == 41) out[std::stoi(entry.path().filename().string())] = std::stoi(field);
    }
  }
  return out;
}

// Resident set size of process `pid` in bytes (VmRSS), or -1.
inline int64_t ResidentBytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;  // "VmRSS:   1234 kB"
  }
  return -1;
}

}  // namespace modserve::testing
