// Decoding and preprocessing against PIL + torchvision on every fixture case.
#include "core/error.h"
#include "fixtures.h"
#include "io/image.h"

namespace clipguide::test {
namespace {

struct Case {
  std::string file, tensor;
  int64_t n_px;
  bool jpeg;
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.tensor; }

std::vector<Case> cases() {
  std::vector<Case> out;
  const auto json = read_json(fixtures() / "preprocess" / "preprocess-cases.json");
  for (const auto& c : json["cases"]) {
    out.push_back({c["file"].get<std::string>(), c["tensor"].get<std::string>(), c["n_px"].get<int64_t>(),
                   c["jpeg"].get<bool>()});
  }
  return out;
}

class Preprocess : public ::testing::TestWithParam<Case> {};

TEST_P(Preprocess, DecodedPixelsMatchPil) {
  const Case& c = GetParam();
  const TensorMap ref = reference(fixtures() / "preprocess" / "preprocess-reference.safetensors");
  const torch::Tensor ours =
      to_rgb_tensor(read_image((fixtures() / "preprocess" / c.file).string())).to(torch::kInt);
  const torch::Tensor theirs = ref.at(c.file + "@decoded").to(torch::kInt);
  ASSERT_EQ(ours.sizes(), theirs.sizes());
  const torch::Tensor diff = (ours - theirs).abs();
  std::printf("[decode] %s max diff %d, exact %.4f\n", c.file.c_str(), diff.max().item<int>(),
              (diff == 0).to(torch::kFloat).mean().item<float>());
  if (c.jpeg) {
    EXPECT_LE(diff.max().item<int>(), 1);
    EXPECT_GE((diff == 0).to(torch::kFloat).mean().item<float>(), 0.99f);
  } else {
    EXPECT_EQ(diff.max().item<int>(), 0);
  }
}

TEST_P(Preprocess, NormalizedTensorMatchesTorchvision) {
  const Case& c = GetParam();
  const auto json = read_json(fixtures() / "preprocess" / "preprocess-cases.json");
  std::array<float, 3> mean{}, std{};
  for (int i = 0; i < 3; ++i) {
    mean[i] = json["mean"][i].get<float>();
    std[i] = json["std"][i].get<float>();
  }
  const TensorMap ref = reference(fixtures() / "preprocess" / "preprocess-reference.safetensors");
  const torch::Tensor ours =
      preprocess(read_image((fixtures() / "preprocess" / c.file).string()), c.n_px, Preprocessing{mean, std});
  const torch::Tensor theirs = ref.at(c.tensor);
  ASSERT_EQ(ours.sizes(), theirs.sizes());
  const auto s = torch::tensor({std[0], std[1], std[2]}).view({3, 1, 1});
  const torch::Tensor diff = (((ours - theirs) * s) * 255).abs().round();  // in 8-bit levels
  const float exact = (diff == 0).to(torch::kFloat).mean().item<float>();
  std::printf("[preprocess] %s max diff %.0f levels, exact %.4f, max abs %.3g\n", c.tensor.c_str(),
              diff.max().item<float>(), exact, (ours - theirs).abs().max().item<float>());
  EXPECT_LE(diff.max().item<float>(), 1.0f);
  EXPECT_GE(exact, 0.99f);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Preprocess, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return param_name(info.param.tensor);
                         });

TEST(Images, UnsupportedAndBrokenFilesAreErrors) {
  TempDir dir;
  write_bytes(dir / "x.gif", "GIF89a....");
  EXPECT_THROW(read_image((dir / "x.gif").string()), Error);
  write_bytes(dir / "empty.png", "");
  EXPECT_THROW(read_image((dir / "empty.png").string()), Error);
  for (const auto& c : cases()) {
    const std::string bytes = read_bytes(fixtures() / "preprocess" / c.file);
    write_bytes(dir / ("cut-" + c.file), bytes.substr(0, bytes.size() / 2));
    EXPECT_THROW(read_image((dir / ("cut-" + c.file)).string()), Error) << c.file;
  }
}

TEST(Images, PixelCapIsEnforcedBeforeDecoding) {
  for (const auto& c : cases()) {
    const Image img = read_image((fixtures() / "preprocess" / c.file).string());
    ImageLimits limits;
    limits.max_pixels = static_cast<int64_t>(img.width) * img.height - 1;
    try {
      read_image((fixtures() / "preprocess" / c.file).string(), limits);
      FAIL() << "expected the pixel cap to reject " << c.file;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("over the limit"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace clipguide::test
