// Test helpers for gRPC clients: a deadline `seconds` from now, and a
// GenerateRequest with a prompt and max_tokens.
//
// Thread-safety: pure functions.
#pragma once

#include <chrono>
#include <string>

#include "modserve/v1/modserve.pb.h"

namespace modserve::testing {

inline std::chrono::system_clock::time_point In(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::duration<double>(seconds));
}

inline v1::GenerateRequest Request(const std::string& prompt, int max_tokens) {
  v1::GenerateRequest r;
  r.set_prompt(prompt);
  r.set_max_tokens(max_tokens);
  return r;
}

}  // namespace modserve::testing
