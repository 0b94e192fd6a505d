// The text tokenizers: CLIP's byte-level BPE, as openai/CLIP clip/simple_tokenizer.py and clip.tokenize
// compute it (open_clip's SimpleTokenizer is the same), and SentencePiece vocabularies (SigLIP's, SigLIP 2's
// Gemma vocabulary), as the tokenizer class named beside them computes tokenizer(text, padding="max_length",
// truncation=True): transformers' SiglipTokenizer, Siglip2Tokenizer or GemmaTokenizer, behind open_clip's
// clean function where the model is open_clip's.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "clip/text_clean.h"

namespace clipguide {

class SentencePiece;
using BpeMerges = std::vector<std::pair<std::string, std::string>>;

// How a SentencePiece tokenizer treats text and frames the ids; the defaults are SiglipTokenizer's.
struct SentencePieceRules {
  // The tokenizer class's own text normalization, before the model's: SiglipTokenizer's canonical text
  // (siglip_clean_text), the Lowercase normalizer of a tokenizer.json (Siglip2Tokenizer's), or none (Gemma).
  enum class Text { SiglipCanonical, Lower, AsIs };
  Text text = Text::SiglipCanonical;
  // open_clip's clean function, run first where open_clip_config.json names one.
  std::optional<OpenClipClean> open_clip_clean;
  bool add_bos = false, add_eos = true, pad_left = false;
  // The pieces; empty: the model's end-of-sequence piece (SiglipTokenizer's </s> ends and pads).
  std::string bos_token, eos_token, pad_token;

  // The rules of the tokenizer files in `dir`: tokenizer_config.json (tokenizer_class, add_bos_token,
  // add_eos_token, padding_side, pad_token), the normalizer and post-processor of tokenizer.json, and
  // open_clip_config.json's text_cfg.tokenizer_kwargs.clean. None of them: SiglipTokenizer's.
  static SentencePieceRules in_folder(const std::string& dir);
};

class Tokenizer {
 public:
  // OpenAI's bpe_simple_vocab_16e6.txt.gz (gzip of the merges list).
  static Tokenizer from_openai_vocab(const std::string& path);
  // Hugging Face vocab.json + merges.txt.
  static Tokenizer from_hf_files(const std::string& vocab_json, const std::string& merges_txt);
  // A SentencePiece model (SigLIP's spiece.model, SigLIP 2's tokenizer.model) with its tokenizer's rules.
  static Tokenizer from_sentencepiece(const std::string& model_file, const SentencePieceRules& rules = {});
  // Any of these, from a file path (the .gz, vocab.json, a .model) or a directory holding one of them; a
  // .model with the rules of the tokenizer files beside it (SentencePieceRules::in_folder).
  static Tokenizer from_path(const std::string& path);
  // The vocabulary from_path reads in `dir`: the folder itself for vocab.json + merges.txt, else the file
  // (bpe_simple_vocab_16e6.txt.gz, spiece.model, tokenizer.model); empty when there is none.
  static std::string vocabulary_in(const std::string& dir);

  // Ids of the cleaned text, without start/end tokens, stopping once there are `max_tokens` of them.
  // `what` names the input in errors.
  std::vector<int64_t> encode(const std::string& text, const std::string& what = "prompt",
                              size_t max_tokens = SIZE_MAX) const;
  // clip.tokenize: [N, context_length] int64, <|startoftext|> ids <|endoftext|> then zeros (SentencePiece:
  // the ids framed and padded by its rules). Too long: an Error naming the token count, unless `truncate`
  // (then the ids are cut so that the start and end tokens still fit).
  torch::Tensor tokenize(const std::vector<std::string>& texts, int64_t context_length, bool truncate) const;

  // "CLIP BPE" or "SentencePiece".
  const char* kind() const { return sp_ ? "SentencePiece" : "CLIP BPE"; }
  // The kind, and for SentencePiece its rules: "SentencePiece (lower-cased, <eos> appended, ...)".
  std::string describe() const;
  int64_t sot() const { return sot_; }  // -1 where no start token is added
  int64_t eot() const { return eot_; }  // -1 where no end token is added
  size_t vocab_size() const;
  int64_t max_id() const { return max_id_; }
  // The same tokenizer padding with `id` (Stable Diffusion's single files: SD 1.x pads with the end token).
  Tokenizer with_pad_id(int64_t id) const;

 private:
  Tokenizer() = default;
  Tokenizer(std::unordered_map<std::string, int64_t> encoder, const BpeMerges& merges,
            const std::string& source);
  std::vector<std::string> bpe(const std::string& token) const;

  std::unordered_map<std::string, int64_t> encoder_;
  std::unordered_map<std::string, int64_t> ranks_;  // "first second" -> merge rank
  std::string byte_encoder_[256];                   // byte -> its printable stand-in, UTF-8
  int64_t sot_ = 0, eot_ = 0, max_id_ = 0;
  struct Cache {
    std::mutex mutex;
    std::unordered_map<std::string, std::vector<std::string>> words;
  };
  std::shared_ptr<Cache> cache_ = std::make_shared<Cache>();  // bpe() results; safe to share across threads
  std::shared_ptr<const SentencePiece> sp_;                   // set for a SentencePiece vocabulary
  SentencePieceRules rules_;                                  // its rules (CLIP BPE: pads on the right)
  int64_t pad_ = 0;
};

// Learns merges from a corpus, most frequent pair first, until `max_merges` or no pair is seen `min_count`
// times.
BpeMerges train_bpe(const std::vector<std::string>& texts, size_t max_merges, int64_t min_count = 2);
// Writes vocab.json (OpenAI's order: bytes, bytes with </w>, merges, <|startoftext|>, <|endoftext|>) and
// merges.txt into `dir`, so Tokenizer::from_path(dir) reads them back.
void write_hf_vocabulary(const BpeMerges& merges, const std::string& dir);

}  // namespace clipguide
