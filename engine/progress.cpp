#include "engine/progress.h"

#include <unistd.h>

#include <cstdio>

namespace modserve {

ProgressReporter::ProgressReporter(int64_t first_step, int64_t total_steps, int64_t every)
    : tty_(isatty(fileno(stderr)) != 0), first_(first_step), total_(total_steps), every_(every < 1 ? 1 : every),
      start_(std::chrono::steady_clock::now()) {}

double ProgressReporter::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string ProgressReporter::FormatDuration(double s) const {
  char buf[32];
  const auto t = static_cast<long>(s);
  std::snprintf(buf, sizeof buf, "%ldh%02ldm%02lds", t / 3600, (t / 60) % 60, t % 60);
  return buf;
}

void ProgressReporter::Update(int64_t step, double loss, int64_t tokens, const std::string& extra) {
  tokens_ += tokens;
  const int64_t done = step + 1 - first_;
  const bool last = step + 1 >= total_;
  if (!tty_ && !last && (step + 1) % every_ != 0) return;
  const double el = elapsed_seconds();
  const double tok_s = el > 0 ? static_cast<double>(tokens_) / el : 0.0;
  const double eta = done > 0 ? el / static_cast<double>(done) * static_cast<double>(total_ - step - 1) : 0.0;
  if (tty_) {
    const int width = 30;
    const int filled = total_ > 0 ? static_cast<int>(width * (step + 1) / total_) : width;
    std::string bar(static_cast<size_t>(filled), '#');
    bar.append(static_cast<size_t>(width - filled), '.');
    std::fprintf(stderr, "\r[%s] %lld/%lld loss %.4f %.0f tok/s ETA %s %s\033[K", bar.c_str(), static_cast<long long>(step + 1),
                 static_cast<long long>(total_), loss, tok_s, FormatDuration(eta).c_str(), extra.c_str());
    bar_drawn_ = true;
  } else {
    std::fprintf(stderr, "step %lld/%lld loss %.4f tok/s %.0f elapsed %s eta %s %s\n", static_cast<long long>(step + 1),
                 static_cast<long long>(total_), loss, tok_s, FormatDuration(el).c_str(), FormatDuration(eta).c_str(), extra.c_str());
  }
  std::fflush(stderr);
}

void ProgressReporter::Message(const std::string& line) {
  if (tty_ && bar_drawn_) std::fprintf(stderr, "\n");
  bar_drawn_ = false;
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

void ProgressReporter::Finish() {
  if (tty_ && bar_drawn_) std::fprintf(stderr, "\n");
  bar_drawn_ = false;
}

}  // namespace modserve
