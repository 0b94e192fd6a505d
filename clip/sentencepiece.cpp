#include "clip/sentencepiece.h"

#include <algorithm>
#include <cfloat>
#include <cstdio>
#include <cstring>
#include <functional>
#include <queue>

#include "core/error.h"

namespace clipguide {
namespace {

using Type = SentencePieceModel::PieceType;
const std::string_view kSpaceSymbol = "\xe2\x96\x81";  // U+2581, SentencePiece's escaped space

// Bytes of the UTF-8 character starting with `lead` (1 for a stray continuation byte), as
// string_util::OneCharLen.
size_t one_char_len(unsigned char lead) {
  static const size_t kLengths[] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLengths[lead >> 4];
}

// A whole, well-formed UTF-8 character at the start of `s`: its length, or 0.
size_t valid_char_len(std::string_view s) {
  const auto c0 = static_cast<unsigned char>(s[0]);
  const size_t n = c0 < 0x80                   ? 1
                   : (c0 >= 0xC2 && c0 < 0xE0) ? 2
                   : (c0 >= 0xE0 && c0 < 0xF0) ? 3
                   : (c0 >= 0xF0 && c0 < 0xF5) ? 4
                                               : 0;
  if (n == 0 || n > s.size()) return 0;
  for (size_t i = 1; i < n; ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) return 0;
  }
  return n;
}

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }
bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

SentencePiece::SentencePiece(SentencePieceModel model, const std::string& source) : model_(std::move(model)) {
  if (model_.algorithm != SentencePieceModel::Algorithm::Unigram &&
      model_.algorithm != SentencePieceModel::Algorithm::Bpe)
    fail(source, ": only unigram and BPE SentencePiece models are supported");
  if (model_.treat_whitespace_as_suffix)
    fail(source, ": SentencePiece models with whitespace as a suffix are not supported");
  min_score_ = FLT_MAX;
  max_score_ = FLT_MIN;  // as unigram_model.cc initialises it
  for (size_t i = 0; i < model_.pieces.size(); ++i) {
    const auto& p = model_.pieces[i];
    const bool normal = p.type == Type::Normal || p.type == Type::UserDefined || p.type == Type::Unused;
    if (!(normal ? pieces_ : reserved_).emplace(p.text, static_cast<int64_t>(i)).second)
      fail(source, ": piece '", p.text, "' is defined twice");
    if (normal) longest_piece_ = std::max(longest_piece_, p.text.size());
    if (p.type == Type::UserDefined) longest_user_defined_ = std::max(longest_user_defined_, p.text.size());
    if (p.type == Type::Unknown) {
      if (unk_id_ >= 0) fail(source, ": more than one unknown piece");
      unk_id_ = static_cast<int64_t>(i);
    }
    if (p.type == Type::Normal) {
      min_score_ = std::min(min_score_, p.score);
      max_score_ = std::max(max_score_, p.score);
    }
  }
  if (unk_id_ < 0) fail(source, ": the SentencePiece model has no unknown piece");
  const std::string& map = model_.precompiled_charsmap;
  if (!map.empty()) {
    uint32_t trie_bytes = 0;
    if (map.size() <= 4) fail(source, ": its normalization rules are broken");
    for (int i = 3; i >= 0; --i) trie_bytes = (trie_bytes << 8) | static_cast<unsigned char>(map[i]);
    if (trie_bytes >= map.size() - 4 || trie_bytes % 4 != 0)
      fail(source, ": its normalization rules are broken");
    trie_.resize(trie_bytes / 4);
    for (size_t u = 0; u < trie_.size(); ++u) {
      uint32_t v = 0;
      for (int b = 3; b >= 0; --b)
        v = (v << 8) | static_cast<unsigned char>(map[4 + u * 4 + static_cast<size_t>(b)]);
      trie_[u] = v;
    }
    replacements_ = std::string_view(map).substr(4 + trie_bytes);
  }
}

int64_t SentencePiece::id_of(const std::string& piece) const {
  if (auto it = reserved_.find(piece); it != reserved_.end()) return it->second;
  if (auto it = pieces_.find(piece); it != pieces_.end()) return it->second;
  return -1;
}

size_t SentencePiece::user_defined_prefix(std::string_view text) const {
  for (size_t n = std::min(longest_user_defined_, text.size()); n > 0; --n) {
    auto it = pieces_.find(text.substr(0, n));
    if (it != pieces_.end() && is_type(it->second, Type::UserDefined)) return n;
  }
  return 0;
}

