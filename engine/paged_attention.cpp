#include "engine/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "engine/decode_attention.h"
#include "engine/parallel_chunks.h"

namespace modserve {

namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// One-token chunks of several sequences: keys padded to the longest, masked.
torch::Tensor DecodeBatch(const KvCache& kv, int64_t layer, const torch::Tensor& q, const std::vector<const AttentionChunk*>& chunks,
                          double scale) {
  const auto n = static_cast<int64_t>(chunks.size());
  int64_t lmax = 0;
  for (const auto* c : chunks) lmax = std::max(lmax, c->prev + 1);
  std::vector<int64_t> slots, rows, lengths;
  slots.reserve(static_cast<size_t>(n * lmax));
  for (const auto* c : chunks) {
    const size_t start = slots.size();
    kv.manager().AppendSlots(c->id, layer, &slots);
    const auto len = static_cast<int64_t>(slots.size() - start);
    slots.resize(start + static_cast<size_t>(lmax), slots[start]);  // pad with a valid slot; masked below
    rows.push_back(c->row);
    lengths.push_back(len);
  }
  auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(kv.device());
  const int64_t H = q.size(1), hd = q.size(2);
  auto [K, V] = kv.GatherSlots(torch::tensor(slots, torch::kLong).to(kv.device()));         // [n * lmax, H, hd]
  K = K.to(torch::kFloat).view({n, lmax, H, hd});
  V = V.to(torch::kFloat).view({n, lmax, H, hd});
  auto qd = q.index_select(0, torch::tensor(rows, torch::kLong).to(kv.device())).to(torch::kFloat).unsqueeze(1);  // [n, 1, H, hd]
  // Multiply-and-reduce rather than bmm: a single-row bmm per (sequence, head)
  // is slow on the CPU and oversubscribes threads when batched.
  auto scores = (qd * K).sum(-1) * scale;                                                     // [n, lmax, H]
  auto pad = torch::arange(lmax, long_opts).unsqueeze(0) >= torch::tensor(lengths, torch::kLong).to(kv.device()).unsqueeze(1);  // [n, lmax]
  scores = scores.masked_fill(pad.unsqueeze(-1), kNegInf);
  auto att = torch::softmax(scores, 1);                                                       // [n, lmax, H]
  return (att.unsqueeze(-1) * V).sum(1);                                                      // [n, H, hd]
}

// Every chunk of an f32 or bf16 cache on the CPU, read in place
// (decode_attention.h): no copies of K and V; computed in f32 whatever q's
// dtype. Row r of a chunk sees its sequence's first prev + r + 1 slots.
torch::Tensor InPlace(const KvCache& kv, int64_t layer, const torch::Tensor& q, const std::vector<AttentionChunk>& chunks, double scale) {
  std::vector<int64_t> slots, starts, lengths, rows;
  bool in_order = true;  // query rows 0, 1, 2, ... as q has them
  for (const auto& c : chunks) {
    const auto start = static_cast<int64_t>(slots.size());
    if (c.count > 0) kv.manager().AppendSlots(c.id, layer, &slots);
    for (int64_t r = 0; r < c.count; ++r) {
      in_order = in_order && c.row + r == static_cast<int64_t>(rows.size());
      rows.push_back(c.row + r);
      starts.push_back(start);
      lengths.push_back(c.prev + r + 1);
    }
  }
  const auto n = static_cast<int64_t>(rows.size());
  const int64_t H = q.size(1), hd = q.size(2);
  in_order = in_order && n == q.size(0);
  auto row_index = torch::tensor(rows, torch::kLong);
  auto qd = (in_order ? q : q.index_select(0, row_index)).to(torch::kFloat).contiguous();  // [n, H, hd]
  auto res = torch::empty_like(qd);                                                         // [n, H, hd]
  DecodeAttentionArgs a;
  a.q = qd.data_ptr<float>();
  a.k_pool = kv.k_pool().data_ptr();
  a.v_pool = kv.v_pool().data_ptr();
  a.kv_element = kv.k_pool().scalar_type() == torch::kBFloat16 ? KvElement::kBf16 : KvElement::kF32;
  a.slots = slots.data();
  a.starts = starts.data();
  a.lengths = lengths.data();
  a.heads = H;
  a.head_dim = hd;
  a.scale = static_cast<float>(scale);
  a.out = res.data_ptr<float>();
  ParallelChunks(n, 1, [&](int64_t begin, int64_t end) { DecodeAttention(a, begin, end); });
  if (in_order) return res.to(q.scalar_type());
  auto out = torch::zeros_like(q);
  out.index_copy_(0, row_index, res.to(q.scalar_type()));
  return out;
}

// One sequence's chunk of `count` new tokens over its whole cache.
torch::Tensor Prefill(const KvCache& kv, int64_t layer, const torch::Tensor& q, const AttentionChunk& c, double scale) {
  auto [K, V] = kv.Gather(c.id, layer);                                              // [L, H, hd]
  K = K.to(torch::kFloat);
  V = V.to(torch::kFloat);
  const int64_t L = K.size(0);
  auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(kv.device());
  auto qb = q.narrow(0, c.row, c.count).to(torch::kFloat).permute({1, 0, 2});       // [H, m, hd]
  auto scores = torch::matmul(qb, K.permute({1, 2, 0})) * scale;                     // [H, m, L]
  auto key = torch::arange(L, long_opts).unsqueeze(0);                               // [1, L]
  auto limit = (torch::arange(c.count, long_opts) + c.prev).unsqueeze(1);            // [m, 1]
  scores = scores.masked_fill((key > limit).unsqueeze(0), kNegInf);
  return torch::matmul(torch::softmax(scores, -1), V.permute({1, 0, 2})).permute({1, 0, 2});  // [m, H, hd]
}

}  // namespace

