#include "engine/byte_regex.h"

#include <bitset>
#include <algorithm>
#include <cctype>

namespace modserve {

int32_t ByteRegex::Add(RegexNode n) {
  nodes.push_back(std::move(n));
  return static_cast<int32_t>(nodes.size() - 1);
}

int32_t ByteRegex::Range(uint8_t lo, uint8_t hi) {
  RegexNode r;
  r.kind = RegexNode::Kind::kByteRange;
  r.lo = lo;
  r.hi = hi;
  return Add(r);
}

int32_t ByteRegex::Bytes(std::string_view bytes) {
  RegexNode concat;
  concat.kind = RegexNode::Kind::kConcat;
  for (char ch : bytes) concat.kids.push_back(Range(static_cast<uint8_t>(ch), static_cast<uint8_t>(ch)));
  return Add(std::move(concat));
}

namespace {

constexpr uint32_t kMaxCodePoint = 0x10FFFF;

std::string Utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// A set of characters: ASCII ones, listed non-ASCII code points, or every
// non-ASCII character.
struct CharSet {
  std::bitset<128> ascii;
  std::vector<uint32_t> others;
  bool all_others = false;

  void AddRange(int lo, int hi) {
    for (int c = lo; c <= hi; ++c) ascii.set(static_cast<size_t>(c));
  }
};

CharSet Digits() {
  CharSet s;
  s.AddRange('0', '9');
  return s;
}
CharSet Word() {
  CharSet s;
  s.AddRange('0', '9');
  s.AddRange('A', 'Z');
  s.AddRange('a', 'z');
  s.ascii.set('_');
  return s;
}
CharSet Space() {
  CharSet s;
  for (char c : std::string(" \t\n\r\f\v")) s.ascii.set(static_cast<size_t>(c));
  return s;
}
// Every character not in `s` (which lists ASCII characters only).
CharSet Complement(const CharSet& s) {
  CharSet c;
  c.ascii = ~s.ascii;
  c.all_others = true;
  return c;
}

class Parser {
 public:
  Parser(std::string_view p, const std::string& field, int64_t max_repeat, int64_t max_depth)
      : p_(p), field_(field), max_repeat_(max_repeat), max_depth_(max_depth) {}

  StatusOr<ByteRegex> Parse() {
    auto root = Alt(0);
    if (!root.ok()) return root.status();
    if (pos_ < p_.size()) return Error("unmatched )", pos_);  // Alt stops only at ')' or the end
    re_.root = *root;
    return std::move(re_);
  }

 private:
  // "<field>: <what> at offset <at> (<hint>)".
  Status Error(const std::string& what, size_t at, const std::string& hint = "") const {
    return InvalidArgument(field_ + ": " + what + " at offset " + std::to_string(at) + (hint.empty() ? "" : " (" + hint + ")"));
  }
  bool More() const { return pos_ < p_.size(); }
  char Peek() const { return p_[pos_]; }

  int32_t Node(RegexNode::Kind kind, std::vector<int32_t> kids = {}) {
    RegexNode n;
    n.kind = kind;
    n.kids = std::move(kids);
    return re_.Add(std::move(n));
  }
  int32_t Range(uint8_t lo, uint8_t hi) { return re_.Range(lo, hi); }
  int32_t Seq(std::vector<int32_t> kids) { return Node(RegexNode::Kind::kConcat, std::move(kids)); }

  // The alternatives of the UTF-8 byte sequences of the characters in `s`.
  int32_t Set(const CharSet& s) {
    std::vector<int32_t> alts;
    for (int c = 0; c < 128;) {
      if (!s.ascii.test(static_cast<size_t>(c))) {
        ++c;
        continue;
      }
      int end = c;
      while (end + 1 < 128 && s.ascii.test(static_cast<size_t>(end + 1))) ++end;
      alts.push_back(Range(static_cast<uint8_t>(c), static_cast<uint8_t>(end)));
      c = end + 1;
    }
    for (uint32_t cp : s.others) alts.push_back(re_.Bytes(Utf8(cp)));
    if (s.all_others) alts.push_back(Node(RegexNode::Kind::kMultiByte));
    return Node(RegexNode::Kind::kAlt, std::move(alts));
  }

  // The UTF-8 character at pos_ (advancing past it) as a code point.
  StatusOr<uint32_t> Char() {
    const auto b = static_cast<uint8_t>(p_[pos_]);
    const size_t len = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
    uint32_t cp = len == 1 ? b : len == 2 ? (b & 0x1Fu) : len == 3 ? (b & 0x0Fu) : (b & 0x07u);
    bool ok = len > 0 && pos_ + len <= p_.size();
    for (size_t i = 1; ok && i < len; ++i) {
      const auto c = static_cast<uint8_t>(p_[pos_ + i]);
      ok = (c & 0xC0) == 0x80;
      cp = (cp << 6) | (c & 0x3Fu);
    }
    static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (!ok || cp < kMin[len] || cp > kMaxCodePoint || (cp >= 0xD800 && cp <= 0xDFFF)) {
      return Error("not valid UTF-8", pos_);
    }
    pos_ += len;
    return cp;
  }