std::pair<std::string_view, size_t> SentencePiece::normalize_prefix(std::string_view text) const {
  if (const size_t n = user_defined_prefix(text); n > 0) return {text.substr(0, n), n};
  // The longest rule of the character map (darts-clone's commonPrefixSearch over the double array).
  size_t longest = 0, value = 0;
  if (!trie_.empty()) {
    auto offset = [](uint32_t unit) { return (unit >> 10) << ((unit & (1U << 9)) >> 6); };
    size_t node = offset(trie_[0]);
    for (size_t i = 0; i < text.size(); ++i) {
      const auto key = static_cast<unsigned char>(text[i]);
      node ^= key;
      if (node >= trie_.size()) break;
      const uint32_t unit = trie_[node];
      if ((unit & ((1U << 31) | 0xFF)) != key) break;
      node ^= offset(unit);
      if (node >= trie_.size()) break;
      if (((unit >> 8) & 1) == 1) {
        longest = i + 1;
        value = trie_[node] & ((1U << 31) - 1);
      }
    }
  }
  if (longest > 0 && value < replacements_.size()) {
    const std::string_view rest = replacements_.substr(value);
    return {rest.substr(0, rest.find('\0')), longest};
  }
  const size_t n = valid_char_len(text);
  if (n == 0) return {"\xEF\xBF\xBD", 1};  // a malformed byte becomes U+FFFD
  return {text.substr(0, n), n};
}

std::string SentencePiece::normalize(std::string_view input) const {
  std::string out;
  if (model_.remove_extra_whitespaces) {  // leading spaces
    while (!input.empty()) {
      const auto [piece, consumed] = normalize_prefix(input);
      if (piece != " ") break;
      input.remove_prefix(consumed);
    }
  }
  if (input.empty()) return out;
  const std::string_view space = model_.escape_whitespaces ? kSpaceSymbol : " ";
  if (model_.add_dummy_prefix) out += space;
  bool prev_space = model_.remove_extra_whitespaces;
  while (!input.empty()) {
    auto [piece, consumed] = normalize_prefix(input);
    while (prev_space && starts_with(piece, " ")) piece.remove_prefix(1);
    if (!piece.empty()) {
      for (char c : piece) {
        if (c == ' ' && model_.escape_whitespaces) {
          out += kSpaceSymbol;
        } else {
          out += c;
        }
      }
      prev_space = ends_with(piece, " ");
    }
    input.remove_prefix(consumed);
    if (!model_.remove_extra_whitespaces) prev_space = false;
  }
  if (model_.remove_extra_whitespaces) {
    while (ends_with(out, space)) out.resize(out.size() - space.size());
  }
  return out;
}

std::vector<std::pair<std::string_view, int64_t>> SentencePiece::unigram(std::string_view normalized) const {
  struct Best {
    int64_t id = -1;
    float score = 0;
    int64_t starts_at = -1;
  };
  const size_t size = normalized.size();
  const float unk_score = min_score_ - 10.0f;  // kUnkPenalty
  std::vector<Best> best(size + 1);
  for (size_t start = 0; start < size;) {
    const float till_here = best[start].score;
    const size_t mblen = std::min(one_char_len(static_cast<unsigned char>(normalized[start])), size - start);
    bool single = false;
    for (size_t length = 1; length <= std::min(longest_piece_, size - start); ++length) {
      const auto it = pieces_.find(normalized.substr(start, length));
      if (it == pieces_.end() || is_type(it->second, Type::Unused)) continue;
      Best& target = best[start + length];
      auto offer = [&](auto candidate) {  // float for pieces' scores, double for the user-defined bonus
        if (target.starts_at == -1 || candidate > target.score)
          target = {it->second, static_cast<float>(candidate), static_cast<int64_t>(start)};
      };
      if (is_type(it->second, Type::UserDefined)) {
        // A bonus that always selects a user-defined piece, computed in double as the reference does.
        offer(static_cast<double>(static_cast<float>(length) * max_score_) - 0.1 + till_here);
      } else {
        offer(model_.pieces[static_cast<size_t>(it->second)].score + till_here);
      }
      if (length == mblen) single = true;
    }
    if (!single) {
      Best& target = best[start + mblen];
      const float candidate = unk_score + till_here;
      if (target.starts_at == -1 || candidate > target.score)
        target = {unk_id_, candidate, static_cast<int64_t>(start)};
    }
    start += mblen;
  }
  std::vector<std::pair<std::string_view, int64_t>> out;
  for (size_t end = size; end > 0;) {
    const Best& node = best[end];
    const auto begin = static_cast<size_t>(node.starts_at);
    out.emplace_back(normalized.substr(begin, end - begin), node.id);
    end = begin;
  }
  std::reverse(out.begin(), out.end());
  return out;
}

