// Ref: openai/CLIP clip/simple_tokenizer.py (bytes_to_unicode, SimpleTokenizer.bpe/encode), clip/clip.py
// (tokenize).
#include "clip/tokenizer.h"

#include <zlib.h>

#include <filesystem>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "clip/sentencepiece.h"
#include "clip/text_clean.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/json_fields.h"

namespace clipguide {
namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxVocabBytes = 64u << 20;
constexpr size_t kMaxTextBytes = 1u << 20;
// BPE is quadratic in a word's length; real words are far shorter, and a longer one is an error, not a hang.
constexpr size_t kMaxWordBytes = 1024;
// Texts are encoded until they are this many tokens past the context, so a huge text costs no more than that.
constexpr size_t kCountBeyondContext = 1024;
const char* const kSot = "<|startoftext|>";
const char* const kEot = "<|endoftext|>";

// bytes_to_unicode: printable bytes stand for themselves, the rest map to U+0100 onwards, in byte order.
// Returned in the dict's order (the printable bytes first, then the rest), which is the vocabulary's order.
std::vector<std::pair<uint8_t, char32_t>> byte_to_unicode() {
  std::vector<std::pair<uint8_t, char32_t>> table;
  std::vector<bool> direct(256, false);
  for (int b = '!'; b <= '~'; ++b) direct[b] = true;
  for (int b = 0xA1; b <= 0xAC; ++b) direct[b] = true;
  for (int b = 0xAE; b <= 0xFF; ++b) direct[b] = true;
  for (int b = 0; b < 256; ++b) {
    if (direct[b]) table.emplace_back(static_cast<uint8_t>(b), static_cast<char32_t>(b));
  }
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    if (!direct[b]) table.emplace_back(static_cast<uint8_t>(b), next++);
  }
  return table;
}

// simple_tokenizer.py's vocabulary: the bytes' stand-ins, the same with </w>, one entry per merge, then the
// specials.
std::vector<std::string> vocabulary_in_openai_order(const BpeMerges& merges) {
  std::vector<std::string> vocab;
  for (const auto& entry : byte_to_unicode()) vocab.push_back(u32_to_utf8(std::u32string(1, entry.second)));
  for (int i = 0; i < 256; ++i) vocab.push_back(vocab[i] + "</w>");
  for (const auto& m : merges) vocab.push_back(m.first + m.second);
  vocab.push_back(kSot);
  vocab.push_back(kEot);
  return vocab;
}

std::string gunzip_file(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) fail(path, ": cannot open");
  std::string out;
  char buf[1 << 16];
  int n = 0;
  while ((n = gzread(f, buf, sizeof buf)) > 0) {
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > kMaxVocabBytes) {
      gzclose(f);
      fail(path, ": vocabulary exceeds ", kMaxVocabBytes, " bytes uncompressed");
    }
  }
  int err = Z_OK;
  const char* msg = gzerror(f, &err);
  const bool bad = n < 0 || (err != Z_OK && err != Z_STREAM_END);
  const std::string reason = bad ? msg : "";
  gzclose(f);
  if (bad) fail(path, ": corrupt gzip data (", reason, ")");
  return out;
}

BpeMerges parse_merges(const std::string& text, size_t first_line, size_t max_merges,
                       const std::string& source) {
  BpeMerges merges;
  std::istringstream in(text);
  std::string line;
  for (size_t i = 0; std::getline(in, line) && merges.size() < max_merges; ++i) {
    if (i < first_line) continue;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    if (space == std::string::npos || space == 0 || line.find(' ', space + 1) != std::string::npos) {
      fail(source, ": line ", i + 1, " is not a merge of two symbols");
    }
    merges.emplace_back(line.substr(0, space), line.substr(space + 1));
  }
  if (merges.empty()) fail(source, ": no merges found");
  return merges;
}

// A word's symbols before any merge: its UTF-8 characters, the last one marked with </w>.
std::vector<std::string> initial_symbols(const std::string& token) {
  std::vector<std::string> word;
  for (size_t i = 0; i < token.size();) {
    size_t len = 1;
    const auto lead = static_cast<unsigned char>(token[i]);
    if (lead >= 0xF0)
      len = 4;
    else if (lead >= 0xE0)
      len = 3;
    else if (lead >= 0xC0)
      len = 2;
    word.push_back(token.substr(i, len));
    i += len;
  }
  word.back() += "</w>";
  return word;
}