  // \xHH or \uHHHH after the backslash and the letter: the code point.
  StatusOr<uint32_t> Hex(size_t digits, size_t at) {
    if (pos_ + digits > p_.size()) return Error("\\x needs 2 and \\u 4 hex digits", at);
    uint32_t cp = 0;
    for (size_t i = 0; i < digits; ++i) {
      const char c = p_[pos_ + i];
      const int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (v < 0) return Error("\\x needs 2 and \\u 4 hex digits", at);
      cp = cp * 16 + static_cast<uint32_t>(v);
    }
    pos_ += digits;
    if (cp >= 0xD800 && cp <= 0xDFFF) return Error("\\u names a surrogate, not a character", at);
    return cp;
  }

  // An escape at pos_ (the backslash): a class (\d \w \s, and outside classes
  // \D \W \S) into *set, or one code point into *cp.
  Status Escape(bool in_class, CharSet* set, uint32_t* cp, bool* is_set) {
    const size_t at = pos_++;
    if (!More()) return Error("a pattern can not end in a lone \\", at);
    const char c = p_[pos_++];
    *is_set = true;
    switch (c) {
      case 'd': *set = Digits(); return Status::Ok();
      case 'w': *set = Word(); return Status::Ok();
      case 's': *set = Space(); return Status::Ok();
      case 'D': case 'W': case 'S':
        if (in_class) return Error(std::string("\\") + c + " is not supported inside a class", at);
        *set = Complement(c == 'D' ? Digits() : c == 'W' ? Word() : Space());
        return Status::Ok();
      default: break;
    }
    *is_set = false;
    switch (c) {
      case 'n': *cp = '\n'; return Status::Ok();
      case 't': *cp = '\t'; return Status::Ok();
      case 'r': *cp = '\r'; return Status::Ok();
      case 'f': *cp = '\f'; return Status::Ok();
      case 'v': *cp = '\v'; return Status::Ok();
      case 'x':
      case 'u': {
        auto v = Hex(c == 'x' ? 2 : 4, at);
        if (!v.ok()) return v.status();
        *cp = *v;
        return Status::Ok();
      }
      default: break;
    }
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7F && std::isalnum(u) == 0) {  // escaped punctuation (or space) stands for itself
      *cp = u;
      return Status::Ok();
    }
    return Error(std::string("\\") + (u < 0x80 ? std::string(1, c) : "") + " is not supported", at,
                 "no backreferences, \\b, \\p or other escapes");
  }

  StatusOr<int32_t> Class() {
    const size_t open = pos_++;
    CharSet set;
    const bool negated = More() && Peek() == '^';
    if (negated) ++pos_;
    if (More() && Peek() == ']') return Error("[] is an empty class", open, "escape a ] in a class as \\]");
    // One endpoint or member: a code point, or (escapes) a class.
    auto member = [&](uint32_t* cp, CharSet* sub, bool* is_set) -> Status {
      if (Peek() == '\\') return Escape(true, sub, cp, is_set);
      *is_set = false;
      auto c = Char();
      if (!c.ok()) return c.status();
      *cp = *c;
      return Status::Ok();
    };
    while (true) {
      if (!More()) return Error("unclosed [", open);
      if (Peek() == ']') break;
      const size_t at = pos_;
      uint32_t lo = 0;
      CharSet sub;
      bool is_set = false;
      MODSERVE_RETURN_IF_ERROR(member(&lo, &sub, &is_set));
      if (is_set) {
        set.ascii |= sub.ascii;
        continue;
      }
      if (pos_ + 1 < p_.size() && Peek() == '-' && p_[pos_ + 1] != ']') {
        ++pos_;
        uint32_t hi = 0;
        MODSERVE_RETURN_IF_ERROR(member(&hi, &sub, &is_set));
        if (is_set) return Error("a class range can not end in \\d, \\w or \\s", at);
        if (lo >= 0x80 || hi >= 0x80) return Error("ranges of non-ASCII characters are not supported in a class", at);
        if (lo > hi) return Error("the class range is reversed", at);
        set.AddRange(static_cast<int>(lo), static_cast<int>(hi));
        continue;
      }
      if (lo < 0x80) {
        set.ascii.set(lo);
      } else {
        if (negated) return Error("a negated class can list only ASCII characters", at);
        set.others.push_back(lo);
      }
    }
    ++pos_;  // ]
    return Set(negated ? Complement(set) : set);
  }

