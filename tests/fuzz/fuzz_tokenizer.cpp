// The tokenizer with its vocabulary files. First byte 't': text through the fixture OpenAI vocabulary;
// 'h': vocab.json \0\0 merges.txt \0\0 text; 'g': a gzipped OpenAI merges list \0\0 text; 's': a
// SentencePiece model file's length (4 bytes, little-endian), the file, then text.
#include "clip/tokenizer.h"
#include "tests/fuzz/fuzz.h"

namespace {

const clipguide::Tokenizer& openai_tokenizer() {
  static const clipguide::Tokenizer tokenizer = clipguide::Tokenizer::from_openai_vocab(
      clipguide::fuzz::fixtures_dir() + "/tokenizer/bpe_simple_vocab_16e6.txt.gz");
  return tokenizer;
}

void encode(const clipguide::Tokenizer& tokenizer, const std::string& text) {
  tokenizer.encode(text);
  tokenizer.tokenize({text}, 16, true);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string input(reinterpret_cast<const char*>(data) + 1, size - 1);
  return clipguide::fuzz::run_input([&] {
    std::string rest, text;
    if (data[0] == 't') {
      encode(openai_tokenizer(), input);
    } else if (data[0] == 'h') {
      const clipguide::fuzz::MemFile vocab(clipguide::fuzz::split_off(input, std::string("\0\0", 2), &rest));
      const clipguide::fuzz::MemFile merges(clipguide::fuzz::split_off(rest, std::string("\0\0", 2), &text));
      encode(clipguide::Tokenizer::from_hf_files(vocab.path(), merges.path()), text);
    } else if (data[0] == 's' && input.size() >= 4) {
      uint32_t n = 0;
      for (int i = 3; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(input[static_cast<size_t>(i)]);
      const std::string model = input.substr(4, n);
      const clipguide::fuzz::MemFile file(model);
      encode(clipguide::Tokenizer::from_sentencepiece(file.path()),
             input.size() > 4 + n ? input.substr(4 + n) : "");
    } else if (data[0] == 'g') {
      const clipguide::fuzz::MemFile gz(clipguide::fuzz::split_off(input, std::string("\0\0", 2), &text));
      encode(clipguide::Tokenizer::from_openai_vocab(gz.path()), text);
    }
  });
}
