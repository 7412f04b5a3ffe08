#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace modserve {

Sampler::Sampler(const SamplingParams& p, const std::vector<int64_t>& prompt) : params_(p), rng_(p.seed) {
  if (params_.repetition_penalty != 1.0) prompt_ = prompt;  // marked in seen_ once the vocabulary size is known
}

bool Sampler::penalized() const {
  return params_.repetition_penalty != 1.0 || params_.presence_penalty != 0.0 || params_.frequency_penalty != 0.0;
}

void Sampler::MaskByGuide(std::vector<float>& l) const {
  const float none = -std::numeric_limits<float>::infinity();
  for (size_t id = 0; id < l.size(); ++id) {
    const bool allowed = id < 256 ? guide_state_ >= 0 && params_.guide->Next(guide_state_, static_cast<uint8_t>(id)) >= 0
                                  : static_cast<int64_t>(id) == params_.guide_eos_id &&
                                        (guide_state_ < 0 || params_.guide->Accepting(guide_state_));
    if (!allowed) l[id] = none;
  }
}

bool Sampler::OthersRemain(const std::vector<float>& l) const {
  for (size_t id = 0; id < l.size(); ++id) {
    const auto i = static_cast<int64_t>(id);
    if (l[id] == -std::numeric_limits<float>::infinity() || i == params_.eos_id) continue;
    if (std::find(params_.stop_token_ids.begin(), params_.stop_token_ids.end(), i) == params_.stop_token_ids.end()) return true;
  }
  return false;
}

int64_t Sampler::Sample(const std::vector<float>& logits) {
  bool hold = picked_ < params_.min_tokens && (params_.eos_id >= 0 || !params_.stop_token_ids.empty());
  ++picked_;
  released_hold_ = false;
  const TokenGuide* guide = params_.guide.get();
  if (!hold && guide == nullptr && params_.logit_bias.empty() && !penalized()) return Pick(logits);
  const size_t n = logits.size();
  processed_logits_.assign(logits.begin(), logits.end());
  std::vector<float>& l = processed_logits_;
  if (guide != nullptr) {
    MaskByGuide(l);
    released_hold_ = hold && !OthersRemain(l);
    hold = hold && !released_hold_;
  }
  if (hold) {
    auto ban = [&](int64_t id) {
      if (id >= 0 && static_cast<size_t>(id) < n) l[static_cast<size_t>(id)] = -std::numeric_limits<float>::infinity();
    };
    ban(params_.eos_id);
    for (int64_t id : params_.stop_token_ids) ban(id);
  }
  for (const auto& [id, bias] : params_.logit_bias) {
    if (id >= 0 && static_cast<size_t>(id) < n) l[static_cast<size_t>(id)] += bias;
  }
  if (!penalized()) return Advance(Pick(l));
  if (counts_.size() < n) {
    counts_.resize(n, 0);
    seen_.resize(n, 0);
    for (int64_t t : prompt_) {
      if (t >= 0 && static_cast<size_t>(t) < n) seen_[static_cast<size_t>(t)] = 1;
    }
    prompt_.clear();
  }
  if (params_.repetition_penalty != 1.0) {
    const auto r = static_cast<float>(params_.repetition_penalty);
    for (size_t i = 0; i < n; ++i) {
      if (seen_[i] != 0) l[i] = l[i] > 0 ? l[i] / r : l[i] * r;
    }
  }
  if (params_.presence_penalty != 0.0 || params_.frequency_penalty != 0.0) {
    for (size_t i = 0; i < n; ++i) {
      if (counts_[i] == 0) continue;
      l[i] -= static_cast<float>(params_.frequency_penalty * counts_[i] + params_.presence_penalty);
    }
  }
  const int64_t token = Pick(l);
  if (token >= 0 && static_cast<size_t>(token) < n) {
    ++counts_[static_cast<size_t>(token)];
    seen_[static_cast<size_t>(token)] = 1;
  }
  return Advance(token);
}

int64_t Sampler::Advance(int64_t token) {
  if (params_.guide != nullptr && guide_state_ >= 0) {
    // A byte moves the guide on; EOS (or anything else) leaves nothing more to match.
    guide_state_ = token >= 0 && token < 256 ? params_.guide->Next(guide_state_, static_cast<uint8_t>(token)) : -1;
  }
  return token;
}

int64_t Sampler::Pick(const std::vector<float>& logits) {
  const auto n = static_cast<int64_t>(logits.size());
  if (n == 0) return -1;
  if (params_.temperature <= 0.0) {
    return std::max_element(logits.begin(), logits.end()) - logits.begin();  // first maximum on ties
  }
  std::vector<int64_t> ids(static_cast<size_t>(n));
  std::iota(ids.begin(), ids.end(), 0);
  // Highest logit first; ties by id keep the order deterministic.
  std::stable_sort(ids.begin(), ids.end(), [&](int64_t a, int64_t b) { return logits[a] > logits[b]; });
  int64_t keep = n;
  if (params_.top_k > 0) keep = std::min(keep, params_.top_k);
  std::vector<double> probs(static_cast<size_t>(keep));
  const double top = logits[ids[0]];
  double total = 0;
  // probs[i]: ids[i]'s probability relative to the most likely id's (probs[0] = 1).
  for (int64_t i = 0; i < keep; ++i) total += probs[i] = std::exp((logits[ids[i]] - top) / params_.temperature);
  if (params_.min_p > 0.0) {
    int64_t cut = 1;
    while (cut < keep && probs[cut] >= params_.min_p) ++cut;
    keep = cut;
    total = std::accumulate(probs.begin(), probs.begin() + keep, 0.0);
  }
  if (params_.top_p < 1.0) {
    double cum = 0;
    int64_t cut = keep;
    for (int64_t i = 0; i < keep; ++i) {
      cum += probs[i] / total;
      if (cum >= params_.top_p) { cut = i + 1; break; }
    }
    keep = cut;
    total = std::accumulate(probs.begin(), probs.begin() + keep, 0.0);
  }
  // A uniform draw from the RNG's raw 64 bits, so results do not depend on the
  // standard library's distribution implementation.
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53 * total;
  double cum = 0;
  for (int64_t i = 0; i < keep; ++i) {
    cum += probs[i];
    if (u < cum) return ids[i];
  }
  return ids[keep - 1];
}

}  // namespace modserve
