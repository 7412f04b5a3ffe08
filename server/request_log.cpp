#include "server/request_log.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <vector>

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

StatusOr<std::unique_ptr<RequestLog>> RequestLog::Open(const std::string& destination) {
  if (destination == "stderr") return std::unique_ptr<RequestLog>(new RequestLog(stderr, false));
  if (destination == "stdout") return std::unique_ptr<RequestLog>(new RequestLog(stdout, false));
  if (destination.empty()) return InvalidArgument("request_log: empty destination (use stderr, stdout or a file path)");
  std::FILE* f = std::fopen(destination.c_str(), "a");
  if (f == nullptr) {
    return InvalidArgument("request_log: cannot open " + destination + " for appending: " + std::strerror(errno));
  }
  return std::unique_ptr<RequestLog>(new RequestLog(f, true));
}

RequestLog::RequestLog(std::FILE* out, bool owned) : out_(out), owned_(owned), writer_([this] { Run(); }) {}

RequestLog::~RequestLog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  writer_.join();
  if (owned_) {
    std::fclose(out_);
  } else {
    std::fflush(out_);
  }
}

void RequestLog::Write(std::string line) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (queue_.size() >= kMaxQueued) {
      ++dropped_;
      ++unreported_;
      return;
    }
    queue_.push_back(std::move(line));
  }
  cv_.notify_one();
}

int64_t RequestLog::dropped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

void RequestLog::Run() {
  std::vector<std::string> batch;
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and everything is written
    batch.assign(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
    queue_.clear();
    const int64_t unreported = unreported_;
    unreported_ = 0;
    lock.unlock();
    if (unreported > 0 && !batch.empty() && !batch.front().empty() && batch.front().back() == '}') {
      std::string& first = batch.front();
      first.insert(first.size() - 1, ",\"log_lines_dropped\":" + std::to_string(unreported));
    }
    for (const std::string& line : batch) {
      std::fwrite(line.data(), 1, line.size(), out_);
      std::fputc('\n', out_);
    }
    std::fflush(out_);
    lock.lock();
  }
}

}  // namespace modserve