// Merges every occurrence of the pair (first, second) in `word`, left to right.
void merge_pair(std::vector<std::string>& word, const std::string& first, const std::string& second) {
  std::vector<std::string> merged;
  for (size_t i = 0; i < word.size();) {
    if (i + 1 < word.size() && word[i] == first && word[i + 1] == second) {
      merged.push_back(first + second);
      i += 2;
    } else {
      merged.push_back(word[i++]);
    }
  }
  word = std::move(merged);
}

// The pattern <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
// over cleaned text, matched leftmost-first as the regex module does: `piece` gets each word, `special` each
// special token (true: start of text). Stops once `out` holds `max_tokens`.
template <typename Piece, typename Special>
void for_each_piece(const std::u32string& clean, size_t max_tokens, const std::vector<int64_t>& out,
                    Piece&& piece, Special&& special) {
  static const std::u32string specials[] = {U"<|startoftext|>", U"<|endoftext|>"};
  static const std::u32string contractions[] = {U"'s", U"'t", U"'re", U"'ve", U"'m", U"'ll", U"'d"};
  for (size_t i = 0; i < clean.size() && out.size() < max_tokens;) {
    bool matched = false;
    for (const auto& s : specials) {
      if (clean.compare(i, s.size(), s) == 0) {
        special(s == specials[0]);
        i += s.size();
        matched = true;
        break;
      }
    }
    if (matched) continue;
    for (const auto& c : contractions) {
      if (clean.compare(i, c.size(), c) == 0) {
        piece(c);
        i += c.size();
        matched = true;
        break;
      }
    }
    if (matched) continue;
    const char32_t c = clean[i];
    size_t j = i + 1;
    if (is_letter(c)) {
      while (j < clean.size() && is_letter(clean[j])) ++j;
    } else if (is_number(c)) {
    } else if (!is_space(c)) {
      while (j < clean.size() && !is_space(clean[j]) && !is_letter(clean[j]) && !is_number(clean[j])) ++j;
    } else {
      i = j;
      continue;
    }
    piece(clean.substr(i, j - i));
    i = j;
  }
}

}  // namespace

Tokenizer::Tokenizer(std::unordered_map<std::string, int64_t> encoder, const BpeMerges& merges,
                     const std::string& source)
    : encoder_(std::move(encoder)) {
  for (const auto& [byte, code] : byte_to_unicode())
    byte_encoder_[byte] = u32_to_utf8(std::u32string(1, code));
  for (size_t i = 0; i < merges.size(); ++i)
    ranks_.emplace(merges[i].first + " " + merges[i].second, static_cast<int64_t>(i));
  for (const char* special : {kSot, kEot}) {
    if (encoder_.count(special) == 0) fail(source, ": vocabulary lacks ", special);
  }
  sot_ = encoder_.at(kSot);
  eot_ = encoder_.at(kEot);
  for (const auto& kv : encoder_) {
    if (kv.second < 0) fail(source, ": token '", kv.first, "' has a negative id");
    max_id_ = std::max(max_id_, kv.second);
  }
}

Tokenizer Tokenizer::from_openai_vocab(const std::string& path) {
  const std::string text = gunzip_file(path);
  // simple_tokenizer.py: merges = lines[1 : 49152 - 256 - 2 + 1]
  auto merges = parse_merges(text, 1, 49152 - 256 - 2, path);
  std::unordered_map<std::string, int64_t> encoder;
  const std::vector<std::string> vocab = vocabulary_in_openai_order(merges);
  for (size_t i = 0; i < vocab.size(); ++i) encoder.emplace(vocab[i], static_cast<int64_t>(i));
  return Tokenizer(std::move(encoder), merges, path);
}

Tokenizer Tokenizer::from_hf_files(const std::string& vocab_json, const std::string& merges_txt) {
  nlohmann::json vocab;
  try {
    vocab = nlohmann::json::parse(read_small_file(vocab_json, kMaxVocabBytes));
  } catch (const nlohmann::json::exception& e) {
    fail(vocab_json, ": not valid JSON (", e.what(), ")");
  }
  if (!vocab.is_object()) fail(vocab_json, ": expected a JSON object of token -> id");
  std::unordered_map<std::string, int64_t> encoder;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer()) fail(vocab_json, ": id of token '", it.key(), "' is not an integer");
    encoder.emplace(it.key(), it.value().get<int64_t>());
  }
  const std::string text = read_small_file(merges_txt, kMaxVocabBytes);
  const size_t first = text.rfind("#version", 0) == 0 ? 1 : 0;
  return Tokenizer(std::move(encoder),
                   parse_merges(text, first, std::numeric_limits<size_t>::max(), merges_txt), vocab_json);
}

