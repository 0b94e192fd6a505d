// Messages that quote untrusted text stay one printable line; table cells measure and cut by display columns.
#include <gtest/gtest.h>

#include "clip/text_clean.h"
#include "core/error.h"

namespace clipguide::test {
namespace {

// Valid UTF-8 with no C0, DEL or C1 control characters (what a terminal or a log collector can take as text).
bool printable_utf8(const std::string& s) {
  std::u32string cps;
  try {
    cps = utf8_to_u32(s, "message");
  } catch (const Error&) {
    return false;
  }
  for (char32_t c : cps) {
    if (c < 0x20 || (c >= 0x7F && c <= 0x9F) || c == 0x2028 || c == 0x2029 || (c >= 0x202A && c <= 0x202E))
      return false;
  }
  return true;
}

std::string error_of(const std::string& untrusted) {
  try {
    fail("cannot read ", untrusted, ": not a checkpoint");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Messages, HostileTextBecomesEscapes) {
  EXPECT_EQ(quote_untrusted("bad\xff"
                            "byte"),
            "bad\\xFFbyte");
  EXPECT_EQ(quote_untrusted("esc\x1b[31m"), "esc\\x1B[31m");
  EXPECT_EQ(quote_untrusted("new\nline\r"), "new\\x0Aline\\x0D");
  EXPECT_EQ(quote_untrusted("c1 \xc2\x9b"
                            "31m"),
            "c1 \\xC2\\x9B31m");  // U+009B, CSI on 8-bit terminals
  EXPECT_EQ(quote_untrusted("rtl \xe2\x80\xae"
                            "txt"),
            "rtl \\xE2\\x80\\xAEtxt");                            // U+202E reorders the line
  EXPECT_EQ(quote_untrusted("\xed\xa0\x80"), "\\xED\\xA0\\x80");  // a UTF-16 surrogate is not UTF-8
  EXPECT_EQ(quote_untrusted("\xc0\xaf"), "\\xC0\\xAF");           // overlong '/'
  EXPECT_EQ(quote_untrusted("写真 🐱 café"), "写真 🐱 café");       // valid text stays as it is
}

TEST(Messages, LongValuesAreCutInTheMiddle) {
  const std::string name = "start-" + std::string(10240, 'x') + "-end.pt";
  const std::string q = quote_untrusted(name);
  EXPECT_LE(q.size(), kMaxQuotedBytes);
  EXPECT_EQ(q.rfind("start-", 0), 0u);
  EXPECT_NE(q.find("\u2026"), std::string::npos);
  EXPECT_EQ(q.substr(q.size() - 7), "-end.pt");
  // Escapes are never split by the cut, and quoting twice changes nothing more.
  const std::string escapes(1000, '\x1b');
  const std::string cut = quote_untrusted(escapes);
  EXPECT_TRUE(printable_utf8(cut));
  EXPECT_EQ(cut.find("\u2026") % 4, 0u);
  EXPECT_EQ(quote_untrusted(cut), cut);
  EXPECT_EQ(quote_untrusted(q), q);
}

TEST(Messages, FailQuotesEveryValueButOurOwnText) {
  for (const std::string& hostile : {std::string("a\xff"), std::string("\x1b]0;title\x07"),
                                     std::string("one\ntwo"), std::string(10240, 'n')}) {
    const std::string msg = error_of(hostile);
    EXPECT_TRUE(printable_utf8(msg)) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos);
    EXPECT_LT(msg.size(), 400u);
    EXPECT_EQ(msg.rfind("cannot read ", 0), 0u);
    EXPECT_EQ(msg.substr(msg.size() - 18), ": not a checkpoint");
  }
  // A message of ours nested in another keeps its length.
  const std::string inner = error_of(std::string(200, 'a')) + std::string(200, 'b');
  try {
    fail("outer: ", SafeText{inner});
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "outer: " + inner);
  }
}

TEST(Messages, DisplayWidthAndMiddleCut) {
  EXPECT_EQ(display_width("abc"), 3u);
  EXPECT_EQ(display_width("写真"), 4u);
  EXPECT_EQ(display_width("🐱"), 2u);
  EXPECT_EQ(display_width("e\u0301"), 1u);  // combining acute accent
  EXPECT_EQ(fit_width_middle("short", 10), "short");
  const std::string cut = fit_width_middle("/photos/2026/a-very-long-folder-name/picture.png", 20);
  EXPECT_EQ(display_width(cut), 20u);
  EXPECT_EQ(cut.rfind("/photos/", 0), 0u);
  EXPECT_EQ(cut.substr(cut.size() - 7), "ure.png");
  const std::string wide = fit_width_middle("写真写真写真写真写真", 9);  // wide characters never split
  EXPECT_LE(display_width(wide), 9u);
  EXPECT_NE(wide.find("\u2026"), std::string::npos);
}

}  // namespace
}  // namespace clipguide::test
