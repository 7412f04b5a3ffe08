// RequestLog: the server's request log, one JSON line per ended call of
// Generate, GenerateStream, Tokenize or Detokenize (accepted or refused), for operators: who asked, what
// came back, how long it took. Lines go to stderr, stdout or a file
// (appended), written by the log's own thread, so no caller (a gRPC reactor)
// ever blocks on the destination: a line is queued, and when kMaxQueued
// lines wait (the destination is stuck) new ones are dropped and counted,
// as are lines whose write fails (a full disk: said once on stderr until a
// write succeeds again; a line cut short is cut off again in a file only
// this log appended to, and elsewhere (a pipe) its fragment is ended by a
// newline, so the lines after it stay whole); the next line written carries "log_lines_dropped":
// the lines dropped since the last such note. Reopen() (mod-server on SIGHUP) opens a file
// destination's path again, so that after logrotate moved the file the log
// goes on in a new one at that path.
//
// Thread-safety: Write(), Reopen() and dropped() from any thread; Open and the
// destructor (which writes every queued line, then closes; see kCloseWait)
// on one.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/status.h"

namespace modserve {

// What ended a completion with finish reason stop: an entry of
// GenerateRequest.stop, or of stop_token_ids (token_id >= 0).
struct StopMatch {
  std::string text;
  int64_t token_id = -1;
  bool matched() const { return token_id >= 0 || !text.empty(); }  // else the completion ended otherwise
};

// What the log says about one call.
struct RequestRecord {
  std::string rpc;         // "Generate", "GenerateStream", "Tokenize" or "Detokenize"
  std::string request_id;  // empty when the call was refused before it got one
  std::string peer;        // gRPC's peer string, e.g. "ipv4:127.0.0.1:40312"
  std::string code;        // gRPC code name, e.g. "OK", "INVALID_ARGUMENT"
  std::string message;     // the error message (empty for OK)
  // "length", "eos", "stop"; empty unless the call succeeded. With n > 1:
  // each completion's, in index order, joined by commas ("length,eos").
  std::string finish_reason;
  // Per completion, in index order, what stopped it (written as "stop": the
  // string or the token id; with n > 1 an array, null for the completions
  // that did not end on a stop); empty: none did.
  std::vector<StopMatch> stops;
  std::string guide;               // "regex", "choice" or "json" for a guided request; empty: none
  int64_t n = 1;                   // completions asked for (GenerateRequest.n); written when > 1
  int32_t priority = 0;            // GenerateRequest.priority; written when not 0
  int64_t prompt_tokens = -1;      // -1: unknown (the call did not finish OK); the prompt's, once (Tokenize: the text's)
  int64_t completion_tokens = -1;  // this and the rest: summed over the n completions
  int64_t cached_prompt_tokens = -1;
  int64_t routed_computed = -1;
  int64_t routed_skipped = -1;
  double ttft_seconds = -1;        // arrival to the first token; -1: no token
  double duration_seconds = 0;     // arrival to the status
};

// The record as one JSON object (no newline), stamped with `at` (UTC,
// milliseconds); fields that are unknown are left out.
std::string FormatRequestRecord(const RequestRecord& r, std::chrono::system_clock::time_point at);

class RequestLog {
 public:
  static constexpr size_t kMaxQueued = 4096;
  // At destruction, how long the queued lines get to be written; a writer
  // still stuck then (a destination that stopped taking bytes) is left
  // behind, so a drain never hangs on its log.
  static constexpr std::chrono::seconds kCloseWait{2};

  // `destination`: "stderr", "stdout" or a file path (created or appended to).
  static StatusOr<std::unique_ptr<RequestLog>> Open(const std::string& destination);
  ~RequestLog();
  RequestLog(const RequestLog&) = delete;
  RequestLog& operator=(const RequestLog&) = delete;

  // Queues one line (a JSON object, without the newline); never blocks on I/O.
  void Write(std::string line);
  // A file destination: opens its path again (creating it) and writes the
  // lines not yet written there; the old file is closed. stderr and stdout:
  // nothing to do. On an error the log keeps writing where it did.
  Status Reopen();
  int64_t dropped() const;

 private:
  struct Shared;  // the queue and the destination, shared with the writer thread
  explicit RequestLog(std::shared_ptr<Shared> shared);

  std::shared_ptr<Shared> shared_;
};

}  // namespace modserve
