// ByteRegex: the syntax tree of a TokenGuide pattern (token_guide.h gives the
// language), over bytes: every character becomes the alternatives of its
// UTF-8 byte sequences, so the tree's leaves are byte ranges.
//
// Thread-safety: plain values and a pure function.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/status.h"

namespace modserve {

struct RegexNode {
  // kMultiByte: any well-formed multi-byte UTF-8 character (2 to 4 bytes, no
  // surrogates), one node so that its automaton can share its continuation states.
  enum class Kind { kEmpty, kByteRange, kMultiByte, kConcat, kAlt, kRepeat };
  Kind kind = Kind::kEmpty;
  uint8_t lo = 0, hi = 0;       // kByteRange: one byte in [lo, hi]
  std::vector<int32_t> kids;    // kConcat, kAlt: the parts; kRepeat: the one repeated
  int32_t min = 0, max = 0;     // kRepeat: {min, max}; max -1: unbounded
};

struct ByteRegex {
  std::vector<RegexNode> nodes;  // kids refer to indices here
  int32_t root = 0;

  int32_t Add(RegexNode n);
  int32_t Range(uint8_t lo, uint8_t hi);  // one byte in [lo, hi]
  int32_t Bytes(std::string_view bytes);  // the concatenation of these bytes
};

// INVALID_ARGUMENT "<field>: <problem> at offset N" for a pattern outside the language.
StatusOr<ByteRegex> ParseByteRegex(std::string_view pattern, const std::string& field, int64_t max_repeat,
                                   int64_t max_depth);

}  // namespace modserve
