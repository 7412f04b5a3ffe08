#include "server/request_log.h"

#include <algorithm>

#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

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
  auto stop = [](const StopMatch& m) -> nlohmann::ordered_json {
    if (!m.matched()) return nullptr;
    if (m.token_id >= 0) return m.token_id;
    return m.text;
  };
  const bool stopped = std::any_of(r.stops.begin(), r.stops.end(), [](const StopMatch& m) { return m.matched(); });
  if (stopped && r.stops.size() == 1) {
    j["stop"] = stop(r.stops[0]);
  } else if (stopped) {
    j["stop"] = nlohmann::ordered_json::array();
    for (const StopMatch& m : r.stops) j["stop"].push_back(stop(m));
  }
  if (!r.guide.empty()) j["guide"] = r.guide;
  if (r.n > 1) j["n"] = r.n;
  if (r.priority != 0) j["priority"] = r.priority;
  if (r.prompt_tokens >= 0) j["prompt_tokens"] = r.prompt_tokens;
  if (r.completion_tokens >= 0) j["completion_tokens"] = r.completion_tokens;
  if (r.cached_prompt_tokens >= 0) j["cached_prompt_tokens"] = r.cached_prompt_tokens;
  if (r.routed_computed >= 0) j["routed_computed"] = r.routed_computed;
  if (r.routed_skipped >= 0) j["routed_skipped"] = r.routed_skipped;
  if (r.ttft_seconds >= 0) j["ttft_ms"] = Ms(r.ttft_seconds);
  j["duration_ms"] = Ms(r.duration_seconds);
  // Invalid UTF-8 (none of ours should be) becomes U+FFFD instead of throwing.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Writes all of `data` to `fd` (retrying short writes and EINTR); gives up on
// an error (a full disk, a closed pipe: what is left is lost, not retried).
// Returns the bytes written; *error gets the errno (0: all written).
static size_t WriteAll(int fd, const char* data, size_t n, int* error) {
  size_t done = 0;
  *error = 0;
  while (done < n) {
    const ssize_t w = ::write(fd, data + done, n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      *error = w < 0 ? errno : EIO;
      break;
    }
    done += static_cast<size_t>(w);
  }
  return done;
}

// The size of the regular file `fd` appends to (O_APPEND: every write lands
// at its end), or -1 for anything else (a pipe, a terminal, a file written
// at an offset).
static off_t AppendedFileSize(int fd) {
  struct stat st;
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || (flags & O_APPEND) == 0 || ::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return -1;
  return st.st_size;
}

struct RequestLog::Shared {
  // A raw descriptor, not stdio: a FILE would be flushed by exit(), and on a
  // stuck destination that flush would hang the process the writer left.
  int fd = -1;
  bool owned = false;  // close at the end (a file, not stderr / stdout)
  std::string path;    // a file destination's path (for Reopen)
  int reopened = -1;   // under mu: a descriptor Reopen opened, for the writer to switch to
  std::mutex mu;
  std::condition_variable cv;
  std::deque<std::string> queue;  // under mu
  int64_t dropped = 0;            // under mu: lines dropped in all
  int64_t unreported = 0;         // under mu: of those, not yet said in a written line
  bool stop = false;              // under mu
  bool done = false;              // under mu: the writer wrote everything and returned
  bool failing = false;           // writer only: the last write failed (said once on stderr)
  bool torn = false;              // writer only: a failed write left part of a line: end it first