namespace {

// A special token as tokenizer_config.json writes it: "<pad>" or {"content": "<pad>", ...}.
void read_token(const nlohmann::json& config, const char* key, std::string& out, const std::string& where) {
  if (config.contains(key) && config[key].is_object()) {
    read_field(config[key], "content", out, cat(where, ".", key));
  } else {
    read_field(config, key, out, where);
  }
}

bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }

std::optional<nlohmann::json> json_file_in(const fs::path& dir, const char* name, const std::string& source) {
  std::error_code ec;
  if (!fs::exists(dir / name, ec)) return std::nullopt;
  return parse_json_object(read_small_file((dir / name).string(), kMaxVocabBytes), source, name);
}

// True when a tokenizer.json normalizer (or one inside a Sequence) is of type `type`.
bool has_normalizer(const nlohmann::json& normalizer, const char* type) {
  if (!normalizer.is_object()) return false;
  if (normalizer.value("type", "") == type) return true;
  if (normalizer.contains("normalizers") && normalizer["normalizers"].is_array()) {
    for (const auto& n : normalizer["normalizers"])
      if (has_normalizer(n, type)) return true;
  }
  return false;
}

}  // namespace

SentencePieceRules SentencePieceRules::in_folder(const std::string& folder) {
  SentencePieceRules rules;
  const fs::path dir(folder);
  const std::optional<nlohmann::json> config = json_file_in(dir, "tokenizer_config.json", folder);
  if (config) {
    const std::string where = cat(folder, ": tokenizer_config.json");
    std::string cls;
    read_field(*config, "tokenizer_class", cls, where);
    if (starts_with(cls, "Siglip2") || starts_with(cls, "Gemma")) {
      // transformers' Gemma-backed classes: no end token and left padding unless the files say otherwise;
      // Siglip2Tokenizer lower-cases (its tokenizer.json normalizer, below, says so too).
      rules.text = starts_with(cls, "Siglip2") ? Text::Lower : Text::AsIs;
      rules.add_eos = false;
      rules.pad_left = true;
      rules.bos_token = "<bos>";
      rules.eos_token = "<eos>";
      rules.pad_token = "<pad>";
    } else if (!cls.empty() && !starts_with(cls, "Siglip")) {
      fail(
          where, ".tokenizer_class '", cls,
          "' is not a SentencePiece tokenizer read here (SiglipTokenizer, Siglip2Tokenizer, GemmaTokenizer)");
    }
    read_field(*config, "add_bos_token", rules.add_bos, where);
    read_field(*config, "add_eos_token", rules.add_eos, where);
    std::string side = rules.pad_left ? "left" : "right";
    read_field(*config, "padding_side", side, where);
    if (side != "left" && side != "right") fail(where, ".padding_side '", side, "' is not left or right");
    rules.pad_left = side == "left";
    read_token(*config, "bos_token", rules.bos_token, where);
    read_token(*config, "eos_token", rules.eos_token, where);
    read_token(*config, "pad_token", rules.pad_token, where);
    // A tokenizer.json is what transformers' tokenizers-backed classes run: its normalizer says whether text
    // is lower-cased, its post-processor which special tokens frame the ids.
    if (rules.text != Text::SiglipCanonical) {
      if (const auto fast = json_file_in(dir, "tokenizer.json", folder)) {
        const std::string fast_where = cat(folder, ": tokenizer.json");
        if (fast->contains("normalizer"))
          rules.text = has_normalizer((*fast)["normalizer"], "Lowercase") ? Text::Lower : Text::AsIs;
        const nlohmann::json& post = object_field(*fast, "post_processor", fast_where);
        if (post.value("type", "") == "TemplateProcessing" && post.contains("single") &&
            post["single"].is_array()) {
          rules.add_bos = rules.add_eos = false;
          bool before = true;
          for (const auto& item : post["single"]) {
            if (item.contains("Sequence")) {
              before = false;
            } else if (item.contains("SpecialToken") && item["SpecialToken"].is_object()) {
              std::string token;
              read_field(item["SpecialToken"], "id", token, fast_where + ".post_processor.single");
              (before ? rules.add_bos : rules.add_eos) = true;
              (before ? rules.bos_token : rules.eos_token) = token;
            }
          }
        }
      }
    }
  }
  if (const auto open_clip = json_file_in(dir, "open_clip_config.json", folder)) {
    const std::string where = cat(folder, ": open_clip_config.json model_cfg.text_cfg");
    const nlohmann::json& text =
        object_field(object_field(*open_clip, "model_cfg", folder + ": open_clip_config.json"), "text_cfg",
                     folder + ": open_clip_config.json model_cfg");
    if (text.contains("hf_tokenizer_name")) {
      std::string clean = "whitespace";  // open_clip's HFTokenizer default
      read_field(object_field(text, "tokenizer_kwargs", where), "clean", clean, where + ".tokenizer_kwargs");
      rules.open_clip_clean = parse_name(kOpenClipCleans, clean, (where + ".tokenizer_kwargs.clean").c_str());
    }
  }
  return rules;
}

