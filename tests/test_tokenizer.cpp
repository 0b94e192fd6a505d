// The tokenizer against openai/CLIP clip.tokenize(truncate=True) on every fixture case, with both vocabulary
// forms.
#include "clip/text_clean.h"
#include "clip/tokenizer.h"
#include "core/error.h"
#include "fixtures.h"

namespace clipguide::test {
namespace {

struct Counts {
  int matched = 0, total = 0;
};

std::map<std::string, Counts> run_cases(const Tokenizer& tok, std::vector<std::string>* mismatches) {
  const auto cases = read_json(fixtures() / "tokenizer" / "tokenizer-cases.json");
  const int64_t context = cases["context_length"].get<int64_t>();
  std::map<std::string, Counts> counts;
  for (const auto& c : cases["cases"]) {
    const std::string text = c["text"].get<std::string>(), group = c["group"].get<std::string>();
    const auto expected = c["ids"].get<std::vector<int64_t>>();
    const torch::Tensor ids = tok.tokenize({text}, context, true);
    const std::vector<int64_t> got(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + context);
    Counts& k = counts[group];
    ++k.total;
    if (got == expected) {
      ++k.matched;
    } else if (mismatches != nullptr) {
      mismatches->push_back(group + ": " + text);
    }
  }
  return counts;
}

void expect_required_groups(const Tokenizer& tok, const char* label) {
  std::vector<std::string> mismatches;
  const auto counts = run_cases(tok, &mismatches);
  for (const auto& [group, k] : counts) {
    std::printf("[tokenizer %s] %s: %d/%d match\n", label, group.c_str(), k.matched, k.total);
    if (group != "ftfy") EXPECT_EQ(k.matched, k.total) << "group " << group;
  }
  for (const auto& m : mismatches) std::printf("[tokenizer %s] mismatch %s\n", label, m.c_str());
}

TEST(Tokenizer, OpenAIVocabularyMatchesReference) {
  const auto tok = Tokenizer::from_path((fixtures() / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz").string());
  const auto cases = read_json(fixtures() / "tokenizer" / "tokenizer-cases.json");
  EXPECT_EQ(tok.sot(), cases["sot"].get<int64_t>());
  EXPECT_EQ(tok.eot(), cases["eot"].get<int64_t>());
  expect_required_groups(tok, "openai");
}

TEST(Tokenizer, HuggingFaceVocabularyMatchesReference) {
  const auto tok = Tokenizer::from_path((fixtures() / "tokenizer" / "hf-tokenizer").string());
  expect_required_groups(tok, "hf");
}

TEST(Tokenizer, TooLongIsAnErrorNamingTheCountUnlessTruncated) {
  const auto tok = Tokenizer::from_path((fixtures() / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz").string());
  std::string long_text;
  for (int i = 0; i < 100; ++i) long_text += "cat ";
  try {
    tok.tokenize({long_text}, 77, false);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("102 tokens"), std::string::npos) << e.what();
  }
  const torch::Tensor t = tok.tokenize({long_text}, 77, true);
  EXPECT_EQ(t[0][76].item<int64_t>(), tok.eot());
  EXPECT_EQ(t[0][0].item<int64_t>(), tok.sot());
}

TEST(Tokenizer, HugeInputsAreBoundedNotSlow) {
  const auto tok = Tokenizer::from_path((fixtures() / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz").string());
  std::string many;
  for (int i = 0; i < 100000; ++i) many += "cat ";
  try {
    tok.tokenize({many}, 77, false);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("more than"), std::string::npos) << e.what();
  }
  EXPECT_EQ(tok.tokenize({many}, 77, true)[0][76].item<int64_t>(), tok.eot());
  EXPECT_THROW(tok.tokenize({std::string(5000, 'x')}, 77, true), Error);
  EXPECT_THROW(tok.tokenize({std::string(2u << 20, ' ')}, 77, true), Error);
}

TEST(Tokenizer, InvalidUtf8IsAnError) {
  const auto tok = Tokenizer::from_path((fixtures() / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz").string());
  EXPECT_THROW(tok.tokenize({std::string("bad \xff\xfe text")}, 77, true), Error);
  EXPECT_THROW(tok.tokenize({std::string("cut \xe2\x82")}, 77, true), Error);
}

TEST(TextClean, HtmlUnescapeFollowsPython) {
  EXPECT_EQ(u32_to_utf8(html_unescape(U"&amp;lt; &#65;&#x42; &notit; &amp &bogus; &#0;")),
            "&lt; AB \xc2\xacit; & &bogus; \xef\xbf\xbd");
}

TEST(TextClean, MojibakeAndQuotesAreRepaired) {
  EXPECT_EQ(
      u32_to_utf8(ftfy_fix_text(utf8_to_u32("caf\xc3\x83\xc2\xa9 \xe2\x80\x9cquoted\xe2\x80\x9d", "t"))),
      "caf\xc3\xa9 \"quoted\"");
}

}  // namespace
}  // namespace clipguide::test
