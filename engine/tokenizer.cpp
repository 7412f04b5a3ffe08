#include "engine/tokenizer.h"

namespace modserve {

std::vector<int64_t> ByteTokenizer::Encode(std::string_view text, bool add_bos) const {
  std::vector<int64_t> out;
  out.reserve(text.size() + (add_bos ? 1 : 0));
  if (add_bos) out.push_back(bos_id_);
  for (unsigned char c : text) out.push_back(c);
  return out;
}

std::string ByteTokenizer::Decode(const std::vector<int64_t>& tokens) const {
  std::string out;
  out.reserve(tokens.size());
  for (int64_t t : tokens) {
    if (t >= 0 && t < 256) out.push_back(static_cast<char>(t));
  }
  return out;
}

}  // namespace modserve
