#include "net/fast_request.h"

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace kvstore::net {

namespace {

class Scanner {
 public:
  explicit Scanner(std::string_view s) : s_(s) {}

  bool AtEnd() const { return i_ == s_.size(); }
  char Peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }

  void SkipSpace() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) {
      ++i_;
    }
  }

  bool Consume(char c) {
    if (Peek() != c || AtEnd()) return false;
    ++i_;
    return true;
  }

  // A string without escapes or control characters; *contents is what is
  // between the quotes.
  bool PlainString(std::string_view* contents) {
    if (!Consume('"')) return false;
    const size_t start = i_;
    // Eight bytes at a time while none of them is a quote, a backslash or a
    // control character: values are most of a write request's bytes, and
    // the byte loop was 7% of kvserver's CPU for bulk writes (no indexes).
    while (s_.size() - i_ >= 8 && !MayEndString(Load8(i_))) i_ += 8;
    for (; i_ < s_.size(); ++i_) {
      const auto c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        *contents = s_.substr(start, i_ - start);
        ++i_;
        return true;
      }
      if (c == '\\' || c < 0x20) return false;
    }
    return false;
  }

  uint64_t Load8(size_t at) const {
    uint64_t word;
    std::memcpy(&word, s_.data() + at, sizeof word);
    return word;
  }

  // Whether any byte of word is '"', '\\' or below 0x20. Each test is the
  // exact "has a byte below n" trick (n <= 0x80) from Bit Twiddling Hacks:
  // a zero result means no such byte, whatever the other bytes hold.
  static bool MayEndString(uint64_t word) {
    constexpr uint64_t kOnes = 0x0101010101010101ull, kHighs = 0x8080808080808080ull;
    auto has_zero = [](uint64_t v) { return ((v - kOnes) & ~v & kHighs) != 0; };
    const bool below_space = ((word - kOnes * 0x20) & ~word & kHighs) != 0;
    return below_space || has_zero(word ^ (kOnes * '"')) || has_zero(word ^ (kOnes * '\\'));
  }

  // A scalar whose text is already canonical; *text is that text.
  bool CanonicalScalar(std::string_view* text) {
    const size_t start = i_;
    const char c = Peek();
    if (c == '"') {
      std::string_view unused;
      if (!PlainString(&unused)) return false;
    } else if (c == 't' || c == 'f' || c == 'n') {
      if (!Literal("true") && !Literal("false") && !Literal("null")) return false;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      if (!Integer()) return false;
    } else {
      return false;  // objects, arrays, garbage: the full parser's business
    }
    *text = s_.substr(start, i_ - start);
    return true;
  }

 private:
  bool Literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }

  // -?(0|[1-9][0-9]*) with at most 18 digits (fits int64 and uint64), not
  // "-0" (nlohmann stores it as 0) and not followed by a fraction or
  // exponent (a float, which nlohmann may print differently).
  bool Integer() {
    const bool negative = Consume('-');
    const size_t digits_start = i_;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
    const size_t digits = i_ - digits_start;
    if (digits == 0 || digits > 18) return false;
    if (s_[digits_start] == '0' && (digits > 1 || negative)) return false;
    const char next = Peek();
    return next != '.' && next != 'e' && next != 'E';
  }

  std::string_view s_;
  size_t i_ = 0;
};

// Walks one JSON object filling the whole line: on_member(name) parses the
// member's value from sc and returns false to refuse the line.
template <typename OnMember>
bool ParseObject(Scanner& sc, OnMember on_member) {
  sc.SkipSpace();
  if (!sc.Consume('{')) return false;
  for (;;) {
    sc.SkipSpace();
    std::string_view name;
    if (!sc.PlainString(&name)) return false;
    sc.SkipSpace();
    if (!sc.Consume(':')) return false;
    sc.SkipSpace();
    if (!on_member(name)) return false;
    sc.SkipSpace();
    if (sc.Consume(',')) continue;
    if (!sc.Consume('}')) return false;
    break;
  }
  sc.SkipSpace();
  return sc.AtEnd();
}

}  // namespace

bool ParseFastRequest(std::string_view line, FastRequest* out) {
  *out = FastRequest{};
  bool seen_op = false, seen_id = false, seen_value = false;
  Scanner sc(line);
  // Each member at most once: with repeats nlohmann keeps the last, and that
  // subtlety is left to it.
  const bool parsed = ParseObject(sc, [&](std::string_view name) {
    if (name == "op") {
      if (seen_op || !sc.PlainString(&out->op)) return false;
      seen_op = true;
    } else if (name == "key") {
      if (out->has_key || !sc.PlainString(&out->key)) return false;
      out->has_key = true;
    } else if (name == "id") {
      if (seen_id || !sc.CanonicalScalar(&out->id)) return false;
      seen_id = true;
    } else if (name == "value") {
      if (seen_value || !sc.CanonicalScalar(&out->value)) return false;
      seen_value = true;
    } else {
      return false;
    }
    return true;
  });
  return parsed && seen_op;
}

bool ParseFastBulkSet(std::string_view line, FastBulkSet* out) {
  out->id = {};
  out->items.clear();
  bool seen_op = false, seen_id = false, seen_items = false;
  Scanner sc(line);
  const bool parsed = ParseObject(sc, [&](std::string_view name) {
    if (name == "op") {
      // Checked at once, so other ops are refused after a few bytes.
      std::string_view op;
      if (seen_op || !sc.PlainString(&op) || op != "bulk_set") return false;
      seen_op = true;
    } else if (name == "id") {
      if (seen_id || !sc.CanonicalScalar(&out->id)) return false;
      seen_id = true;
    } else if (name == "items") {
      if (seen_items || !sc.Consume('[')) return false;
      seen_items = true;
      sc.SkipSpace();
      if (sc.Peek() == ']') return false;  // no items: rare, left to the full parser
      for (;;) {
        std::string_view key, value;
        sc.SkipSpace();
        if (!sc.Consume('[')) return false;
        sc.SkipSpace();
        if (!sc.PlainString(&key)) return false;
        sc.SkipSpace();
        if (!sc.Consume(',')) return false;
        sc.SkipSpace();
        if (!sc.CanonicalScalar(&value)) return false;
        sc.SkipSpace();
        if (!sc.Consume(']')) return false;
        out->items.emplace_back(key, value);
        sc.SkipSpace();
        if (sc.Consume(',')) continue;
        if (!sc.Consume(']')) return false;
        break;
      }
    } else {
      return false;
    }
    return true;
  });
  return parsed && seen_op && seen_items;
}

}  // namespace kvstore::net
