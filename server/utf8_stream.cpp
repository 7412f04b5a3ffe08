#include "server/utf8_stream.h"

#include <cstdint>

namespace modserve {
namespace {

// Length of the sequence a lead byte starts (0: not a lead byte).
int SequenceLength(uint8_t b) {
  if (b < 0x80) return 1;
  if (b >= 0xC2 && b <= 0xDF) return 2;
  if (b >= 0xE0 && b <= 0xEF) return 3;
  if (b >= 0xF0 && b <= 0xF4) return 4;
  return 0;
}

// Whether `b` may follow `lead` as the second byte (rules out overlongs,
// surrogates and code points above U+10FFFF).
bool ValidSecond(uint8_t lead, uint8_t b) {
  if (lead == 0xE0) return b >= 0xA0 && b <= 0xBF;
  if (lead == 0xED) return b >= 0x80 && b <= 0x9F;
  if (lead == 0xF0) return b >= 0x90 && b <= 0xBF;
  if (lead == 0xF4) return b >= 0x80 && b <= 0x8F;
  return b >= 0x80 && b <= 0xBF;
}

// Decodes s[i..]: returns the length of a complete valid character (> 0),
// 0 when s ends inside a possibly valid character, or -k for an invalid
// subpart of k bytes to replace.
int Scan(std::string_view s, size_t i) {
  const auto lead = static_cast<uint8_t>(s[i]);
  const int n = SequenceLength(lead);
  if (n == 0) return -1;
  for (int j = 1; j < n; ++j) {
    if (i + static_cast<size_t>(j) >= s.size()) return 0;
    const auto b = static_cast<uint8_t>(s[i + static_cast<size_t>(j)]);
    const bool ok = j == 1 ? ValidSecond(lead, b) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return -j;
  }
  return n;
}

}  // namespace

std::string Utf8StreamDecoder::Push(std::string_view bytes) {
  held_.append(bytes);
  std::string out;
  size_t i = 0;
  while (i < held_.size()) {
    const int r = Scan(held_, i);
    if (r == 0) break;  // incomplete: hold it
    if (r > 0) {
      out.append(held_, i, static_cast<size_t>(r));
      i += static_cast<size_t>(r);
    } else {
      out.append(kReplacementCharacter);
      i += static_cast<size_t>(-r);
    }
  }
  held_.erase(0, i);
  return out;
}

std::string Utf8StreamDecoder::Flush() {
  if (held_.empty()) return "";
  held_.clear();
  return std::string(kReplacementCharacter);
}

size_t ValidUtf8PrefixLength(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const int r = Scan(s, i);
    if (r <= 0) break;
    i += static_cast<size_t>(r);
  }
  return i;
}

bool IsValidUtf8(std::string_view s) { return ValidUtf8PrefixLength(s) == s.size(); }

}  // namespace modserve
