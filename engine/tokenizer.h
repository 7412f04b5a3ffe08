// ByteTokenizer: the byte-level tokenizer of modserve models. Token ids 0-255
// are the bytes of UTF-8 text; BOS and EOS are special ids above 255.
//
// Thread-safety: immutable after construction; safe to share between threads.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace modserve {

class ByteTokenizer {
 public:
  ByteTokenizer(int64_t bos_id, int64_t eos_id) : bos_id_(bos_id), eos_id_(eos_id) {}

  int64_t bos_id() const { return bos_id_; }
  int64_t eos_id() const { return eos_id_; }

  // The bytes of `text` as token ids, optionally preceded by BOS.
  std::vector<int64_t> Encode(std::string_view text, bool add_bos) const;
  // The bytes of byte tokens; special tokens are dropped. The result may end in
  // an incomplete UTF-8 character if the tokens do.
  std::string Decode(const std::vector<int64_t>& tokens) const;

 private:
  int64_t bos_id_;
  int64_t eos_id_;
};

}  // namespace modserve
