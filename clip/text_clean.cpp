// Ref: openai/CLIP clip/simple_tokenizer.py (basic_clean, whitespace_clean); CPython Lib/html/__init__.py
// (unescape); rspeer/python-ftfy ftfy/__init__.py, fixes.py, chardata.py (fix_text and its default fixers).
#include "clip/text_clean.h"

#include <utf8proc.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "core/error.h"

namespace clipguide {
namespace {

struct NamedEntity {
  const char* name;
  const char* text;
};
struct InvalidCharref {
  uint32_t code;
  const char* text;
};
#include "clip/html_entities.inc"

template <size_t N>
const char* find_entity(const NamedEntity (&table)[N], const std::string& name) {
  auto it = std::lower_bound(
      std::begin(table), std::end(table), name,
      [](const NamedEntity& e, const std::string& n) { return std::strcmp(e.name, n.c_str()) < 0; });
  return it != std::end(table) && name == it->name ? it->text : nullptr;
}

std::u32string u32(const char* utf8) { return utf8_to_u32(utf8, "entity table"); }

bool is_ascii_alnum(char32_t c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool is_hex(char32_t c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// Python's html._replace_charref for the body after '&' (`s`, at most 32 code points plus ';').
std::u32string replace_charref(const std::u32string& s) {
  if (s[0] == '#') {
    const bool hex = s.size() > 1 && (s[1] == 'x' || s[1] == 'X');
    uint64_t num = 0;
    for (size_t i = hex ? 2 : 1; i < s.size() && s[i] != ';'; ++i) {
      const uint32_t d = s[i] <= '9' ? s[i] - '0' : (s[i] | 0x20) - 'a' + 10;
      num = std::min<uint64_t>(num * (hex ? 16 : 10) + d, 0x7fffffff);
    }
    for (const auto& r : kInvalidCharrefs) {
      if (r.code == num) return u32(r.text);
    }
    if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) return U"\uFFFD";
    if (std::binary_search(std::begin(kInvalidCodepoints), std::end(kInvalidCodepoints), num)) return U"";
    return std::u32string(1, static_cast<char32_t>(num));
  }
  const std::string name = u32_to_utf8(s);
  if (const char* text = find_entity(kHtml5Entities, name)) return u32(text);
  // The longest prefix that is an entity (HTML5 allows some without ';').
  for (size_t x = s.size() - 1; x > 1; --x) {
    if (const char* text = find_entity(kHtml5Entities, u32_to_utf8(s.substr(0, x))))
      return u32(text) + s.substr(x);
  }
  return U"&" + s;
}

// Windows-1252 bytes 0x80-0x9F; 0 where the code page leaves the byte undefined (ftfy's "sloppy" codec maps
// those to the C1 control of the same number).
constexpr char32_t kCp1252High[32] = {0x20AC, 0,      0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
                                      0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0,      0x017D, 0,
                                      0,      0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
                                      0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0,      0x017E, 0x0178};

// A code point as a sloppy-windows-1252 byte, or -1.
int sloppy_cp1252_byte(char32_t c) {
  if (c < 0x80 || (c >= 0xA0 && c <= 0xFF)) return static_cast<int>(c);
  for (int i = 0; i < 32; ++i) {
    if (kCp1252High[i] == c || (kCp1252High[i] == 0 && c == static_cast<char32_t>(0x80 + i))) return 0x80 + i;
  }
  return -1;
}

// UTF-8 that was decoded as Windows-1252 (or Latin-1): encode back and decode as UTF-8, if that is exactly
// possible and changes the text. Repeated for text that was mangled more than once.
bool fix_mojibake(std::u32string& text) {
  std::string bytes;
  bool high = false;
  for (char32_t c : text) {
    const int b = sloppy_cp1252_byte(c);
    if (b < 0) return false;
    high |= b >= 0x80;
    bytes.push_back(static_cast<char>(b));
  }
  if (!high) return false;
  std::u32string decoded;
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(bytes.data());
  for (utf8proc_ssize_t pos = 0, n = static_cast<utf8proc_ssize_t>(bytes.size()); pos < n;) {
    utf8proc_int32_t cp = 0;
    const utf8proc_ssize_t len = utf8proc_iterate(p + pos, n - pos, &cp);
    if (len < 0) return false;
    decoded.push_back(static_cast<char32_t>(cp));
    pos += len;
  }
  if (decoded == text) return false;
  text = std::move(decoded);
  return true;
}

// ftfy.fixes.unescape_html: "&name;" and "&#...;" with 1-24 alphanumerics, keeping entities it cannot
// resolve.
std::u32string ftfy_unescape_html(const std::u32string& text) {
  std::u32string out;
  for (size_t i = 0; i < text.size();) {
    if (text[i] == '&') {
      size_t j = i + 1;
      if (j < text.size() && text[j] == '#') ++j;
      const size_t start = j;
      while (j < text.size() && j - start < 24 && is_ascii_alnum(text[j])) ++j;
      if (j > start && j < text.size() && text[j] == ';') {
        const std::u32string entity = text.substr(i, j + 1 - i);
        const std::string name = u32_to_utf8(entity.substr(1));
        std::u32string replacement = entity;
        if (const char* t = find_entity(kHtml5Entities, name)) {
          replacement = u32(t);
        } else if (const char* u = find_entity(kFtfyUpperEntities, name)) {
          replacement = u32(u);
        } else if (entity[1] == '#') {
          const std::u32string unescaped = html_unescape(entity);
          if (unescaped.find(';') == std::u32string::npos) replacement = unescaped;
        }
        out += replacement;
        i = j + 1;
        continue;
      }
    }
    out.push_back(text[i++]);
  }
  return out;
}

std::u32string normalize(const std::u32string& text, utf8proc_option_t options) {
  const std::string utf8 = u32_to_utf8(text);
  utf8proc_uint8_t* result = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(utf8.data()),
                                          static_cast<utf8proc_ssize_t>(utf8.size()), &result, options);
  if (n < 0) fail("cannot normalize text: ", utf8proc_errmsg(n));
  std::string out(reinterpret_cast<char*>(result), static_cast<size_t>(n));
  std::free(result);
  return utf8_to_u32(out, "normalized text");
}

bool is_control_char(char32_t c) {  // ftfy.chardata.CONTROL_CHARS
  return c <= 0x08 || c == 0x0B || (c >= 0x0E && c <= 0x1F) || c == 0x7F || (c >= 0x206A && c <= 0x206F) ||
         c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC);
}

std::u32string ftfy_one_pass(std::u32string text, bool unescape) {
  if (unescape) text = ftfy_unescape_html(text);
  while (fix_mojibake(text)) {
  }
  std::u32string out;
  for (size_t i = 0; i < text.size(); ++i) {
    char32_t c = text[i];
    if (c >= 0x80 && c <= 0x9F) {  // fix_c1_controls
      const char32_t mapped = kCp1252High[c - 0x80];
      c = mapped != 0 ? mapped : c;
    }
    switch (c) {  // fix_latin_ligatures
      case 0x0132:
        out += U"IJ";
        continue;
      case 0x0133:
        out += U"ij";
        continue;
      case 0x0149:
        out += U"\u02BCn";
        continue;
      case 0x01F1:
        out += U"DZ";
        continue;
      case 0x01F2:
        out += U"Dz";
        continue;
      case 0x01F3:
        out += U"dz";
        continue;
      case 0x01C4:
        out += U"D\u017D";
        continue;
      case 0x01C5:
        out += U"D\u017E";
        continue;
      case 0x01C6:
        out += U"d\u017E";
        continue;
      case 0x01C7:
        out += U"LJ";
        continue;
      case 0x01C8:
        out += U"Lj";
        continue;
      case 0x01C9:
        out += U"lj";
        continue;
      case 0x01CA:
        out += U"NJ";
        continue;
      case 0x01CB:
        out += U"Nj";
        continue;
      case 0x01CC:
        out += U"nj";
        continue;
      case 0xFB00:
        out += U"ff";
        continue;
      case 0xFB01:
        out += U"fi";
        continue;
      case 0xFB02:
        out += U"fl";
        continue;
      case 0xFB03:
        out += U"ffi";
        continue;
      case 0xFB04:
        out += U"ffl";
        continue;
      case 0xFB05:
        out += U"\u017Ft";
        continue;
      case 0xFB06:
        out += U"st";
        continue;
      default:
        break;
    }
    if (c == 0x3000) {  // fix_character_width: ideographic space and full/half-width forms
      out.push_back(' ');
      continue;
    }
    if (c >= 0xFF01 && c <= 0xFFEF) {
      out += normalize(std::u32string(1, c),
                       static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT));
      continue;
    }
    if (c == 0x02BC || (c >= 0x2018 && c <= 0x201B)) c = '\'';  // uncurl_quotes
    if (c >= 0x201C && c <= 0x201F) c = '"';
    if (c == '\r') {  // fix_line_breaks
      if (i + 1 < text.size() && text[i + 1] == '\n') ++i;
      c = '\n';
    }
    if (c == 0x2028 || c == 0x2029 || c == 0x85) c = '\n';
    if (c == 0x1B && i + 1 < text.size() &&
        text[i + 1] == '[') {  // remove_terminal_escapes: ESC [ [0-9;]* letter
      size_t j = i + 2;
      while (j < text.size() && ((text[j] >= '0' && text[j] <= '9') || text[j] == ';')) ++j;
      if (j < text.size() && ((text[j] | 0x20) >= 'a' && (text[j] | 0x20) <= 'z')) {
        i = j;
        continue;
      }
    }
    if (is_control_char(c)) continue;  // remove_control_chars
    out.push_back(c);
  }
  return normalize(out, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
}

bool is_cased(char32_t c) {
  const utf8proc_category_t cat = utf8proc_category(static_cast<utf8proc_int32_t>(c));
  return cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT;
}

// Full lower-case mapping, including U+0130 -> "i\u0307"; Python's str.lower also applies the final sigma
// rule, Hugging Face tokenizers' Lowercase normalizer (one code point at a time) does not.
std::u32string full_lower(const std::u32string& text, bool final_sigma) {
  std::u32string out;
  for (size_t i = 0; i < text.size(); ++i) {
    const char32_t c = text[i];
    if (c == 0x0130) {
      out += U"i\u0307";
    } else if (c == 0x03A3 && final_sigma) {
      const bool after_cased = i > 0 && is_cased(text[i - 1]);
      const bool before_cased = i + 1 < text.size() && is_cased(text[i + 1]);
      out.push_back(after_cased && !before_cased ? 0x03C2 : 0x03C3);
    } else {
      out.push_back(static_cast<char32_t>(utf8proc_tolower(static_cast<utf8proc_int32_t>(c))));
    }
  }
  return out;
}

std::u32string python_lower(const std::u32string& text) { return full_lower(text, true); }

std::u32string strip(const std::u32string& s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

}  // namespace

std::u32string utf8_to_u32(const std::string& text, const std::string& what) {
  std::u32string out;
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  const auto n = static_cast<utf8proc_ssize_t>(text.size());
  for (utf8proc_ssize_t pos = 0; pos < n;) {
    utf8proc_int32_t cp = 0;
    const utf8proc_ssize_t len = utf8proc_iterate(p + pos, n - pos, &cp);
    if (len < 0) fail(what, ": invalid UTF-8 at byte ", pos);
    out.push_back(static_cast<char32_t>(cp));
    pos += len;
  }
  return out;
}

std::string u32_to_utf8(const std::u32string& text) {
  std::string out;
  utf8proc_uint8_t buf[4];
  for (char32_t c : text) {
    const utf8proc_ssize_t n = utf8proc_encode_char(static_cast<utf8proc_int32_t>(c), buf);
    out.append(reinterpret_cast<const char*>(buf), static_cast<size_t>(n));
  }
  return out;
}

std::u32string html_unescape(const std::u32string& text) {
  if (text.find('&') == std::u32string::npos) return text;
  // Python: &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)
  std::u32string out;
  for (size_t i = 0; i < text.size();) {
    if (text[i] != '&') {
      out.push_back(text[i++]);
      continue;
    }
    size_t j = i + 1;
    if (j < text.size() && text[j] == '#') {
      size_t k = j + 1;
      const bool hex = k < text.size() && (text[k] == 'x' || text[k] == 'X');
      if (hex) ++k;
      const size_t digits = k;
      while (k < text.size() && (hex ? is_hex(text[k]) : (text[k] >= '0' && text[k] <= '9'))) ++k;
      if (k == digits) {
        out.push_back(text[i++]);
        continue;
      }
      if (k < text.size() && text[k] == ';') ++k;
      out += replace_charref(text.substr(j, k - j));
      i = k;
      continue;
    }
    size_t k = j;
    auto name_char = [](char32_t c) {
      return c != '\t' && c != '\n' && c != '\f' && c != ' ' && c != '<' && c != '&' && c != '#' && c != ';';
    };
    while (k < text.size() && k - j < 32 && name_char(text[k])) ++k;
    if (k == j) {
      out.push_back(text[i++]);
      continue;
    }
    if (k < text.size() && text[k] == ';') ++k;
    out += replace_charref(text.substr(j, k - j));
    i = k;
  }
  return out;
}

std::u32string ftfy_fix_text(std::u32string text) {
  // ftfy decides per line whether HTML unescaping is safe: not in a line that contains '<'.
  std::u32string out;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    end = end == std::u32string::npos ? text.size() : end + 1;
    std::u32string segment = text.substr(pos, end - pos);
    const bool unescape = segment.find('<') == std::u32string::npos;
    for (int i = 0; i < 16; ++i) {
      std::u32string fixed = ftfy_one_pass(segment, unescape);
      if (fixed == segment) break;
      segment = std::move(fixed);
    }
    out += segment;
    pos = end;
  }
  return out;
}

