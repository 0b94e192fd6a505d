// SentencePiece model files (spiece.model, tokenizer.model): the ModelProto of google/sentencepiece
// src/sentencepiece_model.proto, read with a bounded protobuf wire-format reader. Only what encoding needs is
// kept; a malformed or oversized file is an Error naming it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace clipguide {

struct SentencePieceModel {
  enum class PieceType { Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };
  enum class Algorithm { Unigram = 1, Bpe = 2, Word = 3, Char = 4 };
  struct Piece {
    std::string text;
    float score = 0;
    PieceType type = PieceType::Normal;
  };
  std::vector<Piece> pieces;  // the id is the index
  Algorithm algorithm = Algorithm::Unigram;
  bool byte_fallback = false;
  bool treat_whitespace_as_suffix = false;
  std::string eos_piece = "</s>";
  // NormalizerSpec
  std::string precompiled_charsmap;  // <trie size u32><darts-clone double array><normalized strings>
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

// Parses the serialized ModelProto in `bytes`; `source` names it in errors.
SentencePieceModel parse_sentencepiece_model(const std::string& bytes, const std::string& source);

}  // namespace clipguide
