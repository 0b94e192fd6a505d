// The prompt parser as a table: colons in text, negative and zero weights, stops, escapes, story schedules.
#include <cmath>

#include "core/error.h"
#include "fixtures.h"
#include "prompts/prompt.h"

namespace clipguide::test {
namespace {

constexpr double kNoStop = -std::numeric_limits<double>::infinity();

struct ParseCase {
  std::string spec;
  std::vector<Prompt> expected;
};

void PrintTo(const ParseCase& c, std::ostream* os) { *os << "'" << c.spec << "'"; }

class PromptTable : public ::testing::TestWithParam<ParseCase> {};

TEST_P(PromptTable, Parses) {
  const auto got = parse_prompts(GetParam().spec);
  const auto& want = GetParam().expected;
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].text, want[i].text);
    EXPECT_EQ(got[i].weight, want[i].weight);
    EXPECT_EQ(got[i].stop, want[i].stop);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, PromptTable,
    ::testing::Values(ParseCase{"a castle", {{"a castle", 1, kNoStop}}},
                      ParseCase{"a castle:2", {{"a castle", 2, kNoStop}}},
                      ParseCase{"a castle:-0.5", {{"a castle", -0.5, kNoStop}}},
                      ParseCase{"a castle:1:0.3", {{"a castle", 1, 0.3}}},
                      ParseCase{"a castle:1:-inf", {{"a castle", 1, kNoStop}}},
                      ParseCase{"ratio 16:9 poster", {{"ratio 16:9 poster", 1, kNoStop}}},
                      ParseCase{"ratio 16:9 poster:2", {{"ratio 16:9 poster", 2, kNoStop}}},
                      ParseCase{"ratio 16\\:9", {{"ratio 16:9", 1, kNoStop}}},
                      ParseCase{"time: 12:30:1:0.5", {{"time: 12:30", 1, 0.5}}},
                      ParseCase{"a:b:c", {{"a:b:c", 1, kNoStop}}},
                      ParseCase{"fog:0 | sun:0", {{"fog", 0, kNoStop}, {"sun", 0, kNoStop}}},
                      ParseCase{"red:1 | blue:-1", {{"red", 1, kNoStop}, {"blue", -1, kNoStop}}},
                      ParseCase{" spaced : 3 |tight:1e-1", {{"spaced", 3, kNoStop}, {"tight", 0.1, kNoStop}}},
                      ParseCase{"pipe \\| kept", {{"pipe | kept", 1, kNoStop}}}),
    [](const auto& info) { return std::to_string(info.index); });

TEST(Prompts, BadItemsAreErrorsNamingThem) {
  for (const std::string spec : {"", "a | ", "|b", ":1", "  :2:3", "a:nan", "a:inf", "a:1:nan", "a:1:inf"}) {
    try {
      parse_prompts(spec);
      ADD_FAILURE() << "no error for '" << spec << "'";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
    }
  }
}

TEST(Prompts, ImagePromptWithColonsInThePath) {
  const Prompt p = parse_image_prompt("C:/pics/a:b.png:0.5");
  EXPECT_EQ(p.text, "C:/pics/a:b.png");
  EXPECT_EQ(p.weight, 0.5);
  EXPECT_EQ(parse_image_prompt("x.png").weight, 1.0);
}

TEST(Prompts, TrailingNumbersAtMost) {
  const auto [text, numbers] = split_trailing_numbers("model.pt:0.5:16", 2);
  EXPECT_EQ(text, "model.pt");
  EXPECT_EQ(numbers, (std::vector<double>{0.5, 16}));
  EXPECT_EQ(split_trailing_numbers("1:2:3", 2).first, "1");
}

TEST(PromptSchedule, SwitchesEveryNSteps) {
  const auto s = PromptSchedule::parse("a | b ^ c ^ d:2", 10, false);
  ASSERT_EQ(s.segments.size(), 3u);
  EXPECT_EQ(s.segments[2][0].weight, 2);
  EXPECT_EQ(s.at(0).segment, 0u);
  EXPECT_EQ(s.at(9).segment, 0u);
  EXPECT_EQ(s.at(10).segment, 1u);
  EXPECT_EQ(s.at(25).segment, 2u);
  EXPECT_EQ(s.at(1000).segment, 2u);
  EXPECT_EQ(s.at(5).toward_next, 0.0);
}

TEST(PromptSchedule, BlendsTowardTheNextSegment) {
  const auto s = PromptSchedule::parse("a ^ b ^ c", 4, true);
  EXPECT_EQ(s.at(0).toward_next, 0.0);
  EXPECT_DOUBLE_EQ(s.at(2).toward_next, 0.5);
  EXPECT_EQ(s.at(6).segment, 1u);
  EXPECT_DOUBLE_EQ(s.at(7).toward_next, 0.75);
  EXPECT_EQ(s.at(9).toward_next, 0.0);  // the last segment holds
}

TEST(PromptSchedule, Errors) {
  EXPECT_THROW(PromptSchedule::parse("a ^ b", 0, false), Error);       // segments need --prompt-every
  EXPECT_THROW(PromptSchedule::parse("a | b ^ c", 5, true), Error);    // blending pairs prompts
  EXPECT_EQ(PromptSchedule::parse("a", 0, true).segments.size(), 1u);  // one segment: nothing to blend
}

}  // namespace
}  // namespace clipguide::test
