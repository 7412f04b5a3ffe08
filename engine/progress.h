// ProgressReporter: training progress on stderr. On a terminal it redraws one
// bar line (step, loss, tokens/s, ETA); otherwise it prints a plain log line
// every `every` steps, so logs in CI and files stay readable.
//
// Thread-safety: not thread-safe; one reporter per training loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace modserve {

class ProgressReporter {
 public:
  ProgressReporter(int64_t first_step, int64_t total_steps, int64_t every);
  // Called after each step; `tokens` is the number of tokens that step trained on.
  void Update(int64_t step, double loss, int64_t tokens, const std::string& extra);
  // Prints a message on its own line (e.g. a validation result).
  void Message(const std::string& line);
  void Finish();
  double elapsed_seconds() const;

 private:
  std::string FormatDuration(double seconds) const;
  bool tty_;
  int64_t first_, total_, every_;
  int64_t tokens_ = 0;
  bool bar_drawn_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace modserve
