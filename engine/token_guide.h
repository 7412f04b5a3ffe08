// TokenGuide: guided decoding for the byte-level tokenizer. A regular
// expression (or a list of choices) compiled to a deterministic automaton
// over bytes; since a token is a byte, the automaton says exactly which
// tokens may come next so that the completion can still become a full match,
// and whether the text so far is one (where EOS may end it). Only states
// from which a match can still be completed are kept, so a guided completion
// never walks into a dead end, and every character the patterns can match is
// valid UTF-8, so the text is too.
//
// The pattern language (a full match of the whole completion is asked for):
//   literals (any UTF-8 character; escape ( ) [ ] { } * + ? | . \ ^ $ with \),
//   .          any character except \n (a whole UTF-8 character)
//   [abc] [a-z] [^...]   classes of ASCII characters and ranges; non-ASCII
//              characters may be listed (not in ranges, not negated classes);
//              a negated class matches any character not listed (UTF-8 too)
//   \d \w \s and \D \W \S (the latter not inside classes); \n \t \r \f \v;
//   \xHH and \uHHHH (code points); an escaped punctuation character itself
//   ( ) and (?: ) groups, | alternation, * + ? {n} {n,} {n,m} (n, m <= 1000)
//   ^ at the very start and $ at the very end (no-ops: the match is whole)
// Not supported, and refused with the offset: backreferences, lookaround,
// lazy or possessive quantifiers, \b, \p{...}, other anchors.
//
// Thread-safety: immutable after construction; share one between threads
// (the completions of a request share theirs).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/status.h"

namespace modserve {

class TokenGuide {
 public:
  static constexpr int64_t kMaxStates = 16384;       // automaton states
  static constexpr int64_t kMaxNfaStates = 50000;    // states of the automaton it is built from
  static constexpr int64_t kMaxRepeat = 1000;        // the largest n or m of {n,m}
  static constexpr int64_t kMaxGroupDepth = 100;     // nesting of ( )

  // INVALID_ARGUMENT naming `field`, the problem and its byte offset, for a
  // pattern outside the language above or one needing over kMaxStates states
  // (or kMaxNfaStates: the message then ends with `size_hint`, what to change).
  static StatusOr<std::shared_ptr<const TokenGuide>> FromRegex(std::string_view pattern,
                                                               const std::string& field = "regex",
                                                               const std::string& size_hint = "fewer or smaller repeat counts");
  // Exactly one of `choices` (each compared byte for byte).
  static StatusOr<std::shared_ptr<const TokenGuide>> FromChoices(const std::vector<std::string>& choices,
                                                                 const std::string& field = "choices");

  static constexpr int32_t kStart = 0;
  // The state after byte `b` from state `s`, or -1 where `b` can not come next.
  int32_t Next(int32_t s, uint8_t b) const { return next_[static_cast<size_t>(s) * n_classes_ + class_of_[b]]; }
  // Whether the bytes that led to `s` are a full match.
  bool Accepting(int32_t s) const { return accepting_[static_cast<size_t>(s)] != 0; }
  int64_t num_states() const { return static_cast<int64_t>(accepting_.size()); }
  // The state after `bytes` from the start, or -1 if they can not begin a match.
  int32_t Walk(std::string_view bytes) const;
  // Bytes the automaton occupies (for caches that bound their memory).
  int64_t memory_bytes() const {
    return static_cast<int64_t>(sizeof(*this) + next_.capacity() * sizeof(next_[0]) + accepting_.capacity());
  }

  // Bytes of one class move alike from every state.
  TokenGuide(std::array<uint8_t, 256> class_of, size_t n_classes, std::vector<int16_t> next, std::vector<uint8_t> accepting)
      : class_of_(class_of), n_classes_(n_classes), next_(std::move(next)), accepting_(std::move(accepting)) {}

 private:
  std::array<uint8_t, 256> class_of_;  // byte -> its class
  size_t n_classes_;
  std::vector<int16_t> next_;          // [num_states * n_classes]: next state, or -1
  std::vector<uint8_t> accepting_;     // [num_states]
};

}  // namespace modserve
