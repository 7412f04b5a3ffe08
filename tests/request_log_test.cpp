// Tests of the request log (server/request_log.h): records as one JSON object
// with only the known fields, Reopen after a move, a stuck destination that
// never blocks writers and counts its drops, a write cut short that leaves
// only whole lines in the file, a bounded close, and an unopenable file.
// Part of service_tests.
#include "server/request_log.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <sstream>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace modserve {
namespace {

TEST(RequestLog, RecordsAreOneJsonObjectWithTheKnownFieldsOnly) {
  RequestRecord r;
  r.rpc = "GenerateStream";
  r.request_id = "abc";
  r.peer = "ipv4:127.0.0.1:5";
  r.code = "OK";
  r.finish_reason = "length";
  r.prompt_tokens = 6;
  r.completion_tokens = 4;
  r.routed_computed = 2;
  r.routed_skipped = 25;
  r.ttft_seconds = 0.0125;
  r.duration_seconds = 0.5;
  r.n = 3;
  r.priority = -2;
  const auto at = std::chrono::system_clock::time_point(std::chrono::milliseconds(1764639000123));
  auto j = nlohmann::json::parse(FormatRequestRecord(r, at));
  EXPECT_EQ(j["time"], "2025-12-02T01:30:00.123Z");
  EXPECT_EQ(j["rpc"], "GenerateStream");
  EXPECT_EQ(j["request_id"], "abc");
  EXPECT_EQ(j["completion_tokens"], 4);
  EXPECT_DOUBLE_EQ(j["ttft_ms"].get<double>(), 12.5);
  EXPECT_DOUBLE_EQ(j["duration_ms"].get<double>(), 500.0);
  EXPECT_FALSE(j.contains("message"));
  EXPECT_EQ(j["n"], 3);
  EXPECT_EQ(j["priority"], -2);
  EXPECT_FALSE(j.contains("stop"));
  EXPECT_FALSE(j.contains("guide"));
  r.stops = {{"", -1}, {"", -1}, {"", -1}};  // none ended on a stop
  EXPECT_FALSE(nlohmann::json::parse(FormatRequestRecord(r, at)).contains("stop"));
  r.stops = {{"\n\n", -1}, {"", -1}, {"", 7}};
  r.guide = "json";
  j = nlohmann::json::parse(FormatRequestRecord(r, at));
  EXPECT_EQ(j["stop"], nlohmann::json::parse(R"(["\n\n", null, 7])")) << "per completion: the string, none, the token id";
  EXPECT_EQ(j["guide"], "json");
  r.stops = {{"", 7}};
  EXPECT_EQ(nlohmann::json::parse(FormatRequestRecord(r, at))["stop"], 7) << "one completion: the match itself";
  RequestRecord refused;
  refused.rpc = "Generate";
  refused.code = "INVALID_ARGUMENT";
  refused.message = "max_tokens must be in [0, 1024], got -1 \xff";
  auto k = nlohmann::json::parse(FormatRequestRecord(refused, at));
  EXPECT_FALSE(k.contains("request_id"));
  EXPECT_FALSE(k.contains("prompt_tokens"));
  EXPECT_FALSE(k.contains("ttft_ms"));
  EXPECT_FALSE(k.contains("n")) << "n = 1 and priority 0 are left out";
  EXPECT_FALSE(k.contains("priority"));
  EXPECT_NE(k["message"].get<std::string>().find("max_tokens"), std::string::npos) << "invalid UTF-8 replaced, not thrown";
}

TEST(RequestLog, ReopenStartsANewFileAtThePathAndLosesNoLine) {
  const std::string path = ::testing::TempDir() + "/reopen_" + std::to_string(::getpid()) + ".log";
  std::remove(path.c_str());
  std::remove((path + ".1").c_str());
  auto count = [](const std::string& file) {
    std::ifstream in(file);
    int n = 0;
    for (std::string line; std::getline(in, line);) ++n;
    return n;
  };
  {
    auto log = RequestLog::Open(path);
    ASSERT_TRUE(log.ok()) << log.status().ToString();
    (*log)->Write("{\"n\":1}");
    for (int i = 0; i < 500 && count(path) < 1; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_EQ(count(path), 1);
    ASSERT_EQ(std::rename(path.c_str(), (path + ".1").c_str()), 0);  // logrotate moves the file
    ASSERT_TRUE((*log)->Reopen().ok());
    for (int i = 0; i < 100; ++i) (*log)->Write("{\"n\":" + std::to_string(i + 2) + "}");
  }  // closing writes every queued line
  EXPECT_EQ(count(path + ".1"), 1) << "the moved file keeps what was written to it";
  EXPECT_EQ(count(path), 100) << "every later line went to the new file";
  auto to_stderr = RequestLog::Open("stderr");
  ASSERT_TRUE(to_stderr.ok());
  EXPECT_TRUE((*to_stderr)->Reopen().ok()) << "nothing to reopen for stderr";
  std::remove(path.c_str());
  std::remove((path + ".1").c_str());
}

TEST(RequestLog, AStuckDestinationNeverBlocksWritersAndDropsAreReported) {
  const std::string fifo = ::testing::TempDir() + "/request_log_fifo";
  ::unlink(fifo.c_str());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);  // a reader that does not read yet
  ASSERT_GE(reader, 0);
  auto log = RequestLog::Open(fifo);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  const std::string line = "{\"pad\":\"" + std::string(100, 'x') + "\"}";
  constexpr int kLines = 20000;  // ~2 MB: far more than the pipe (64 KiB) and the queue hold
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kLines; ++i) (*log)->Write(line);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5)) << "writers never wait for the pipe";
  const int64_t dropped = (*log)->dropped();
  EXPECT_GT(dropped, 0);
  EXPECT_LE(dropped, kLines - static_cast<int64_t>(RequestLog::kMaxQueued));
  // Drain the pipe, then write one more line.
  std::string got;
  std::thread drain([&] {
    ::fcntl(reader, F_SETFL, 0);  // blocking reads until the log closes its end
    char buf[65536];
    for (ssize_t n; (n = ::read(reader, buf, sizeof buf)) > 0;) got.append(buf, static_cast<size_t>(n));
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  (*log)->Write("{\"last\":1}");
  log->reset();  // writes the rest, closes the FIFO: the reader sees EOF
  drain.join();
  ::close(reader);
  const auto lines = static_cast<int64_t>(std::count(got.begin(), got.end(), '\n'));
  EXPECT_EQ(lines, kLines - dropped + 1) << "every line not dropped arrives";
  // The first line written after drops says how many since the last such
  // note (the writer may take a batch while drops are still happening, so
  // there can be several): together they count every dropped line.
  const std::string key = ",\"log_lines_dropped\":";
  int64_t noted = 0;
  int notes = 0;
  for (size_t at = got.find(key); at != std::string::npos; at = got.find(key, at + 1)) {
    noted += std::stoll(got.substr(at + key.size()));
    ++notes;
  }
  EXPECT_GE(notes, 1);
  EXPECT_EQ(noted, dropped);
  EXPECT_NE(got.find("{\"last\":1}\n"), std::string::npos);
  ::unlink(fifo.c_str());
}

// A destination that refuses the bytes (a full disk) loses the lines, but
// each is counted as dropped, and stderr says so once, not per line.
TEST(RequestLog, FailedWritesAreCountedAsDroppedAndSaidOnce) {
  ::testing::internal::CaptureStderr();
  auto log = RequestLog::Open("/dev/full");
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  constexpr int kLines = 30;
  for (int i = 0; i < kLines; ++i) {
    (*log)->Write("{\"i\":" + std::to_string(i) + "}");
    if (i % 10 == 9) std::this_thread::sleep_for(std::chrono::milliseconds(50));  // several batches, several writes
  }
  for (int i = 0; i < 200 && (*log)->dropped() < kLines; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ((*log)->dropped(), kLines);
  log->reset();
  const std::string err = ::testing::internal::GetCapturedStderr();
  const std::string said = "request log: cannot write to /dev/full: No space left on device";
  EXPECT_NE(err.find(said), std::string::npos) << err;
  EXPECT_EQ(err.find(said), err.rfind(said)) << "said once: " << err;
}

// A write cut short inside a line (here by the file-size limit, in a child
// process so the limit is its own) leaves no fragment in the appended file:
// it holds whole JSON lines only, and every line not in it is counted as
// dropped.
TEST(RequestLog, AWriteCutShortLeavesOnlyWholeLinesInTheFile) {
  const std::string path = ::testing::TempDir() + "/request_log_fsize";
  ::unlink(path.c_str());
  constexpr int kLines = 30;
  constexpr rlim_t kLimit = 1000;  // the 81-byte lines end at 972 and 1053: the 13th is cut
  auto line = [](int i) {
    char id[8];
    std::snprintf(id, sizeof id, "%02d", i);
    return "{\"i\":\"" + std::string(id) + "\",\"pad\":\"" + std::string(61, 'x') + "\"}";
  };
  ASSERT_EQ(line(0).size() + 1, 81u);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    std::signal(SIGXFSZ, SIG_IGN);  // a write past the limit fails with EFBIG instead
    const rlimit limit{kLimit, kLimit};
    if (::setrlimit(RLIMIT_FSIZE, &limit) != 0 || !std::freopen("/dev/null", "w", stderr)) ::_exit(101);
    auto log = RequestLog::Open(path);
    if (!log.ok()) ::_exit(102);
    for (int i = 0; i < kLines; ++i) (*log)->Write(line(i));
    for (int wait = 0; wait < 500; ++wait) {  // until every line is written or counted
      std::ifstream in(path);
      const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (std::count(text.begin(), text.end(), '\n') + (*log)->dropped() == kLines) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::_exit(static_cast<int>((*log)->dropped()));
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  const int dropped = WEXITSTATUS(status);
  ASSERT_LE(dropped, kLines) << "the child failed before writing (exit " << dropped << ")";
  std::ifstream in(path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_FALSE(text.empty());
  EXPECT_LT(text.size(), kLimit);
  EXPECT_EQ(text.back(), '\n') << "a fragment is left at the end";
  std::istringstream lines(text);
  int whole = 0;
  for (std::string l; std::getline(lines, l);) {
    EXPECT_EQ(l, line(whole)) << "line " << whole;
    ++whole;
  }
  EXPECT_EQ(whole, static_cast<int>(kLimit / 81));
  EXPECT_EQ(whole + dropped, kLines);
}

TEST(RequestLog, ClosingOnAStuckDestinationWaitsOnlyBriefly) {
  const std::string fifo = ::testing::TempDir() + "/request_log_stuck";
  ::unlink(fifo.c_str());
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // A reader that never reads, kept open to the end of the process (closing
  // it would turn the stuck write into SIGPIPE).
  const int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(reader, 0);
  auto log = RequestLog::Open(fifo);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  for (int i = 0; i < 2000; ++i) (*log)->Write("{\"pad\":\"" + std::string(100, 'x') + "\"}");  // > the 64 KiB pipe
  const auto start = std::chrono::steady_clock::now();
  log->reset();
  const auto waited = std::chrono::steady_clock::now() - start;
  EXPECT_GE(waited, RequestLog::kCloseWait - std::chrono::milliseconds(50)) << "the queued lines got their chance";
  EXPECT_LT(waited, RequestLog::kCloseWait + std::chrono::seconds(2)) << "and then it let go";
}

TEST(RequestLog, AnUnopenableFileIsAClearError) {
  auto log = RequestLog::Open("/nonexistent-dir/requests.log");
  ASSERT_FALSE(log.ok());
  EXPECT_NE(log.status().message().find("request_log: cannot open /nonexistent-dir/requests.log"), std::string::npos);
}

}  // namespace
}  // namespace modserve
