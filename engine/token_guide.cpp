#include "engine/token_guide.h"

#include <algorithm>
#include <map>
#include <utility>

#include "engine/byte_regex.h"

namespace modserve {
namespace {

// Work (byte moves and closure steps) compiling one guide may take: bounds
// the time a pathological pattern costs the caller's thread (~0.15 s here).
constexpr int64_t kMaxWork = 10'000'000;

bool IsRange(const ByteRegex& re, int32_t id) { return re.nodes[static_cast<size_t>(id)].kind == RegexNode::Kind::kByteRange; }

// States a tree needs as an automaton of byte moves and empty moves
// (Thompson's construction, below), saturating above `cap`.
int64_t CountStates(const ByteRegex& re, int32_t id, int64_t cap) {
  const RegexNode& n = re.nodes[static_cast<size_t>(id)];
  auto sat = [cap](int64_t v) { return std::min(v, cap + 1); };
  switch (n.kind) {
    case RegexNode::Kind::kEmpty: return 1;
    case RegexNode::Kind::kByteRange: return 2;
    case RegexNode::Kind::kMultiByte: return 9;
    case RegexNode::Kind::kConcat:
    case RegexNode::Kind::kAlt: {
      int64_t total = n.kind == RegexNode::Kind::kAlt ? 2 : 1;
      for (int32_t k : n.kids) {
        if (n.kind == RegexNode::Kind::kAlt && IsRange(re, k)) continue;  // a move between the alternation's own states
        total = sat(total + CountStates(re, k, cap));
      }
      return total;
    }
    case RegexNode::Kind::kRepeat: {
      const int64_t k = CountStates(re, n.kids[0], cap);
      const int64_t optional = n.max < 0 ? 1 : n.max - n.min;
      return sat(1 + sat(static_cast<int64_t>(n.min) * k) + sat(optional * sat(k + 2)));
    }
  }
  return cap + 1;
}

// Thompson's automaton: byte-range moves and empty moves.
struct Nfa {
  struct Move {
    uint8_t lo, hi;
    int32_t to;
  };
  std::vector<std::vector<Move>> moves;
  std::vector<std::vector<int32_t>> empty;

  int32_t New() {
    moves.emplace_back();
    empty.emplace_back();
    return static_cast<int32_t>(moves.size() - 1);
  }
  void Link(int32_t from, int32_t to) { empty[static_cast<size_t>(from)].push_back(to); }
  void AddMove(int32_t from, uint8_t lo, uint8_t hi, int32_t to) { moves[static_cast<size_t>(from)].push_back({lo, hi, to}); }

