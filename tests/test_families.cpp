// Parity with the peers on every model family besides OpenAI's (tools/make_family_fixtures.py): open_clip's
// native files and SigLIP's Hugging Face folders load from their own configs, tokenize id for id, preprocess
// as the peer's own transform does, and give the peer's features, logits and pixel gradients. Every shape and
// value comes from the fixture files (CLIPGUIDE_FAMILY_FIXTURES, default tests/data/families).
#include "clip/score.h"
#include "clip/sentencepiece.h"
#include "core/error.h"
#include "fixtures.h"
#include "guidance/clip_guide.h"
#include "io/image.h"

namespace clipguide::test {
namespace {

std::filesystem::path families() {
  if (const char* dir = std::getenv("CLIPGUIDE_FAMILY_FIXTURES")) return dir;
  return std::filesystem::path(CLIPGUIDE_SOURCE_DIR) / "tests" / "data" / "families";
}

const nlohmann::json& manifest() {
  static const nlohmann::json m = read_json(families() / "families-manifest.json");
  return m;
}

std::vector<std::string> model_names() {
  std::vector<std::string> out;
  for (const auto& [name, entry] : manifest()["models"].items()) out.push_back(name);
  return out;
}

Preprocessing preprocessing_of(const nlohmann::json& p) {
  Preprocessing how;
  for (int i = 0; i < 3; ++i) {
    how.mean[i] = p["mean"][i].get<float>();
    how.std[i] = p["std"][i].get<float>();
  }
  how.resize = parse_name(kResizeModes, p["resize_mode"].get<std::string>(), "resize_mode");
  how.interpolation = parse_name(kInterpolations, p["interpolation"].get<std::string>(), "interpolation");
  return how;
}

// The model as a user loads it: its file (or folder), the vocabulary found beside it; CLIP's BPE from the
// shared fixtures, where open_clip ships it inside its package.
LoadedClip load_family_model(const std::string& name) {
  const auto& m = manifest()["models"][name];
  LoadOptions options;
  if (m["tokenizer"]["kind"] == "clip_bpe")
    options.vocab = (fixtures() / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz").string();
  return load_clip((families() / m["files"][0].get<std::string>()).string(), options);
}

class FamilyParity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    model_ = manifest()["models"][GetParam()];
    clip_ = load_family_model(GetParam());
    ref_ = reference(families() / (GetParam() + ".reference.safetensors"));
  }
  const char* name() const { return GetParam().c_str(); }
  nlohmann::json model_;
  LoadedClip clip_;
  TensorMap ref_;
};

TEST_P(FamilyParity, ConfigFamilyAndPreprocessingComeFromTheFiles) {
  const ClipConfig& c = clip_.model->config();
  const auto& m = model_["config"];
  EXPECT_EQ(name_of(kModelFamilies, c.family), model_["family"].get<std::string>());
  EXPECT_EQ(c.embed_dim, m["embed_dim"].get<int64_t>());
  EXPECT_EQ(c.image_resolution, m["image_resolution"].get<int64_t>());
  EXPECT_EQ(c.vision_width, m["vision_width"].get<int64_t>());
  EXPECT_EQ(c.vision_layers.at(0), m["vision_layers"].get<int64_t>());
  EXPECT_EQ(c.vision_patch_size, m["vision_patch_size"].get<int64_t>());
  EXPECT_EQ(c.vision_heads, m["vision_heads"].get<int64_t>());
  EXPECT_EQ(c.context_length, m["context_length"].get<int64_t>());
  EXPECT_EQ(c.vocab_size, m["vocab_size"].get<int64_t>());
  EXPECT_EQ(c.transformer_width, m["transformer_width"].get<int64_t>());
  EXPECT_EQ(c.transformer_heads, m["transformer_heads"].get<int64_t>());
  EXPECT_EQ(c.transformer_layers, m["transformer_layers"].get<int64_t>());
  const std::string act = m["activation"].get<std::string>();
  EXPECT_EQ(c.text_activation, act == "gelu_pytorch_tanh" ? "gelu_tanh" : act);
  const Preprocessing want = preprocessing_of(model_["preprocess"]);
  EXPECT_EQ(c.preprocess.mean, want.mean);
  EXPECT_EQ(c.preprocess.std, want.std);
  EXPECT_EQ(c.preprocess.resize, want.resize);
  EXPECT_EQ(c.preprocess.interpolation, want.interpolation);
  ASSERT_NE(clip_.tokenizer, nullptr);
  EXPECT_STREQ(clip_.tokenizer->kind(),
               model_["tokenizer"]["kind"] == "sentencepiece" ? "SentencePiece" : "CLIP BPE");
}

TEST_P(FamilyParity, TokensAndTextFeatures) {
  torch::NoGradGuard no_grad;
  const auto prompts = manifest()["prompts"].get<std::vector<std::string>>();
  const torch::Tensor tokens =
      clip_.require_tokenizer().tokenize(prompts, clip_.model->config().context_length, true);
  EXPECT_TRUE(torch::equal(tokens, ref_.at("tokens"))) << tokens << "\n" << ref_.at("tokens");
  const double err = rel_error(clip_.model->encode_text(tokens), ref_.at("text_features"));
  std::printf("[family] %s text_features rel %.3g\n", name(), err);
  EXPECT_LT(err, 1e-5);
}

TEST_P(FamilyParity, ImageFeatures) {
  torch::NoGradGuard no_grad;
  const double err = rel_error(clip_.model->encode_image(ref_.at("pixels")), ref_.at("image_features"));
  std::printf("[family] %s image_features rel %.3g\n", name(), err);
  EXPECT_LT(err, 1e-5);
}

TEST_P(FamilyParity, LogitsSigmoidAndPixelGradient) {
  torch::Tensor pixels = ref_.at("pixels").clone().requires_grad_(true);
  const torch::Tensor img = clip_.model->encode_image(pixels);
  torch::Tensor txt;
  {
    torch::NoGradGuard no_grad;
    txt = clip_.model->encode_text(ref_.at("tokens"));
  }
  const torch::Tensor cos = torch::matmul(img / img.norm(2, -1, true), (txt / txt.norm(2, -1, true)).t());
  const double scale = clip_.model->logit_scale_exp().item<double>(), bias = clip_.model->logit_bias();
  const torch::Tensor image_n = (img / img.norm(2, -1, true)).detach(), text_n = txt / txt.norm(2, -1, true);
  const double logit_err =
      rel_error(apply_metric(image_n, text_n, Metric::Logit, scale, bias), ref_.at("logits_per_image"));
  EXPECT_LT(logit_err, 1e-5);
  if (ref_.count("sigmoid_per_image") != 0) {
    const double sigmoid_err =
        rel_error(apply_metric(image_n, text_n, Metric::Sigmoid, scale, bias), ref_.at("sigmoid_per_image"));
    std::printf("[family] %s sigmoid rel %.3g\n", name(), sigmoid_err);
    EXPECT_LT(sigmoid_err, 1e-5);
  } else {
    EXPECT_EQ(bias, 0.0);
  }
  (cos * ref_.at("grad_weights")).sum().backward();
  const double grad_err = rel_error(pixels.grad(), ref_.at("pixels_grad"));
  std::printf("[family] %s logits rel %.3g, pixels_grad rel %.3g\n", name(), logit_err, grad_err);
  EXPECT_LT(grad_err, 1e-4);
}

// The peer's own preprocessing of the photos (open_clip's image_transform from the model's preprocess_cfg,
// SigLIP's image processor), then the features from our pixels.
TEST_P(FamilyParity, PhotoPreprocessingIsExactAndGivesThePeersFeatures) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> ours;
  const ClipConfig& c = clip_.model->config();
  for (const auto& photo : manifest()["photos"])
    ours.push_back(preprocess(read_image((families() / photo.get<std::string>()).string()),
                              c.image_resolution, c.preprocess));
  const torch::Tensor pixels = torch::stack(ours);
  const double max_abs = (pixels - ref_.at("photo_pixels")).abs().max().item<double>();
  std::printf("[family] %s photo pixels max abs diff %.3g\n", name(), max_abs);
  EXPECT_LT(max_abs, 1e-6);
  const double err = rel_error(clip_.model->encode_image(pixels), ref_.at("photo_features"));
  EXPECT_LT(err, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, FamilyParity, ::testing::ValuesIn(model_names()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return param_name(info.param);
                         });

// open_clip's image_transform for every resize mode and interpolation, on photos that need cropping, padding
// or squashing, against what our preprocess makes.
TEST(FamilyPreprocessing, EveryOpenClipResizeModeIsExact) {
  const TensorMap ref = reference(families() / "preprocess.reference.safetensors");
  int checked = 0;
  for (const auto& c : manifest()["preprocess_cases"]) {
    const Preprocessing how = preprocessing_of(c);
    const int64_t size = c["size"].get<int64_t>();
    for (const auto& photo : manifest()["photos"]) {
      const std::string key =
          cat(c["resize_mode"].get<std::string>(), "-", c["interpolation"].get<std::string>(), "-", size, "@",
              photo.get<std::string>());
      const torch::Tensor ours =
          preprocess(read_image((families() / photo.get<std::string>()).string()), size, how);
      const torch::Tensor& theirs = ref.at(key);
      ASSERT_EQ(ours.sizes(), theirs.sizes()) << key;
      EXPECT_LT((ours - theirs).abs().max().item<double>(), 1e-6) << key;
      ++checked;
    }
  }
  EXPECT_GT(checked, 0);
}

// More texts through each SentencePiece tokenizer, with the rules of the files beside it (SiglipTokenizer's,
// Siglip2Tokenizer's as the model's folder and as transformers saves it by default, open_clip's clean before
// Gemma's): case, punctuation, whitespace, unknown characters, HTML entities, truncation, empty text.
TEST(FamilyTokenizer, SentencePieceIdsMatchThePeer) {
  int checked = 0;
  for (const auto& c : manifest()["tokenizer_cases"]) {
    const Tokenizer tok = Tokenizer::from_path((families() / c["file"].get<std::string>()).string());
    const auto ids = c["ids"].get<std::vector<int64_t>>();
    const torch::Tensor ours =
        tok.tokenize({c["text"].get<std::string>()}, static_cast<int64_t>(ids.size()), true);
    EXPECT_TRUE(torch::equal(ours[0], torch::tensor(ids))) << c["text"] << ": " << ours[0];
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

// Raw texts through SentencePiece models of every kind (unigram with the NFKC character map, BPE with byte
// fallback and no dummy prefix as Gemma's, user-defined pieces), id for id as the sentencepiece library.
TEST(FamilyTokenizer, SentencePieceEncodesAsTheLibrary) {
  std::map<std::string, std::shared_ptr<const SentencePiece>> models;
  int checked = 0;
  for (const auto& c : manifest()["sentencepiece_cases"]) {
    const std::string file = c["file"].get<std::string>();
    auto& sp = models[file];
    if (!sp) {
      const std::string path = (families() / file).string();
      sp = std::make_shared<const SentencePiece>(parse_sentencepiece_model(read_bytes(path), path), path);
    }
    const auto want = c["ids"].get<std::vector<int64_t>>();
    EXPECT_EQ(sp->encode(c["text"].get<std::string>()), want) << file << ": " << c["text"];
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

// --metric sigmoid is SigLIP's; on a CLIP model it is an error that says so.
TEST(FamilyScores, SigmoidNeedsASiglipModelAndTheLogitBias) {
  for (const std::string& name : model_names()) {
    const LoadedClip clip = load_family_model(name);
    EXPECT_EQ(clip.model->config().siglip(), clip.model->logit_bias() != 0.0) << name;
  }
}

// A guide over every family at once (CLIP and SigLIP, each with its own preprocessing and tokenizer), with
// SigLIP's own loss: finite, differentiable, and the SigLIP term is -log sigmoid of its logit.
TEST(FamilyGuide, MixedEnsembleWithTheSigmoidLoss) {
  std::vector<GuideModel> models;
  for (const std::string& name : model_names())
    models.push_back({std::make_shared<LoadedClip>(load_family_model(name)), name, 1.0, 2});
  ClipGuideOptions options;
  options.loss = GuideLoss::Sigmoid;
  options.cutouts.cutn = 2;
  const ClipGuide guide(models, PromptSchedule::parse("a red circle", 0, false), {}, options);
  auto rng = make_generator(3);
  const torch::Tensor image = torch::rand({1, 3, 40, 40}, rng);
  auto [grad, result] = guide.gradient(image, rng);
  EXPECT_TRUE(std::isfinite(result.total.sum().item<double>()));
  EXPECT_TRUE(torch::isfinite(grad).all().item<bool>());
  EXPECT_GT(grad.abs().sum().item<double>(), 0.0);

  // One SigLIP model alone, without cutout augmentation: its loss is softplus(-(scale * cos + bias)).
  for (GuideModel m : models) {
    if (!m.clip->model->config().siglip()) continue;
    m.cutn = 1;  // the overview alone: the whole image
    ClipGuideOptions plain = options;
    plain.cutouts.cutn = 1;
    plain.cutouts.overview = true;
    plain.cutouts.augments.clear();
    const ClipGuide alone({m}, PromptSchedule::parse("a red circle", 0, false), {}, plain);
    torch::NoGradGuard no_grad;
    auto rng2 = make_generator(4);
    const double loss = alone.loss(image, rng2).total.item<double>();
    const double cos = alone.scores(image).item<double>();
    const double logit = m.clip->model->logit_scale_exp().item<double>() * cos + m.clip->model->logit_bias();
    EXPECT_NEAR(loss, std::log1p(std::exp(-logit)), 1e-4) << m.name;
  }
}

// open_clip weights without their config: the activation cannot be told, and the error names the flag.
TEST(FamilyBadInput, OpenClipWeightsWithoutTheirConfigNameTheFlag) {
  TempDir dir;
  for (const std::string& name : model_names()) {
    const auto& m = manifest()["models"][name];
    if (m["format"] != "open_clip") continue;
    const std::filesystem::path file = families() / m["files"][0].get<std::string>();
    std::filesystem::copy_file(file, dir / file.filename().string(),
                               std::filesystem::copy_options::overwrite_existing);
    try {
      load_clip((dir / file.filename().string()).string());
      ADD_FAILURE() << name << " loaded without its config";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--activation"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace clipguide::test
