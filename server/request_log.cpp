#include "server/request_log.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

namespace modserve {
namespace {

std::string Utc(std::chrono::system_clock::time_point at) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(at.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  const size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03dZ", static_cast<int>(ms % 1000));
  return buf;
}

// Milliseconds with microsecond resolution, as a JSON number.
double Ms(double seconds) { return std::round(seconds * 1e6) / 1e3; }

}  // namespace

std::string FormatRequestRecord(const RequestRecord& r, std::chrono::system_clock::time_point at) {
  nlohmann::ordered_json j;
  j["time"] = Utc(at);
  j["rpc"] = r.rpc;
  if (!r.request_id.empty()) j["request_id"] = r.request_id;
  if (!r.peer.empty()) j["peer"] = r.peer;
  j["code"] = r.code;
  if (!r.message.empty()) j["message"] = r.message;
  if (!r.finish_reason.empty()) j["finish_reason"] = r.finish_reason;
  if (r.prompt_tokens >= 0) j["prompt_tokens"] = r.prompt_tokens;
  if (r.completion_tokens >= 0) j["completion_tokens"] = r.completion_tokens;
  if (r.routed_computed >= 0) j["routed_computed"] = r.routed_computed;
  if (r.routed_skipped >= 0) j["routed_skipped"] = r.routed_skipped;
  if (r.ttft_seconds >= 0) j["ttft_ms"] = Ms(r.ttft_seconds);
  j["duration_ms"] = Ms(r.duration_seconds);
  // Invalid UTF-8 (none of ours should be) becomes U+FFFD instead of throwing.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

struct RequestLog::Shared {
  std::FILE* out = nullptr;
  bool owned = false;  // fclose at the end (a file, not stderr / stdout)
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> queue;  // under mu
  int64_t dropped = 0;            // under mu: lines dropped in all
  int64_t unreported = 0;         // under mu: of those, not yet said in a written line
  bool stop = false;              // under mu
  bool done = false;              // under mu: the writer wrote everything and returned

  // The writer thread: takes every queued line at once and writes them in
  // one fwrite (a line is never split by other output to the same stream).
  void Run() {
    std::deque<std::string> lines;
    std::string batch;
    std::unique_lock<std::mutex> lock(mu);
    while (true) {
      cv.wait(lock, [this] { return stop || !queue.empty(); });
      if (queue.empty()) break;  // stopping, and everything is written
      lines.swap(queue);  // the writers' queue is empty again at once
      const int64_t note = unreported;
      unreported = 0;
      lock.unlock();
      std::string& first = lines.front();
      if (note > 0 && !first.empty() && first.back() == '}') {
        first.insert(first.size() - 1, ",\"log_lines_dropped\":" + std::to_string(note));
      }
      batch.clear();
      for (const std::string& line : lines) {
        batch += line;
        batch += '\n';
      }
      lines.clear();
      std::fwrite(batch.data(), 1, batch.size(), out);
      std::fflush(out);
      lock.lock();
    }
    if (owned) std::fclose(out);
    done = true;
    cv.notify_all();
  }
};

StatusOr<std::unique_ptr<RequestLog>> RequestLog::Open(const std::string& destination) {
  auto shared = std::make_shared<Shared>();
  if (destination == "stderr") {
    shared->out = stderr;
  } else if (destination == "stdout") {
    shared->out = stdout;
  } else if (destination.empty()) {
    return InvalidArgument("request_log: empty destination (use stderr, stdout or a file path)");
  } else {
    shared->out = std::fopen(destination.c_str(), "a");
    if (shared->out == nullptr) {
      return InvalidArgument("request_log: cannot open " + destination + " for appending: " + std::strerror(errno));
    }
    shared->owned = true;
  }
  return std::unique_ptr<RequestLog>(new RequestLog(std::move(shared)));
}

RequestLog::RequestLog(std::shared_ptr<Shared> shared) : shared_(std::move(shared)) {
  // The thread holds the state too, so it may outlive this object (kCloseWait).
  std::thread([s = shared_] { s->Run(); }).detach();
}

RequestLog::~RequestLog() {
  std::unique_lock<std::mutex> lock(shared_->mu);
  shared_->stop = true;
  shared_->cv.notify_all();
  shared_->cv.wait_for(lock, kCloseWait, [this] { return shared_->done; });
}

void RequestLog::Write(std::string line) {
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    if (shared_->queue.size() >= kMaxQueued) {
      ++shared_->dropped;
      ++shared_->unreported;
      return;
    }
    shared_->queue.push_back(std::move(line));
  }
  shared_->cv.notify_all();
}

int64_t RequestLog::dropped() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  return shared_->dropped;
}

}  // namespace modserve