  struct Frag {
    int32_t in, out;
  };
  Frag Build(const ByteRegex& re, int32_t id) {
    const RegexNode& n = re.nodes[static_cast<size_t>(id)];
    switch (n.kind) {
      case RegexNode::Kind::kEmpty: {
        const int32_t s = New();
        return {s, s};
      }
      case RegexNode::Kind::kByteRange: {
        const int32_t s = New(), e = New();
        AddMove(s, n.lo, n.hi, e);
        return {s, e};
      }
      case RegexNode::Kind::kMultiByte: {
        // The lead bytes, then 1 to 3 continuation bytes (c1: one more to
        // go, c2: two, c3: three); the leads E0, ED, F0 and F4 narrow the
        // first continuation (no overlongs, surrogates or code points over
        // U+10FFFF).
        const int32_t s = New(), e = New(), c1 = New(), c2 = New(), c3 = New();
        const int32_t e0 = New(), ed = New(), f0 = New(), f4 = New();
        AddMove(c1, 0x80, 0xBF, e);
        AddMove(c2, 0x80, 0xBF, c1);
        AddMove(c3, 0x80, 0xBF, c2);
        AddMove(s, 0xC2, 0xDF, c1);
        AddMove(s, 0xE0, 0xE0, e0);
        AddMove(e0, 0xA0, 0xBF, c1);
        AddMove(s, 0xE1, 0xEC, c2);
        AddMove(s, 0xED, 0xED, ed);
        AddMove(ed, 0x80, 0x9F, c1);
        AddMove(s, 0xEE, 0xEF, c2);
        AddMove(s, 0xF0, 0xF0, f0);
        AddMove(f0, 0x90, 0xBF, c2);
        AddMove(s, 0xF1, 0xF3, c3);
        AddMove(s, 0xF4, 0xF4, f4);
        AddMove(f4, 0x80, 0x8F, c2);
        return {s, e};
      }
      case RegexNode::Kind::kConcat: {
        Frag f{New(), 0};
        f.out = f.in;
        for (int32_t k : n.kids) {
          const Frag part = Build(re, k);
          Link(f.out, part.in);
          f.out = part.out;
        }
        return f;
      }
      case RegexNode::Kind::kAlt: {
        // A byte-range alternative (a class's ranges: [0-9a-fA-F] is three)
        // is one move from the alternation's entry to its exit, not two
        // states of its own: a JSON string character takes 32 states, not 82.
        const Frag f{New(), New()};
        for (int32_t k : n.kids) {
          if (IsRange(re, k)) {
            const RegexNode& r = re.nodes[static_cast<size_t>(k)];
            AddMove(f.in, r.lo, r.hi, f.out);
            continue;
          }
          const Frag part = Build(re, k);
          Link(f.in, part.in);
          Link(part.out, f.out);
        }
        return f;
      }
      case RegexNode::Kind::kRepeat: {
        Frag f{New(), 0};
        f.out = f.in;
        for (int32_t i = 0; i < n.min; ++i) {
          const Frag part = Build(re, n.kids[0]);
          Link(f.out, part.in);
          f.out = part.out;
        }
        if (n.max < 0) {  // then any number more: a loop
          const Frag part = Build(re, n.kids[0]);
          const int32_t loop = New();
          Link(f.out, loop);
          Link(loop, part.in);
          Link(part.out, loop);
          f.out = loop;
        } else {
          // The optional copies nest, x(x(x)?)?, rather than follow one
          // another, x?x?x?: after each copy the rest is taken or all of it
          // skipped, so a subset holds a few states, not every later copy.
          const int32_t end = New();
          for (int32_t i = n.min; i < n.max; ++i) {
            const Frag part = Build(re, n.kids[0]);
            Link(f.out, part.in);
            Link(f.out, end);
            f.out = part.out;
          }
          Link(f.out, end);
          f.out = end;
        }
        return f;
      }
    }
    return {New(), New()};
  }
};

// The subset construction, keeping only states from which a match can be completed.
// `hint`: what the caller can change when the pattern is too large.
StatusOr<std::shared_ptr<const TokenGuide>> Compile(const ByteRegex& re, const std::string& field, const std::string& hint) {
  const int64_t estimate = CountStates(re, re.root, TokenGuide::kMaxNfaStates);
  if (estimate > TokenGuide::kMaxNfaStates) {
    return InvalidArgument(field + " is too large: it would need over " + std::to_string(TokenGuide::kMaxNfaStates) +
                           " automaton states (" + hint + ")");
  }
  Nfa nfa;
  const Nfa::Frag whole = nfa.Build(re, re.root);
  const size_t n_nfa = nfa.moves.size();
  int64_t work = 0;
  std::vector<int64_t> mark(n_nfa, -1);
  int64_t generation = 0;
  std::vector<int32_t> stack;
  // The states reachable from `seed` by empty moves that matter (those with
  // byte moves, and the accepting one), sorted: the identity of a subset.
  auto closure = [&](std::vector<int32_t> seed) {
    ++generation;
    std::vector<int32_t> out;
    stack = std::move(seed);
    while (!stack.empty()) {
      const int32_t s = stack.back();
      stack.pop_back();
      if (mark[static_cast<size_t>(s)] == generation) continue;
      mark[static_cast<size_t>(s)] = generation;
      if (!nfa.moves[static_cast<size_t>(s)].empty() || s == whole.out) out.push_back(s);
      ++work;
      for (int32_t t : nfa.empty[static_cast<size_t>(s)]) stack.push_back(t);
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  const Status too_complex = InvalidArgument(
      field + " is too complex: its automaton would need over " + std::to_string(TokenGuide::kMaxStates) +
      " states (simplify it, e.g. fewer nested or overlapping repeats)");

  // Byte classes: the bytes no move tells apart share one column.
  std::vector<int> edges = {0, 256};
  for (const auto& ms : nfa.moves) {
    for (const Nfa::Move& m : ms) {
      edges.push_back(m.lo);
      edges.push_back(m.hi + 1);
    }
  }
  std::sort(edges.begin(), edges.end());
  edges.erase(std::unique(edges.begin(), edges.end()), edges.end());
  const size_t n_classes = edges.size() - 1;  // class c: bytes [edges[c], edges[c + 1])
  std::array<uint8_t, 256> class_of{};
  for (size_t c = 0; c < n_classes; ++c) {
    for (int b = edges[c]; b < edges[c + 1]; ++b) class_of[static_cast<size_t>(b)] = static_cast<uint8_t>(c);
  }

  std::map<std::vector<int32_t>, int32_t> ids;
  std::vector<std::vector<int32_t>> sets;
  std::vector<int32_t> next;  // [states * n_classes], -1: no move
  std::vector<uint8_t> accepting;
  auto intern = [&](std::vector<int32_t> set) -> int32_t {
    auto it = ids.find(set);
    if (it != ids.end()) return it->second;
    if (static_cast<int64_t>(sets.size()) >= TokenGuide::kMaxStates) return -1;
    const auto id = static_cast<int32_t>(sets.size());
    accepting.push_back(std::binary_search(set.begin(), set.end(), whole.out) ? 1 : 0);
    work += static_cast<int64_t>(set.size());
    ids.emplace(set, id);
    sets.push_back(std::move(set));
    next.resize(sets.size() * n_classes, -1);
    return id;
  };
  intern(closure({whole.in}));
  std::vector<std::vector<int32_t>> targets(n_classes);
  for (size_t d = 0; d < sets.size(); ++d) {
    for (auto& t : targets) t.clear();
    for (int32_t s : sets[d]) {
      for (const Nfa::Move& m : nfa.moves[static_cast<size_t>(s)]) {
        const size_t first = class_of[m.lo], last = class_of[m.hi];
        for (size_t c = first; c <= last; ++c) targets[c].push_back(m.to);
        work += static_cast<int64_t>(last - first + 1);
      }
    }
    for (size_t c = 0; c < n_classes; ++c) {
      auto& t = targets[c];
      if (t.empty()) continue;
      std::sort(t.begin(), t.end());
      t.erase(std::unique(t.begin(), t.end()), t.end());
      const int32_t to = intern(closure(t));
      if (to < 0) return too_complex;
      next[d * n_classes + c] = to;
    }
    if (work > kMaxWork) {
      return InvalidArgument(field + " is too complex to compile (simplify it, e.g. fewer or smaller repeats)");
    }
  }

  // Live states: those from which an accepting one can be reached.
  const size_t n = sets.size();
  std::vector<std::vector<int32_t>> from(n);
  for (size_t d = 0; d < n; ++d) {
    for (size_t c = 0; c < n_classes; ++c) {
      const int32_t to = next[d * n_classes + c];
      if (to >= 0) from[static_cast<size_t>(to)].push_back(static_cast<int32_t>(d));
    }
  }
  std::vector<uint8_t> live(n, 0);
  std::vector<int32_t> todo;
  for (size_t d = 0; d < n; ++d) {
    if (accepting[d] != 0) {
      live[d] = 1;
      todo.push_back(static_cast<int32_t>(d));
    }
  }
  while (!todo.empty()) {
    const int32_t d = todo.back();
    todo.pop_back();
    for (int32_t p : from[static_cast<size_t>(d)]) {
      if (live[static_cast<size_t>(p)] == 0) {
        live[static_cast<size_t>(p)] = 1;
        todo.push_back(p);
      }
    }
  }
  if (live[0] == 0) return InvalidArgument(field + " matches no text at all");
  std::vector<int16_t> table(n * n_classes, -1);
  for (size_t i = 0; i < table.size(); ++i) {
    const int32_t to = next[i];
    if (to >= 0 && live[static_cast<size_t>(to)] != 0) table[i] = static_cast<int16_t>(to);
  }
  return std::make_shared<const TokenGuide>(class_of, n_classes, std::move(table), std::move(accepting));
}

}  // namespace

StatusOr<std::shared_ptr<const TokenGuide>> TokenGuide::FromRegex(std::string_view pattern, const std::string& field,
                                                                  const std::string& size_hint) {
  auto re = ParseByteRegex(pattern, field, kMaxRepeat, kMaxGroupDepth);
  if (!re.ok()) return re.status();
  return Compile(*re, field, size_hint);
}

StatusOr<std::shared_ptr<const TokenGuide>> TokenGuide::FromChoices(const std::vector<std::string>& choices,
                                                                    const std::string& field) {
  if (choices.empty()) return InvalidArgument(field + " lists no choice");
  ByteRegex re;
  RegexNode alt;
  alt.kind = RegexNode::Kind::kAlt;
  for (const std::string& c : choices) alt.kids.push_back(re.Bytes(c));
  re.root = re.Add(std::move(alt));
  return Compile(re, field, "fewer or shorter choices");
}

int32_t TokenGuide::Walk(std::string_view bytes) const {
  int32_t s = kStart;
  for (char ch : bytes) {
    s = Next(s, static_cast<uint8_t>(ch));
    if (s < 0) return -1;
  }
  return s;
}

}  // namespace modserve