Tokenizer Tokenizer::from_sentencepiece(const std::string& model_file, const SentencePieceRules& rules) {
  auto sp = std::make_shared<const SentencePiece>(
      parse_sentencepiece_model(read_small_file(model_file, kMaxVocabBytes), model_file), model_file);
  auto id = [&](const std::string& token, const char* what) {
    const int64_t i = token.empty() ? sp->eos_id() : sp->id_of(token);
    if (i < 0) {
      fail(model_file, ": the SentencePiece model has no ", what, " piece",
           token.empty() ? "" : cat(" '", token, "'"));
    }
    return i;
  };
  Tokenizer t;
  t.sot_ = rules.add_bos ? id(rules.bos_token, "start") : -1;
  t.eot_ = rules.add_eos ? id(rules.eos_token, "end-of-sequence") : -1;
  t.pad_ = id(rules.pad_token, "padding");
  t.max_id_ = sp->size() - 1;
  t.rules_ = rules;
  t.sp_ = std::move(sp);
  return t;
}

std::string Tokenizer::describe() const {
  if (!sp_) return kind();
  std::string out = "SentencePiece (";
  if (rules_.open_clip_clean)
    out += cat("open_clip '", name_of(kOpenClipCleans, *rules_.open_clip_clean), "' clean, ");
  switch (rules_.text) {
    case SentencePieceRules::Text::SiglipCanonical:
      out += "canonical text, ";
      break;
    case SentencePieceRules::Text::Lower:
      out += "lower-cased, ";
      break;
    case SentencePieceRules::Text::AsIs:
      break;
  }
  if (sot_ >= 0) out += cat("start id ", sot_, ", ");
  if (eot_ >= 0) out += cat("end id ", eot_, ", ");
  return cat(out, "padded ", rules_.pad_left ? "left" : "right", " with id ", pad_, ")");
}

std::string Tokenizer::vocabulary_in(const std::string& folder) {
  std::error_code ec;
  const fs::path dir(folder);
  if (fs::exists(dir / "vocab.json", ec) && fs::exists(dir / "merges.txt", ec)) return folder;
  for (const char* name : {"bpe_simple_vocab_16e6.txt.gz", "spiece.model", "tokenizer.model"}) {
    if (fs::exists(dir / name, ec)) return (dir / name).string();
  }
  return "";
}

Tokenizer Tokenizer::from_path(const std::string& path) {
  std::error_code ec;
  std::string file = path;
  if (fs::is_directory(path, ec)) {
    file = vocabulary_in(path);
    if (file == path) file = (fs::path(path) / "vocab.json").string();
    if (file.empty()) {
      fail(path,
           ": directory has no vocabulary (vocab.json + merges.txt, bpe_simple_vocab_16e6.txt.gz, "
           "spiece.model or "
           "tokenizer.model)");
    }
  }
  const fs::path p(file);
  if (p.filename() == "vocab.json") {
    Tokenizer t = from_hf_files(file, (p.parent_path() / "merges.txt").string());
    // The padding transformers' CLIPTokenizer uses: tokenizer_config.json's pad_token, else
    // special_tokens_map.json's (Stable Diffusion 1.x pads with <|endoftext|>, 2.x with "!"); none: 0, as
    // clip.tokenize pads.
    std::string pad;
    for (const char* name : {"tokenizer_config.json", "special_tokens_map.json"}) {
      if (!pad.empty()) break;
      if (const auto config = json_file_in(p.parent_path(), name, path))
        read_token(*config, "pad_token", pad, cat(path, ": ", name));
    }
    if (!pad.empty()) {
      auto it = t.encoder_.find(pad);
      if (it == t.encoder_.end()) fail(path, ": the pad_token '", pad, "' is not in vocab.json");
      t.pad_ = it->second;
    }
    return t;
  }
  if (p.extension() == ".model")
    return from_sentencepiece(file, SentencePieceRules::in_folder(p.parent_path().string()));
  return from_openai_vocab(file);
}

