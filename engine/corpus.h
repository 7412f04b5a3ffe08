// TokenCorpus: a UTF-8 text file as a byte-token stream, cut into training
// windows (random, seeded) and evaluation windows (every byte exactly once).
//
// A window of S predicted bytes is the row [BOS, b0, ..., b_{S-1}]: the model
// reads row[0:S] and predicts row[1:S+1].
//
// Thread-safety: immutable after construction; SampleBatch takes the RNG by
// reference, so concurrent callers need their own RNGs.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "engine/status.h"

namespace modserve {

class TokenCorpus {
 public:
  static StatusOr<TokenCorpus> FromFile(const std::string& path, int64_t bos_id);
  static TokenCorpus FromText(const std::string& text, int64_t bos_id);

  int64_t num_bytes() const { return static_cast<int64_t>(bytes_.size()); }

  // [batch, seq_len + 1] int64 rows starting at uniform random offsets.
  torch::Tensor SampleBatch(int64_t batch, int64_t seq_len, std::mt19937_64& rng) const;

  // Consecutive non-overlapping rows covering every byte once; the last row
  // may be shorter. Each is [1, n + 1] int64.
  std::vector<torch::Tensor> EvalWindows(int64_t seq_len) const;

 private:
  torch::Tensor Row(int64_t start, int64_t len) const;
  std::vector<uint8_t> bytes_;
  int64_t bos_id_ = 256;
};

}  // namespace modserve