  // Writes one chunk of whole lines; the lines a failed write did not finish
  // count as dropped (said in the next line written) and, the first time
  // after a success, on stderr. `note`: the drop count the chunk's first line
  // carries, counted again if that line is lost.
  void WriteChunk(std::string chunk, int64_t note) {
    if (torn) chunk.insert(0, 1, '\n');  // the fragment a failed write left becomes a line of its own
    const off_t start = AppendedFileSize(fd);
    int error = 0;
    size_t written = WriteAll(fd, chunk.data(), chunk.size(), &error);
    if (error == 0) {
      failing = false;
      torn = false;
      return;
    }
    const size_t skip = torn ? 1 : 0;
    if (written > skip && chunk[written - 1] != '\n') {
      // Cut short inside a line: on a file only we appended to since `start`,
      // the fragment is cut off again, so the file holds whole lines only.
      const size_t last_newline = chunk.rfind('\n', written - 1);
      const size_t whole = std::max(skip, last_newline == std::string::npos ? 0 : last_newline + 1);  // bytes of whole lines
      if (start >= 0 && AppendedFileSize(fd) == start + static_cast<off_t>(written) &&
          ::ftruncate(fd, start + static_cast<off_t>(whole)) == 0) {
        written = whole;
      }
    }
    if (written > skip) torn = chunk[written - 1] != '\n';
    const auto total = static_cast<int64_t>(std::count(chunk.begin() + static_cast<std::ptrdiff_t>(skip), chunk.end(), '\n'));
    const auto finished = static_cast<int64_t>(
        std::count(chunk.begin() + static_cast<std::ptrdiff_t>(skip), chunk.begin() + static_cast<std::ptrdiff_t>(std::max(written, skip)), '\n'));
    {
      std::lock_guard<std::mutex> lock(mu);
      dropped += total - finished;
      unreported += total - finished + (finished == 0 ? note : 0);
    }
    if (!failing) {
      std::fprintf(stderr, "mod-server: request log: cannot write to %s: %s; lines are dropped (counted in log_lines_dropped) until a write succeeds\n",
                   path.empty() ? (fd == STDOUT_FILENO ? "stdout" : "stderr") : path.c_str(), std::strerror(error));
    }
    failing = true;
  }

  // The writer thread: takes every queued line at once and writes them in
  // whole-line chunks of at most PIPE_BUF bytes, each one write(2): on a pipe
  // such a write is atomic, and on an O_APPEND file every write is, so no
  // line (shorter than PIPE_BUF) is split by other output to the same place.
  void Run() {
    std::deque<std::string> lines;
    std::string chunk;
    std::unique_lock<std::mutex> lock(mu);
    while (true) {
      cv.wait(lock, [this] { return stop || !queue.empty() || reopened >= 0; });
      if (reopened >= 0) {  // switch between lines, never inside a chunk
        ::close(fd);
        fd = reopened;
        reopened = -1;
      }
      if (queue.empty()) {
        if (stop) break;  // stopping, and everything is written
        continue;
      }
      lines.swap(queue);  // the writers' queue is empty again at once
      const int64_t note = unreported;
      unreported = 0;
      lock.unlock();
      std::string& first = lines.front();
      if (note > 0 && !first.empty() && first.back() == '}') {
        first.insert(first.size() - 1, ",\"log_lines_dropped\":" + std::to_string(note));
      }
      chunk.clear();
      int64_t chunk_note = note;  // carried by the first chunk's first line
      for (const std::string& line : lines) {
        if (!chunk.empty() && chunk.size() + line.size() + 1 > PIPE_BUF) {
          WriteChunk(chunk, chunk_note);
          chunk.clear();
          chunk_note = 0;
        }
        chunk += line;
        chunk += '\n';
      }
      WriteChunk(chunk, chunk_note);
      lines.clear();
      lock.lock();
    }
    if (owned) ::close(fd);
    if (reopened >= 0) ::close(reopened);
    done = true;
    cv.notify_all();
  }
};

StatusOr<std::unique_ptr<RequestLog>> RequestLog::Open(const std::string& destination) {
  auto shared = std::make_shared<Shared>();
  if (destination == "stderr") {
    shared->fd = STDERR_FILENO;
  } else if (destination == "stdout") {
    std::fflush(stdout);  // what stdio holds goes first; the log writes past it
    shared->fd = STDOUT_FILENO;
  } else if (destination.empty()) {
    return InvalidArgument("request_log: empty destination (use stderr, stdout or a file path)");
  } else {
    shared->fd = ::open(destination.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (shared->fd < 0) {
      return InvalidArgument("request_log: cannot open " + destination + " for appending: " + std::strerror(errno));
    }
    shared->owned = true;
    shared->path = destination;
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

Status RequestLog::Reopen() {
  if (!shared_->owned) return Status::Ok();  // stderr or stdout
  const int fd = ::open(shared_->path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) {
    return InvalidArgument("request_log: cannot reopen " + shared_->path + ": " + std::strerror(errno) +
                           "; still writing to the file it had open");
  }
  {
    std::lock_guard<std::mutex> lock(shared_->mu);
    if (shared_->reopened >= 0) ::close(shared_->reopened);  // two reopens before the writer woke: the newer wins
    shared_->reopened = fd;
  }
  shared_->cv.notify_all();
  return Status::Ok();
}

int64_t RequestLog::dropped() const {
  std::lock_guard<std::mutex> lock(shared_->mu);
  return shared_->dropped;
}

}  // namespace modserve
