// Utf8StreamDecoder: turns a stream of bytes (the byte-level tokenizer's
// output, arriving a token at a time) into pieces of text that are always
// valid UTF-8. The bytes of a character split across tokens are held back
// until the character is complete; bytes that can never become a valid
// character are replaced by U+FFFD, one per maximal invalid subpart (as
// WHATWG/Unicode recommend).
//
// Thread-safety: a plain value; one per stream.
#pragma once

#include <string>
#include <string_view>

namespace modserve {

// U+FFFD REPLACEMENT CHARACTER, which stands in for invalid bytes.
inline constexpr std::string_view kReplacementCharacter = "\xEF\xBF\xBD";

class Utf8StreamDecoder {
 public:
  // Appends `bytes` and returns the text that is now complete.
  std::string Push(std::string_view bytes);
  // Returns what is still held (an incomplete character) as U+FFFD.
  std::string Flush();
  size_t held_bytes() const { return held_.size(); }

 private:
  std::string held_;  // a proper prefix of a possibly valid sequence
};

// True if `s` is well-formed UTF-8 (no surrogates, no overlongs, <= U+10FFFF).
bool IsValidUtf8(std::string_view s);
// The length of the longest prefix of `s` that is well-formed UTF-8 (the
// offset of the first bad or truncated sequence).
size_t ValidUtf8PrefixLength(std::string_view s);

}  // namespace modserve