  StatusOr<int32_t> Atom(int64_t depth) {
    const size_t at = pos_;
    const char c = Peek();
    switch (c) {
      case '(': {
        if (depth + 1 > max_depth_) return Error("groups nest deeper than " + std::to_string(max_depth_), at);
        ++pos_;
        if (More() && Peek() == '?') {
          if (pos_ + 1 < p_.size() && p_[pos_ + 1] == ':') {
            pos_ += 2;
          } else {
            return Error("(? groups other than (?: ) are not supported", at, "no lookaround, names or flags");
          }
        }
        auto inner = Alt(depth + 1);
        if (!inner.ok()) return inner;
        if (!More() || Peek() != ')') return Error("unclosed (", at);
        ++pos_;
        return inner;
      }
      case '[': return Class();
      case '.': {
        ++pos_;
        CharSet newline;
        newline.ascii.set('\n');
        return Set(Complement(newline));
      }
      case '\\': {
        CharSet set;
        uint32_t cp = 0;
        bool is_set = false;
        MODSERVE_RETURN_IF_ERROR(Escape(false, &set, &cp, &is_set));
        return is_set ? Set(set) : re_.Bytes(Utf8(cp));
      }
      case '*': case '+': case '?': return Error(std::string("nothing to repeat before ") + c, at);
      case '{': return Error("{ must follow something to repeat", at, "escape a literal { as \\{");
      case '^':
        if (at != 0) return Error("^ is supported only at the start of the pattern", at, "the whole completion is matched");
        ++pos_;
        return Node(RegexNode::Kind::kEmpty);
      case '$':
        if (at + 1 != p_.size()) return Error("$ is supported only at the end of the pattern", at, "the whole completion is matched");
        ++pos_;
        return Node(RegexNode::Kind::kEmpty);
      default: {
        auto cp = Char();
        if (!cp.ok()) return cp.status();
        return re_.Bytes(Utf8(*cp));
      }
    }
  }

  // A decimal number of a {n,m} at pos_ (at least one digit).
  bool Number(int64_t* out) {
    const size_t start = pos_;
    int64_t v = 0;
    while (More() && Peek() >= '0' && Peek() <= '9') {
      v = std::min<int64_t>(v * 10 + (Peek() - '0'), int64_t{1} << 40);
      ++pos_;
    }
    *out = v;
    return pos_ > start;
  }

  StatusOr<int32_t> Repeat(int64_t depth) {
    auto atom = Atom(depth);
    if (!atom.ok() || !More()) return atom;
    const size_t at = pos_;
    int64_t min = 0, max = -1;
    switch (Peek()) {
      case '*': ++pos_; break;
      case '+': ++pos_; min = 1; break;
      case '?': ++pos_; max = 1; break;
      case '{': {
        ++pos_;
        if (!Number(&min)) return Error("{ must be {n}, {n,} or {n,m}", at, "escape a literal { as \\{");
        max = min;
        if (More() && Peek() == ',') {
          ++pos_;
          max = -1;
          if (More() && Peek() != '}' && !Number(&max)) return Error("{ must be {n}, {n,} or {n,m}", at);
        }
        if (!More() || Peek() != '}') return Error("{ must be {n}, {n,} or {n,m}", at);
        ++pos_;
        if (min > max_repeat_ || max > max_repeat_) {
          return Error("a repeat count is over " + std::to_string(max_repeat_), at);
        }
        if (max >= 0 && max < min) return Error("{n,m} has m < n", at);
        break;
      }
      default: return atom;
    }
    if (More() && (Peek() == '?' || Peek() == '+')) {
      return Error("lazy and possessive quantifiers are not supported", pos_, "they change nothing in a whole match");
    }
    if (More() && (Peek() == '*' || Peek() == '{')) return Error("a quantifier can not follow a quantifier", pos_);
    RegexNode n;
    n.kind = RegexNode::Kind::kRepeat;
    n.kids = {*atom};
    n.min = static_cast<int32_t>(min);
    n.max = static_cast<int32_t>(max);
    return re_.Add(std::move(n));
  }

  StatusOr<int32_t> Concat(int64_t depth) {
    std::vector<int32_t> parts;
    while (More() && Peek() != '|' && Peek() != ')') {
      auto r = Repeat(depth);
      if (!r.ok()) return r;
      parts.push_back(*r);
    }
    if (parts.size() == 1) return parts[0];
    return Seq(std::move(parts));  // none: the empty string
  }

  StatusOr<int32_t> Alt(int64_t depth) {
    std::vector<int32_t> alts;
    while (true) {
      auto c = Concat(depth);
      if (!c.ok()) return c;
      alts.push_back(*c);
      if (!More() || Peek() != '|') break;
      ++pos_;
    }
    if (alts.size() == 1) return alts[0];
    return Node(RegexNode::Kind::kAlt, std::move(alts));
  }

  std::string_view p_;
  const std::string& field_;
  int64_t max_repeat_, max_depth_;
  size_t pos_ = 0;
  ByteRegex re_;
};

}  // namespace

StatusOr<ByteRegex> ParseByteRegex(std::string_view pattern, const std::string& field, int64_t max_repeat,
                                   int64_t max_depth) {
  return Parser(pattern, field, max_repeat, max_depth).Parse();
}

}  // namespace modserve
