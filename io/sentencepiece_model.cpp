#include "io/sentencepiece_model.h"

#include <cstring>

#include "core/error.h"

namespace clipguide {
namespace {

constexpr size_t kMaxPieces = 1u << 21;  // Gemma's vocabulary is 256k pieces
constexpr size_t kMaxPieceBytes = 1u << 12;

// One protobuf message's bytes: fields are read in order; every read is bounds-checked.
class WireReader {
 public:
  WireReader(const char* data, size_t size, const std::string& source)
      : p_(data), end_(data + size), source_(source) {}
  bool done() const { return p_ == end_; }

  uint64_t varint() {
    uint64_t value = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (p_ == end_) fail(source_, ": not a SentencePiece model (a number runs past the end)");
      const auto byte = static_cast<uint8_t>(*p_++);
      value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return value;
    }
    fail(source_, ": not a SentencePiece model (a number longer than 10 bytes)");
  }
  // The next field's number and wire type.
  std::pair<uint64_t, int> tag() {
    const uint64_t t = varint();
    return {t >> 3, static_cast<int>(t & 7)};
  }
  WireReader message() {
    const size_t n = length();
    WireReader inner(p_, n, source_);
    p_ += n;
    return inner;
  }
  std::string bytes() {
    const size_t n = length();
    std::string out(p_, n);
    p_ += n;
    return out;
  }
  float fixed32_float() {
    if (end_ - p_ < 4) fail(source_, ": not a SentencePiece model (a float runs past the end)");
    uint32_t bits = 0;
    for (int i = 3; i >= 0; --i) bits = (bits << 8) | static_cast<uint8_t>(p_[i]);  // little-endian
    p_ += 4;
    float value = 0;
    std::memcpy(&value, &bits, sizeof value);
    return value;
  }
  void skip(int wire_type) {
    switch (wire_type) {
      case 0:
        varint();
        return;
      case 1:
        advance(8);
        return;
      case 2:
        advance(length());
        return;
      case 5:
        advance(4);
        return;
      default:
        fail(source_, ": not a SentencePiece model (wire type ", wire_type, ")");
    }
  }
  void expect(int wire_type, int want, const char* field) const {
    if (wire_type != want)
      fail(source_, ": not a SentencePiece model (field ", field, " has wire type ", wire_type, ")");
  }

 private:
  size_t length() {
    const uint64_t n = varint();
    if (n > static_cast<uint64_t>(end_ - p_))
      fail(source_, ": not a SentencePiece model (a field runs past the end)");
    return static_cast<size_t>(n);
  }
  void advance(size_t n) {
    if (n > static_cast<size_t>(end_ - p_))
      fail(source_, ": not a SentencePiece model (a field runs past the end)");
    p_ += n;
  }
  const char* p_;
  const char* end_;
  const std::string& source_;
};

SentencePieceModel::Piece read_piece(WireReader r, const std::string& source) {
  SentencePieceModel::Piece piece;
  while (!r.done()) {
    const auto [field, wire] = r.tag();
    if (field == 1) {
      r.expect(wire, 2, "piece");
      piece.text = r.bytes();
      if (piece.text.empty() || piece.text.size() > kMaxPieceBytes)
        fail(source, ": a piece is empty or longer than ", kMaxPieceBytes, " bytes");
    } else if (field == 2) {
      r.expect(wire, 5, "score");
      piece.score = r.fixed32_float();
    } else if (field == 3) {
      r.expect(wire, 0, "type");
      const uint64_t type = r.varint();
      if (type < 1 || type > 6) fail(source, ": piece '", piece.text, "' has an unknown type ", type);
      piece.type = static_cast<SentencePieceModel::PieceType>(type);
    } else {
      r.skip(wire);
    }
  }
  if (piece.text.empty()) fail(source, ": a piece has no text");
  return piece;
}

void read_trainer_spec(WireReader r, SentencePieceModel& m, const std::string& source) {
  while (!r.done()) {
    const auto [field, wire] = r.tag();
    if (field == 3 && wire == 0) {
      const uint64_t type = r.varint();
      if (type < 1 || type > 4) fail(source, ": unknown SentencePiece model type ", type);
      m.algorithm = static_cast<SentencePieceModel::Algorithm>(type);
    } else if (field == 35 && wire == 0) {
      m.byte_fallback = r.varint() != 0;
    } else if (field == 24 && wire == 0) {
      m.treat_whitespace_as_suffix = r.varint() != 0;
    } else if (field == 47 && wire == 2) {
      m.eos_piece = r.bytes();
    } else {
      r.skip(wire);
    }
  }
}

void read_normalizer_spec(WireReader r, SentencePieceModel& m) {
  while (!r.done()) {
    const auto [field, wire] = r.tag();
    if (field == 2 && wire == 2) {
      m.precompiled_charsmap = r.bytes();
    } else if (field == 3 && wire == 0) {
      m.add_dummy_prefix = r.varint() != 0;
    } else if (field == 4 && wire == 0) {
      m.remove_extra_whitespaces = r.varint() != 0;
    } else if (field == 5 && wire == 0) {
      m.escape_whitespaces = r.varint() != 0;
    } else {
      r.skip(wire);
    }
  }
}

}  // namespace

SentencePieceModel parse_sentencepiece_model(const std::string& bytes, const std::string& source) {
  SentencePieceModel m;
  WireReader r(bytes.data(), bytes.size(), source);
  while (!r.done()) {
    const auto [field, wire] = r.tag();
    if (field == 1) {
      r.expect(wire, 2, "pieces");
      if (m.pieces.size() >= kMaxPieces) fail(source, ": more than ", kMaxPieces, " pieces");
      m.pieces.push_back(read_piece(r.message(), source));
    } else if (field == 2) {
      r.expect(wire, 2, "trainer_spec");
      read_trainer_spec(r.message(), m, source);
    } else if (field == 3) {
      r.expect(wire, 2, "normalizer_spec");
      read_normalizer_spec(r.message(), m);
    } else {
      r.skip(wire);
    }
  }
  if (m.pieces.empty()) fail(source, ": not a SentencePiece model (no pieces)");
  return m;
}

}  // namespace clipguide
