// Parity with openai/CLIP on every fixture model in every file format: features, logits, gradients.
#include "clip/load.h"
#include "fixtures.h"
#include "io/image.h"

namespace clipguide::test {
namespace {

class ClipParity : public ::testing::TestWithParam<ModelFile> {
 protected:
  void SetUp() override {
    manifest_ = read_json(fixtures() / "clip" / "clip-manifest.json")["models"][GetParam().model];
    LoadOptions options;
    options.vocab = (fixtures() / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz").string();
    // OpenAI-named weights cannot tell the text heads; the fixture's config does (as a user's flag would).
    options.text_heads = manifest_["config"]["transformer_heads"].get<int64_t>();
    clip_ = load_clip((fixtures() / "clip" / GetParam().file).string(), options);
    ref_ = reference(fixtures() / "clip" / (GetParam().model + ".reference.safetensors"));
  }
  LoadedClip clip_;
  TensorMap ref_;
  nlohmann::json manifest_;
};

TEST_P(ClipParity, ConfigMatchesManifest) {
  const ClipConfig& c = clip_.model->config();
  const auto& m = manifest_["config"];
  EXPECT_EQ(c.embed_dim, m["embed_dim"].get<int64_t>());
  EXPECT_EQ(c.image_resolution, m["image_resolution"].get<int64_t>());
  EXPECT_EQ(c.vision_width, m["vision_width"].get<int64_t>());
  EXPECT_EQ(c.context_length, m["context_length"].get<int64_t>());
  EXPECT_EQ(c.vocab_size, m["vocab_size"].get<int64_t>());
  EXPECT_EQ(c.transformer_width, m["transformer_width"].get<int64_t>());
  EXPECT_EQ(c.transformer_heads, m["transformer_heads"].get<int64_t>());
  EXPECT_EQ(c.transformer_layers, m["transformer_layers"].get<int64_t>());
  if (m["vision_layers"].is_array()) {
    EXPECT_TRUE(c.vision_resnet);
    EXPECT_EQ(c.vision_layers, m["vision_layers"].get<std::vector<int64_t>>());
  } else {
    EXPECT_FALSE(c.vision_resnet);
    EXPECT_EQ(c.vision_layers.at(0), m["vision_layers"].get<int64_t>());
    EXPECT_EQ(c.vision_patch_size, m["vision_patch_size"].get<int64_t>());
  }
}

TEST_P(ClipParity, ImageFeatures) {
  torch::NoGradGuard no_grad;
  const double err = rel_error(clip_.model->encode_image(ref_.at("pixels")), ref_.at("image_features"));
  RecordProperty("rel_error", std::to_string(err));
  std::printf("[parity] %s image_features rel %.3g\n", GetParam().file.c_str(), err);
  EXPECT_LT(err, 1e-4);
}

TEST_P(ClipParity, TextFeaturesFromOurTokens) {
  torch::NoGradGuard no_grad;
  const auto manifest = read_json(fixtures() / "clip" / "clip-manifest.json");
  const auto prompts = manifest["prompts"].get<std::vector<std::string>>();
  const torch::Tensor tokens =
      clip_.require_tokenizer().tokenize(prompts, clip_.model->config().context_length, true);
  EXPECT_TRUE(torch::equal(tokens, ref_.at("tokens")));
  const double err = rel_error(clip_.model->encode_text(tokens), ref_.at("text_features"));
  std::printf("[parity] %s text_features rel %.3g\n", GetParam().file.c_str(), err);
  EXPECT_LT(err, 1e-4);
}

TEST_P(ClipParity, LogitsAndPixelGradient) {
  torch::Tensor pixels = ref_.at("pixels").clone().requires_grad_(true);
  const torch::Tensor img = clip_.model->encode_image(pixels);
  torch::Tensor txt;
  {
    torch::NoGradGuard no_grad;
    txt = clip_.model->encode_text(ref_.at("tokens"));
  }
  const torch::Tensor cos =
      torch::matmul(img / img.norm(2, -1, true), (txt / txt.norm(2, -1, true)).t());  // [4, P]
  const double logit_err = rel_error(clip_.model->logit_scale_exp() * cos, ref_.at("logits_per_image"));
  (cos * ref_.at("grad_weights")).sum().backward();
  const double grad_err = rel_error(pixels.grad(), ref_.at("pixels_grad"));
  std::printf("[parity] %s logits rel %.3g, pixels_grad rel %.3g\n", GetParam().file.c_str(), logit_err,
              grad_err);
  EXPECT_LT(logit_err, 1e-4);
  EXPECT_LT(grad_err, 1e-3);
}

TEST_P(ClipParity, PhotoPreprocessingAndFeatures) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> ours;
  for (const auto& photo : manifest_["photos"]) {
    ours.push_back(preprocess(read_image((fixtures() / "clip" / photo.get<std::string>()).string()),
                              clip_.model->config().image_resolution));
  }
  const torch::Tensor pixels = torch::stack(ours);
  // Compare in 8-bit levels: undo the normalization.
  const auto mean = torch::tensor({kClipMean[0], kClipMean[1], kClipMean[2]}).view({1, 3, 1, 1});
  const auto std = torch::tensor({kClipStd[0], kClipStd[1], kClipStd[2]}).view({1, 3, 1, 1});
  const auto levels = [&](const torch::Tensor& x) { return ((x * std + mean) * 255).round(); };
  const torch::Tensor diff = (levels(pixels) - levels(ref_.at("photo_pixels"))).abs();
  EXPECT_LE(diff.max().item<float>(), 1.0f);
  EXPECT_GE((diff == 0).to(torch::kFloat).mean().item<float>(), 0.99f);
  const double err = rel_error(clip_.model->encode_image(ref_.at("photo_pixels")), ref_.at("photo_features"));
  const double ours_err = rel_error(clip_.model->encode_image(pixels), ref_.at("photo_features"));
  std::printf(
      "[parity] %s photo pixels max diff %.0f levels, photo_features rel %.3g (from our pixels %.3g)\n",
      GetParam().file.c_str(), diff.max().item<float>(), err, ours_err);
  EXPECT_LT(err, 1e-4);
  EXPECT_LT(ours_err, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ClipParity, ::testing::ValuesIn(clip_model_files()),
                         [](const ::testing::TestParamInfo<ModelFile>& info) {
                           return param_name(info.param.file);
                         });

}  // namespace
}  // namespace clipguide::test
