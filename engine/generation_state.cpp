#include "engine/generation_state.h"

#include <algorithm>

namespace modserve {

const char* FinishReasonName(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "none";
    case FinishReason::kLength: return "length";
    case FinishReason::kEos: return "eos";
    case FinishReason::kStop: return "stop";
  }
  return "none";
}

FinishReason GenerationState::Add(int64_t token, bool ends_early) {
  if (finished()) return finish_;
  tokens_.push_back(token);
  // The first min_tokens tokens always stay: EOS or a stop string can end
  // generation from the token after them on (the sampler holds EOS back for
  // as many picks, unless a guide leaves nothing else: `ends_early`).
  const bool may_stop = static_cast<int64_t>(tokens_.size()) > criteria_.min_tokens;
  const bool may_end = may_stop || ends_early;  // by EOS or a stop token
  if (may_end && criteria_.eos_id >= 0 && token == criteria_.eos_id) return finish_ = FinishReason::kEos;
  const auto& ids = criteria_.stop_token_ids;
  if (may_end && std::find(ids.begin(), ids.end(), token) != ids.end()) {
    matched_stop_token_ = token;
    return finish_ = FinishReason::kStop;
  }
  if (token >= 0 && token < 256) {
    text_.push_back(static_cast<char>(token));
    for (size_t i = 0; may_stop && i < criteria_.stop.size(); ++i) {
      const std::string& s = criteria_.stop[i];
      if (!s.empty() && text_.size() >= s.size() && text_.compare(text_.size() - s.size(), s.size(), s) == 0) {
        if (!criteria_.include_stop) text_.resize(text_.size() - s.size());
        matched_stop_ = static_cast<int64_t>(i);
        return finish_ = FinishReason::kStop;
      }
    }
  }
  if (static_cast<int64_t>(tokens_.size()) >= criteria_.max_tokens) return finish_ = FinishReason::kLength;
  return FinishReason::kNone;
}

size_t GenerationState::StableLength() const {
  if (finished() || criteria_.include_stop) return text_.size();
  size_t hold = 0;  // longest suffix of text_ that is a proper prefix of a stop string
  for (const auto& s : criteria_.stop) {
    if (s.empty()) continue;
    for (size_t n = std::min(s.size() - 1, text_.size()); n > hold; --n) {
      if (text_.compare(text_.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
    }
  }
  return text_.size() - hold;
}

}  // namespace modserve