bool is_space(char32_t c) {
  if ((c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0) return true;
  if (c < 0x1680) return false;
  return c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
         c == 0x205F || c == 0x3000;
}

bool is_letter(char32_t c) {
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
      return true;
    default:
      return false;
  }
}

bool is_number(char32_t c) {
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}

namespace {

// ftfy.fix_text, html.unescape twice, strip: open_clip's basic_clean (and the start of CLIP's cleaning).
std::u32string basic_clean(const std::string& utf8, const std::string& what) {
  return strip(html_unescape(html_unescape(ftfy_fix_text(utf8_to_u32(utf8, what)))));
}

// " ".join(text.split()): runs of whitespace become one space, none at either end.
std::u32string collapse_whitespace(const std::u32string& text) {
  std::u32string collapsed;
  for (char32_t c : text) {
    if (is_space(c)) {
      if (collapsed.empty() || collapsed.back() != ' ') collapsed.push_back(' ');
    } else {
      collapsed.push_back(c);
    }
  }
  return strip(collapsed);
}

bool is_ascii_punctuation(char32_t c) {
  static const std::u32string punctuation =
      U"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";  // Python's string.punctuation
  return punctuation.find(c) != std::u32string::npos;
}

}  // namespace

std::u32string clip_clean_text(const std::string& utf8, const std::string& what) {
  return python_lower(collapse_whitespace(basic_clean(utf8, what)));
}

