// SentencePiece encoding, id for id as google/sentencepiece's SentencePieceProcessor::Encode computes it
// (Ref: src/normalizer.cc, unigram_model.cc EncodeOptimized, bpe_model.cc, sentencepiece_processor.cc
// PopulateSentencePieceText): the model's own normalization (its precompiled character map, dummy prefix,
// whitespace rules), then the unigram model's best path or BPE's merges by piece score, unknown characters as
// <unk> (consecutive ones merged) or, with byte fallback, as <0xXX> byte pieces.
//
// Ours rather than Debian's libsentencepiece: that library carries its own copy of protobuf's symbols, which
// clash with the libprotobuf that Debian's libtorch loads (the process crashes before main).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/sentencepiece_model.h"

namespace clipguide {

class SentencePiece {
 public:
  SentencePiece(SentencePieceModel model, const std::string& source);
  // Its tables view the model's strings: not copied or moved (share it through a pointer).
  SentencePiece(const SentencePiece&) = delete;
  SentencePiece& operator=(const SentencePiece&) = delete;

  // The ids of `text` (UTF-8), as SentencePieceProcessor::EncodeAsIds gives them.
  std::vector<int64_t> encode(std::string_view text) const;

  int64_t size() const { return static_cast<int64_t>(model_.pieces.size()); }
  // The id of a piece, or -1.
  int64_t id_of(const std::string& piece) const;
  int64_t eos_id() const { return id_of(model_.eos_piece); }

 private:
  std::string normalize(std::string_view text) const;
  // The normalized form of the prefix of `text` and how many bytes of it it consumed.
  std::pair<std::string_view, size_t> normalize_prefix(std::string_view text) const;
  // The longest user-defined piece at the start of `text`, in bytes; 0 when none.
  size_t user_defined_prefix(std::string_view text) const;
  std::vector<std::pair<std::string_view, int64_t>> unigram(std::string_view normalized) const;
  std::vector<std::pair<std::string_view, int64_t>> bpe(std::string_view normalized) const;
  bool is_type(int64_t id, SentencePieceModel::PieceType type) const {
    return id >= 0 && model_.pieces[static_cast<size_t>(id)].type == type;
  }

  SentencePieceModel model_;
  std::unordered_map<std::string_view, int64_t> pieces_;    // normal, user-defined and unused pieces
  std::unordered_map<std::string_view, int64_t> reserved_;  // the others (control, unknown, byte)
  std::vector<uint32_t> trie_;                              // the character map's double array
  std::string_view replacements_;                           // its normalized strings, '\0'-separated
  size_t longest_piece_ = 0, longest_user_defined_ = 0;
  int64_t unk_id_ = -1;
  float min_score_ = 0, max_score_ = 0;
};

}  // namespace clipguide