Tokenizer Tokenizer::with_pad_id(int64_t id) const {
  if (id < 0 || id > max_id_) fail("padding id ", id, " is not in the vocabulary (0 to ", max_id_, ")");
  Tokenizer t = *this;
  t.pad_ = id;
  return t;
}

size_t Tokenizer::vocab_size() const { return sp_ ? static_cast<size_t>(sp_->size()) : encoder_.size(); }

std::vector<std::string> Tokenizer::bpe(const std::string& token) const {
  {
    std::lock_guard<std::mutex> lock(cache_->mutex);
    auto it = cache_->words.find(token);
    if (it != cache_->words.end()) return it->second;
  }
  std::vector<std::string> word = initial_symbols(token);
  while (word.size() > 1) {
    int64_t best = std::numeric_limits<int64_t>::max();
    size_t best_i = 0;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      auto it = ranks_.find(word[i] + " " + word[i + 1]);
      if (it != ranks_.end() && it->second < best) {
        best = it->second;
        best_i = i;
      }
    }
    if (best == std::numeric_limits<int64_t>::max()) break;
    const std::string first = word[best_i], second = word[best_i + 1];
    merge_pair(word, first, second);
  }
  std::lock_guard<std::mutex> lock(cache_->mutex);
  if (cache_->words.size() < 100000) cache_->words.emplace(token, word);
  return word;
}

std::vector<int64_t> Tokenizer::encode(const std::string& text, const std::string& what,
                                       size_t max_tokens) const {
  if (text.size() > kMaxTextBytes)
    fail(what, ": ", text.size(), " bytes exceeds the limit of ", kMaxTextBytes, " bytes");
  if (sp_) {
    std::u32string clean = rules_.open_clip_clean ? open_clip_clean_text(text, *rules_.open_clip_clean, what)
                                                  : utf8_to_u32(text, what);
    if (rules_.text == SentencePieceRules::Text::SiglipCanonical) {
      clean = siglip_clean_text(u32_to_utf8(clean), what);
    } else if (rules_.text == SentencePieceRules::Text::Lower) {
      clean = hf_lower(clean);
    }
    std::vector<int64_t> ids = sp_->encode(u32_to_utf8(clean));
    if (ids.size() > max_tokens) ids.resize(max_tokens);
    return ids;
  }
  const std::u32string clean = clip_clean_text(text, what);
  std::vector<int64_t> ids;
  auto emit = [&](const std::u32string& piece) {
    const std::string utf8 = u32_to_utf8(piece);
    if (utf8.size() > kMaxWordBytes) {
      fail(what, ": a ", utf8.size(), "-byte word exceeds the limit of ", kMaxWordBytes, " bytes per word");
    }
    std::string bytes;
    for (unsigned char b : utf8) bytes += byte_encoder_[b];
    for (const std::string& sym : bpe(bytes)) {
      auto it = encoder_.find(sym);
      if (it == encoder_.end()) fail(what, ": BPE symbol '", sym, "' is not in the vocabulary");
      ids.push_back(it->second);
    }
  };
  for_each_piece(
      clean, max_tokens, ids, [&](const std::u32string& piece) { emit(piece); },
      [&](bool start) { ids.push_back(start ? sot_ : eot_); });
  return ids;
}