std::u32string open_clip_clean_text(const std::string& utf8, OpenClipClean how, const std::string& what) {
  switch (how) {
    case OpenClipClean::Whitespace:
      return collapse_whitespace(basic_clean(utf8, what));
    case OpenClipClean::Lower:
      return python_lower(collapse_whitespace(basic_clean(utf8, what)));
    case OpenClipClean::Canonicalize: {
      // canonicalize_text: "_" -> " ", punctuation removed, lower-cased, whitespace collapsed.
      std::u32string kept;
      for (char32_t c : basic_clean(utf8, what)) {
        if (c == '_') {
          kept.push_back(' ');
        } else if (!is_ascii_punctuation(c)) {
          kept.push_back(c);
        }
      }
      return collapse_whitespace(python_lower(kept));
    }
  }
  return utf8_to_u32(utf8, what);
}

std::u32string hf_lower(const std::u32string& text) { return full_lower(text, false); }

std::u32string siglip_clean_text(const std::string& utf8, const std::string& what) {
  std::u32string kept;
  for (char32_t c : python_lower(utf8_to_u32(utf8, what))) {
    if (!is_ascii_punctuation(c)) kept.push_back(c);
  }
  return collapse_whitespace(kept);
}

namespace {

// One code point (or one invalid byte) as it is printed, with the size it counts for.
struct Piece {
  std::string text;
  size_t size;
};

// The pieces joined; if they add up to more than `limit`, the start and the end with "…" (counted as
// `ellipsis_size`) between them, about half from each end.
std::string join_cut_middle(const std::vector<Piece>& pieces, size_t limit, size_t ellipsis_size) {
  size_t total = 0;
  for (const Piece& piece : pieces) total += piece.size;
  std::string out;
  if (total <= limit) {
    for (const Piece& piece : pieces) out += piece.text;
    return out;
  }
  if (limit < ellipsis_size) return out;
  const size_t budget = limit - ellipsis_size;
  size_t head = 0, head_size = 0;
  while (head < pieces.size() && head_size + pieces[head].size <= budget / 2)
    head_size += pieces[head++].size;
  size_t tail = pieces.size(), tail_size = 0;
  while (tail > head && head_size + tail_size + pieces[tail - 1].size <= budget)
    tail_size += pieces[--tail].size;
  for (size_t i = 0; i < head; ++i) out += pieces[i].text;
  out += "\u2026";
  for (size_t i = tail; i < pieces.size(); ++i) out += pieces[i].text;
  return out;
}

// Calls f(bytes, code point) for each code point of `text`, with code point -1 for each byte of invalid
// UTF-8.
template <typename F>
void for_each_code_point(std::string_view text, F f) {
  const auto* p = reinterpret_cast<const utf8proc_uint8_t*>(text.data());
  const auto n = static_cast<utf8proc_ssize_t>(text.size());
  for (utf8proc_ssize_t pos = 0; pos < n;) {
    utf8proc_int32_t cp = 0;
    utf8proc_ssize_t len = utf8proc_iterate(p + pos, n - pos, &cp);
    if (len < 0) cp = -1, len = 1;
    f(text.substr(static_cast<size_t>(pos), static_cast<size_t>(len)), cp);
    pos += len;
  }
}

// Code points a terminal or a line-based reader acts on instead of showing: C0 controls, DEL, C1 controls,
// the line and paragraph separators, and the bidirectional embeddings, overrides and isolates (they reorder
// what follows them on the line).
bool acts_on_terminal(int32_t c) {
  return c < 0x20 || (c >= 0x7F && c <= 0x9F) || c == 0x2028 || c == 0x2029 || (c >= 0x202A && c <= 0x202E) ||
         (c >= 0x2066 && c <= 0x2069);
}

std::vector<Piece> width_pieces(std::string_view utf8) {
  std::vector<Piece> pieces;
  for_each_code_point(utf8, [&](std::string_view bytes, int32_t cp) {
    pieces.push_back(
        {std::string(bytes), cp < 0 ? 1 : static_cast<size_t>(std::max(0, utf8proc_charwidth(cp)))});
  });
  return pieces;
}

}  // namespace

std::string quote_untrusted(std::string_view text, size_t max_bytes) {
  static const char kHex[] = "0123456789ABCDEF";
  std::vector<Piece> pieces;
  for_each_code_point(text, [&](std::string_view bytes, int32_t cp) {
    Piece piece{std::string(bytes), 0};
    if (cp < 0 || acts_on_terminal(cp)) {
      piece.text.clear();
      for (unsigned char b : bytes) piece.text += {'\\', 'x', kHex[b >> 4], kHex[b & 15]};
    }
    piece.size = piece.text.size();
    pieces.push_back(std::move(piece));
  });
  return join_cut_middle(pieces, max_bytes, std::string("\u2026").size());
}

size_t display_width(std::string_view utf8) {
  size_t width = 0;
  for (const Piece& piece : width_pieces(utf8)) width += piece.size;
  return width;
}

std::string fit_width_middle(std::string_view utf8, size_t width) {
  return join_cut_middle(width_pieces(utf8), width, 1);
}

}  // namespace clipguide
