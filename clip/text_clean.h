// Text cleaning as openai/CLIP simple_tokenizer.py does it before BPE: ftfy.fix_text, html.unescape twice,
// whitespace collapsed, strip, lower-case. ftfy is reimplemented for its common repairs (HTML entities, UTF-8
// mojibake read as Windows-1252/Latin-1, C1 controls, Latin ligatures, full-width forms, curly quotes, line
// breaks, terminal escapes, control characters, NFC); its badness heuristics and rarer codecs are not.
#pragma once

#include <string>
#include <string_view>

#include "core/names.h"

namespace clipguide {

// Decodes UTF-8 to code points; throws Error naming `what` on invalid UTF-8.
std::u32string utf8_to_u32(const std::string& text, const std::string& what);
std::string u32_to_utf8(const std::u32string& text);

// Python's html.unescape (HTML5 named and numeric character references).
std::u32string html_unescape(const std::u32string& text);

// The subset of ftfy.fix_text described above, applied until the text stops changing.
std::u32string ftfy_fix_text(std::u32string text);

// Python str.isspace, the `\s` the tokenizer's regexes use.
bool is_space(char32_t c);
// Unicode general category L* and N*.
bool is_letter(char32_t c);
bool is_number(char32_t c);

// The columns a terminal gives valid UTF-8 text: two for East Asian wide characters and most emoji, none for
// combining marks, one otherwise.
size_t display_width(std::string_view utf8);
// Valid UTF-8 text cut in the middle with "…" to at most `width` columns (unchanged if it fits).
std::string fit_width_middle(std::string_view utf8, size_t width);

// ftfy + unescape twice + strip + whitespace collapse + lower-case: what the BPE sees.
std::u32string clip_clean_text(const std::string& utf8, const std::string& what);

// open_clip's clean functions (open_clip_config.json text_cfg.tokenizer_kwargs.clean), which it runs before
// its Hugging Face tokenizer: all start with ftfy + unescape twice + strip and collapse whitespace; "lower"
// then lower-cases; "canonicalize" turns "_" into spaces, removes ASCII punctuation and lower-cases.
enum class OpenClipClean { Whitespace, Lower, Canonicalize };
inline constexpr Named<OpenClipClean> kOpenClipCleans[] = {{OpenClipClean::Whitespace, "whitespace"},
                                                           {OpenClipClean::Lower, "lower"},
                                                           {OpenClipClean::Canonicalize, "canonicalize"}};
std::u32string open_clip_clean_text(const std::string& utf8, OpenClipClean how, const std::string& what);

// Lower-case as Hugging Face tokenizers' Lowercase normalizer does it: each code point's full mapping
// (U+0130 -> "i\u0307"), without Python's final-sigma rule.
std::u32string hf_lower(const std::u32string& text);

// SigLIP's canonical text (big_vision's, as transformers' SiglipTokenizer and open_clip's "canonicalize"
// clean it): lower-case, ASCII punctuation removed, whitespace collapsed, stripped.
std::u32string siglip_clean_text(const std::string& utf8, const std::string& what);

}  // namespace clipguide
