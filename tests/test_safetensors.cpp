// safetensors: round trips and every kind of broken header.
#include "archive_builders.h"
#include "core/error.h"
#include "fixtures.h"
#include "io/safetensors.h"

namespace clipguide::test {
namespace {

std::string with_header(const std::string& header, size_t data_len) {
  return le_bytes(header.size(), 8) + header + std::string(data_len, '\0');
}

void expect_rejected(const std::string& bytes, const std::string& fragment) {
  try {
    parse_safetensors({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, "bad.safetensors");
    ADD_FAILURE() << "expected an error containing '" << fragment << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("bad.safetensors"), std::string::npos) << msg;
    EXPECT_NE(msg.find(fragment), std::string::npos) << "'" << fragment << "' not in: " << msg;
  }
}

TEST(Safetensors, RoundTripKeepsDtypesAndValues) {
  TempDir dir;
  const auto original = read_safetensors((fixtures() / "clip" / "vit-tiny.openai.safetensors").string());
  write_file_atomic((dir / "copy.safetensors").string(),
                    serialize_safetensors(original.tensors, {{"note", "copy"}}));
  const auto copy = read_safetensors((dir / "copy.safetensors").string());
  ASSERT_EQ(copy.tensors.size(), original.tensors.size());
  for (const auto& [name, t] : original.tensors) {
    EXPECT_EQ(copy.tensors.at(name).scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(copy.tensors.at(name), t)) << name;
  }
  EXPECT_EQ(copy.metadata.at("note"), "copy");
}

TEST(Safetensors, BrokenHeadersAreRejected) {
  expect_rejected("", "too short");
  expect_rejected(le_bytes(1ull << 40, 8) + "{}", "exceeds the cap");
  expect_rejected(le_bytes(100, 8) + "{}", "runs past the end");
  expect_rejected(with_header("{not json", 0), "not valid JSON");
  expect_rejected(with_header("[1,2]", 0), "not a JSON object");
  const std::string a = R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})";
  expect_rejected(with_header("{" + a + "," + a + "}", 4), "names tensor 'a' twice");
  expect_rejected(with_header(R"({"a":{"dtype":"Q7","shape":[1],"data_offsets":[0,4]}})", 4),
                  "unsupported dtype 'Q7'");
  expect_rejected(
      with_header(
          R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
          8),
      "overlaps");
  expect_rejected(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "gap");
  expect_rejected(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 2), "truncated");
  expect_rejected(with_header(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,4]}})", 4),
                  "shape and dtype need 12");
  expect_rejected(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 12),
                  "not described");
  expect_rejected(with_header(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
                  "non-negative");
  expect_rejected(
      with_header(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}})",
                  4),
      "more than 2^62");
  expect_rejected(with_header(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}})", 4),
                  "end before they begin");
}

TEST(Safetensors, CorruptedRealHeadersFail) {
  const std::string bytes = read_bytes(fixtures() / "clip" / "vit-tiny.openai.safetensors");
  std::string bad_dtype = bytes;
  const size_t at = bad_dtype.find("\"dtype\":\"F");
  ASSERT_NE(at, std::string::npos);
  bad_dtype[at + 9] = 'Q';  // "F16"/"F32" -> "Q16"/"Q32"
  expect_rejected(bad_dtype, "unsupported dtype 'Q");
  std::string bad_length = bytes;
  const std::string huge = le_bytes(bytes.size(), 8);
  bad_length.replace(0, 8, huge);
  expect_rejected(bad_length, "runs past the end");
  std::string bad_offset = bytes;
  const size_t offsets = bad_offset.find("\"data_offsets\":[");
  ASSERT_NE(offsets, std::string::npos);
  bad_offset[offsets + 16] = bad_offset[offsets + 16] == '9' ? '8' : '9';  // the first offset's first digit
  EXPECT_THROW(
      parse_safetensors({reinterpret_cast<const uint8_t*>(bad_offset.data()), bad_offset.size()}, "bad"),
      Error);
}

TEST(Safetensors, EveryTruncationOfARealFileFails) {
  const std::string bytes = read_bytes(fixtures() / "clip" / "vit-tiny.openai.safetensors");
  for (size_t cut : {size_t{1}, size_t{8}, size_t{9}, bytes.size() / 3, bytes.size() - 1}) {
    const std::string part = bytes.substr(0, cut);
    EXPECT_THROW(parse_safetensors({reinterpret_cast<const uint8_t*>(part.data()), part.size()}, "cut"),
                 Error)
        << cut;
  }
}

}  // namespace
}  // namespace clipguide::test
