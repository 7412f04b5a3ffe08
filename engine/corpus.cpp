#include "engine/corpus.h"

#include <fstream>
#include <sstream>

namespace modserve {

StatusOr<TokenCorpus> TokenCorpus::FromFile(const std::string& path, int64_t bos_id) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFound(path + ": cannot open text file");
  std::stringstream ss;
  ss << in.rdbuf();
  TokenCorpus c = FromText(ss.str(), bos_id);
  if (c.num_bytes() < 2) return InvalidArgument(path + ": text file is empty");
  return c;
}

TokenCorpus TokenCorpus::FromText(const std::string& text, int64_t bos_id) {
  TokenCorpus c;
  c.bytes_.assign(text.begin(), text.end());
  c.bos_id_ = bos_id;
  return c;
}

torch::Tensor TokenCorpus::Row(int64_t start, int64_t len) const {
  auto row = torch::empty({1, len + 1}, torch::kLong);
  auto* p = row.data_ptr<int64_t>();
  p[0] = bos_id_;
  for (int64_t i = 0; i < len; ++i) p[i + 1] = bytes_[static_cast<size_t>(start + i)];
  return row;
}

torch::Tensor TokenCorpus::SampleBatch(int64_t batch, int64_t seq_len, std::mt19937_64& rng) const {
  const int64_t len = std::min<int64_t>(seq_len, num_bytes());
  std::uniform_int_distribution<int64_t> start(0, num_bytes() - len);
  std::vector<torch::Tensor> rows;
  rows.reserve(static_cast<size_t>(batch));
  for (int64_t b = 0; b < batch; ++b) rows.push_back(Row(start(rng), len));
  return torch::cat(rows, 0);  // [batch, len + 1]
}

std::vector<torch::Tensor> TokenCorpus::EvalWindows(int64_t seq_len) const {
  std::vector<torch::Tensor> out;
  for (int64_t s = 0; s < num_bytes(); s += seq_len) out.push_back(Row(s, std::min(seq_len, num_bytes() - s)));
  return out;
}

}  // namespace modserve