std::vector<std::pair<std::string_view, int64_t>> SentencePiece::bpe(std::string_view normalized) const {
  struct Symbol {
    int64_t prev, next;
    bool freeze;
    std::string_view piece;
  };
  struct Pair {
    int64_t left, right;
    float score;
    size_t size;
  };
  auto lower = [](const Pair& a, const Pair& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Pair, std::vector<Pair>, decltype(lower)> agenda(lower);
  std::vector<Symbol> symbols;
  std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>>
      unmerge;  // unused pieces
  auto add_pair = [&](int64_t left, int64_t right) {
    if (left == -1 || right == -1 || symbols[left].freeze || symbols[right].freeze) return;
    const std::string_view piece(symbols[left].piece.data(),
                                 symbols[left].piece.size() + symbols[right].piece.size());
    const auto it = pieces_.find(piece);
    if (it == pieces_.end()) return;
    agenda.push({left, right, model_.pieces[static_cast<size_t>(it->second)].score, piece.size()});
    if (is_type(it->second, Type::Unused)) unmerge[piece] = {symbols[left].piece, symbols[right].piece};
  };
  for (std::string_view rest = normalized; !rest.empty();) {
    const size_t user = user_defined_prefix(rest);
    const size_t n =
        user > 0 ? user : std::min(rest.size(), one_char_len(static_cast<unsigned char>(rest[0])));
    const auto index = static_cast<int64_t>(symbols.size());
    rest.remove_prefix(n);
    symbols.push_back({index - 1, rest.empty() ? -1 : index + 1, user > 0,
                       std::string_view(normalized.data() + (normalized.size() - rest.size() - n), n)});
  }
  for (size_t i = 1; i < symbols.size(); ++i) add_pair(static_cast<int64_t>(i) - 1, static_cast<int64_t>(i));
  while (!agenda.empty()) {
    const Pair top = agenda.top();
    agenda.pop();
    Symbol &left = symbols[top.left], &right = symbols[top.right];
    if (left.piece.empty() || right.piece.empty() || left.piece.size() + right.piece.size() != top.size)
      continue;
    left.piece = std::string_view(left.piece.data(), left.piece.size() + right.piece.size());
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    right.piece = {};
    add_pair(left.prev, top.left);
    add_pair(top.left, left.next);
  }
  std::vector<std::pair<std::string_view, int64_t>> out;
  std::function<void(std::string_view)> resegment = [&](std::string_view w) {
    const int64_t id = id_of(std::string(w));
    const auto split = unmerge.find(w);
    if (id >= 0 && is_type(id, Type::Unused) && split != unmerge.end()) {
      resegment(split->second.first);
      resegment(split->second.second);
      return;
    }
    out.emplace_back(w, id >= 0 ? id : unk_id_);
  };
  for (int64_t i = symbols.empty() ? -1 : 0; i != -1; i = symbols[i].next) resegment(symbols[i].piece);
  return out;
}

std::vector<int64_t> SentencePiece::encode(std::string_view text) const {
  const std::string normalized = normalize(text);
  if (normalized.empty()) return {};
  const auto pieces =
      model_.algorithm == SentencePieceModel::Algorithm::Bpe ? bpe(normalized) : unigram(normalized);
  std::vector<int64_t> ids;
  bool prev_unknown = false;
  for (const auto& [piece, id] : pieces) {
    const bool unknown = is_type(id, Type::Unknown);
    if (unknown && model_.byte_fallback) {
      for (unsigned char byte : piece) {
        char name[8];
        std::snprintf(name, sizeof name, "<0x%02X>", byte);
        const int64_t byte_id = id_of(name);
        ids.push_back(byte_id >= 0 ? byte_id : unk_id_);
      }
    } else if (!(unknown && prev_unknown)) {  // a run of unknown characters is one <unk>
      ids.push_back(id);
    }
    prev_unknown = unknown;
  }
  return ids;
}

}  // namespace clipguide
