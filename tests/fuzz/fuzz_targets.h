// Fuzz targets: each takes arbitrary bytes and must never crash, hang or
// break its invariant (checked with FUZZ_CHECK, which aborts with a message).
// They are linked into libFuzzer binaries (built with clang, see
// scripts/fuzz.sh) and into fuzz_regression_tests, which replays the seed
// corpus and every input that once found a bug (tests/fuzz/corpus/<target>/)
// in the normal build.
//
// Thread-safety: each call is independent.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace modserve::fuzz {

// DecodeGenerateRequest then ValidateGenerateRequest on raw request bytes;
// an accepted request fits the context and its limits.
void RequestValidation(const uint8_t* data, size_t size);
// Utf8StreamDecoder fed the input in pieces (cut where the input says): the
// output is valid UTF-8, the same however the input is cut, and equal to
// the input when the input is valid UTF-8.
void Utf8Stream(const uint8_t* data, size_t size);
// ParseSafetensorsHeader on a whole file: an accepted header's tensors lie
// inside the file, in order, without overlaps, each as big as its shape says.
void SafetensorsHeader(const uint8_t* data, size_t size);
// ParseServerConfigYaml on a config file: an accepted config validates or
// names the key that does not.
void ServerConfigYaml(const uint8_t* data, size_t size);
// TokenGuide::FromRegex on the input (or, when it starts with a 0 byte,
// FromChoices on the rest split at newlines; with a 1 byte, the guide of the
// JSON Schema that follows, whose pattern must always parse): an accepted guide has at most
// kMaxStates states, its moves stay in range, every state reachable from
// the start is a match or has a move on (no dead ends), and a guide from
// choices accepts each of them.
void TokenGuidePattern(const uint8_t* data, size_t size);

struct Target {
  const char* name;  // also the corpus folder's name
  void (*run)(const uint8_t*, size_t);
};
const std::vector<Target>& Targets();

}  // namespace modserve::fuzz

#define FUZZ_CHECK(cond) \
  do {                   \
    if (!(cond)) ::modserve::fuzz::Fail(#cond, __FILE__, __LINE__); \
  } while (0)

namespace modserve::fuzz {
[[noreturn]] void Fail(const char* what, const char* file, int line);
}  // namespace modserve::fuzz