torch::Tensor PagedAttention(const KvCache& kv, int64_t layer, const torch::Tensor& q, const std::vector<AttentionChunk>& chunks) {
  const auto cached = kv.k_pool().scalar_type();
  if (kv.device().is_cpu() && (cached == torch::kFloat || cached == torch::kBFloat16)) {
    return InPlace(kv, layer, q, chunks, 1.0 / std::sqrt(static_cast<double>(q.size(2))));
  }
  return PagedAttentionWithTorchOps(kv, layer, q, chunks);
}

torch::Tensor PagedAttentionWithTorchOps(const KvCache& kv, int64_t layer, const torch::Tensor& q,
                                         const std::vector<AttentionChunk>& chunks) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(2)));
  auto out = torch::empty_like(q);  // [M, H, hd]
  std::vector<const AttentionChunk*> decode;
  for (const auto& c : chunks) {
    if (c.count == 1) {
      decode.push_back(&c);
    } else if (c.count > 1) {
      out.narrow(0, c.row, c.count).copy_(Prefill(kv, layer, q, c, scale));  // copy_ casts back to q's dtype
    }
  }
  if (decode.empty()) return out;
  // Groups of kDecodeGroup sequences bound the gathered K/V
  // temporaries; grouping sequences of similar length keeps the padding small.
  std::stable_sort(decode.begin(), decode.end(), [](const AttentionChunk* a, const AttentionChunk* b) { return a->prev < b->prev; });
  constexpr size_t kDecodeGroup = 16;
  for (size_t start = 0; start < decode.size(); start += kDecodeGroup) {
    std::vector<const AttentionChunk*> group(decode.begin() + static_cast<long>(start),
                                             decode.begin() + static_cast<long>(std::min(decode.size(), start + kDecodeGroup)));
    std::vector<int64_t> rows;
    for (const auto* c : group) rows.push_back(c->row);
    out.index_copy_(0, torch::tensor(rows, torch::kLong).to(q.device()), DecodeBatch(kv, layer, q, group, scale).to(q.scalar_type()));
  }
  return out;
}

}  // namespace modserve
