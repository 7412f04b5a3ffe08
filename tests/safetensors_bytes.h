// The raw bytes of a safetensors file, for tests that need files the writer
// would not produce (malformed headers, sparse data): the header length as a
// little-endian u64, the JSON header, then `data_bytes` zero bytes.
// Thread-safety: a pure function.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace modserve::testing {

// `claimed_len` >= 0 writes that header length instead of the real one.
inline std::vector<uint8_t> SafetensorsBytes(const std::string& header_json, size_t data_bytes, int64_t claimed_len = -1) {
  std::vector<uint8_t> out(8);
  const uint64_t n = claimed_len >= 0 ? static_cast<uint64_t>(claimed_len) : header_json.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<uint8_t>(n >> (8 * i));
  out.insert(out.end(), header_json.begin(), header_json.end());
  out.resize(out.size() + data_bytes, 0);
  return out;
}

}  // namespace modserve::testing