torch::Tensor Tokenizer::tokenize(const std::vector<std::string>& texts, int64_t context_length,
                                  bool truncate) const {
  TORCH_CHECK(context_length >= 2, "context length must be at least 2");
  torch::Tensor out = torch::zeros({static_cast<int64_t>(texts.size()), context_length}, torch::kLong);
  auto acc = out.accessor<int64_t, 2>();
  for (size_t n = 0; n < texts.size(); ++n) {
    const std::string what = cat("text \"", quote_untrusted(texts[n], 48), "\"");
    const size_t limit = static_cast<size_t>(context_length) + (truncate ? 0 : kCountBeyondContext);
    std::vector<int64_t> ids = encode(texts[n], what, limit);
    const bool counted_all = ids.size() < limit;
    const size_t specials = (sot_ >= 0 ? 1 : 0) + (eot_ >= 0 ? 1 : 0);
    if (ids.size() + specials > static_cast<size_t>(context_length)) {
      if (!truncate) {
        fail(what, " is ", counted_all ? "" : "more than ", counted_all ? ids.size() + specials : limit,
             " tokens, longer than the context length ", context_length, " (shorten it or use --truncate)");
      }
      // As transformers truncates: the text is cut, the start and end tokens kept.
      ids.resize(static_cast<size_t>(context_length) - specials);
    }
    if (sot_ >= 0) ids.insert(ids.begin(), sot_);
    if (eot_ >= 0) ids.push_back(eot_);
    const int64_t pads = context_length - static_cast<int64_t>(ids.size());
    for (int64_t i = 0; i < context_length; ++i) {
      const int64_t k = rules_.pad_left ? i - pads : i;  // the id at column i, or padding
      acc[n][i] = k >= 0 && k < static_cast<int64_t>(ids.size()) ? ids[static_cast<size_t>(k)] : pad_;
    }
  }
  return out;
}

// Ref: Sennrich et al. 2016, Algorithm 1: repeatedly merge the most frequent adjacent pair of symbols,
// counted over the words of the corpus (split as encode() splits them, each word ending in </w>).
BpeMerges train_bpe(const std::vector<std::string>& texts, size_t max_merges, int64_t min_count) {
  std::string byte_encoder[256];
  for (const auto& [byte, code] : byte_to_unicode())
    byte_encoder[byte] = u32_to_utf8(std::u32string(1, code));
  std::map<std::string, int64_t> word_counts;
  const std::vector<int64_t> no_ids;
  for (const std::string& text : texts) {
    for_each_piece(
        clip_clean_text(text, "caption"), SIZE_MAX, no_ids,
        [&](const std::u32string& piece) {
          std::string bytes;
          for (unsigned char b : u32_to_utf8(piece)) bytes += byte_encoder[b];
          ++word_counts[bytes];
        },
        [](bool) {});
  }
  std::vector<std::pair<std::vector<std::string>, int64_t>> words;
  for (const auto& [word, count] : word_counts) words.emplace_back(initial_symbols(word), count);
  BpeMerges merges;
  while (merges.size() < max_merges) {
    std::map<std::pair<std::string, std::string>, int64_t> pairs;  // ordered: ties go to the smallest pair
    for (const auto& [symbols, count] : words) {
      for (size_t i = 0; i + 1 < symbols.size(); ++i) pairs[{symbols[i], symbols[i + 1]}] += count;
    }
    auto best = pairs.end();
    for (auto it = pairs.begin(); it != pairs.end(); ++it) {
      if (best == pairs.end() || it->second > best->second) best = it;
    }
    if (best == pairs.end() || best->second < min_count) break;
    const auto [first, second] = best->first;
    merges.emplace_back(first, second);
    for (auto& word : words) merge_pair(word.first, first, second);
  }
  if (merges.empty()) fail("train_bpe: the corpus has no pair of symbols seen ", min_count, " times");
  return merges;
}

void write_hf_vocabulary(const BpeMerges& merges, const std::string& dir) {
  const std::vector<std::string> vocab = vocabulary_in_openai_order(merges);
  nlohmann::ordered_json json = nlohmann::ordered_json::object();
  for (size_t i = 0; i < vocab.size(); ++i) json[vocab[i]] = static_cast<int64_t>(i);
  std::string text = "#version: 0.2\n";
  for (const auto& [first, second] : merges) text += first + " " + second + "\n";
  std::filesystem::create_directories(dir);
  write_file_atomic((fs::path(dir) / "vocab.json").string(), json.dump() + "\n");
  write_file_atomic((fs::path(dir) / "merges.txt").string(), text);
}

}  // namespace clipguide
