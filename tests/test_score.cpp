// Scores and rankings against the reference logits, and each metric against its definition.
#include <dlfcn.h>

#include "clip/score.h"
#include "core/device.h"
#include "core/error.h"
#include "fixtures.h"
#include "io/sha256.h"

namespace clipguide::test {
namespace {

TEST(Metrics, MatchTheirDefinitionsOnHandComputedCases) {
  const torch::Tensor image = torch::tensor({{1.0f, 0.0f}, {0.6f, -0.8f}});  // unit rows
  const torch::Tensor text = torch::tensor({{1.0f, 0.0f}, {0.0f, 1.0f}});    // unit rows
  const torch::Tensor cos = torch::tensor({{1.0f, 0.0f}, {0.6f, -0.8f}});
  EXPECT_TRUE(torch::allclose(apply_metric(image, text, Metric::Cosine, 100), cos));
  EXPECT_TRUE(torch::allclose(apply_metric(image, text, Metric::Logit, 100), 100 * cos));
  EXPECT_TRUE(torch::allclose(apply_metric(image, text, Metric::ClipScore, 100),
                              torch::tensor({{2.5f, 0.0f}, {1.5f, 0.0f}})));
  const torch::Tensor probs = apply_metric(image, text, Metric::Probs, 10);
  EXPECT_TRUE(torch::allclose(probs.sum(1), torch::ones({2})));
  EXPECT_NEAR(probs[1][0].item<float>(), 1.0 / (1.0 + std::exp(-14.0)), 1e-6);  // softmax(6, -8)
  EXPECT_THROW(parse_metric("f1"), Error);
}

TEST(CpuThreads, TorchTakesTheThreadsAndOpenBlasKeepsOne) {
  const int before = torch::get_num_threads();
  set_cpu_threads(2);
  EXPECT_EQ(torch::get_num_threads(), 2);
  // Only where the process's BLAS is OpenBLAS (Debian's libtorch); other BLAS libraries are left alone.
  using GetThreads = int (*)();
  if (auto blas_threads = reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"))) {
    EXPECT_EQ(blas_threads(), 1);
  }
  set_cpu_threads(before);
  EXPECT_EQ(torch::get_num_threads(), before);
}

TEST(Autocast, CpuMatmulsRunInBf16InsideTheOutermostGuardOnly) {
  const torch::Tensor a = torch::randn({8, 8}), b = torch::randn({8, 8});
  {
    const Autocast off(torch::kCPU, torch::kBFloat16, false);
    EXPECT_EQ(torch::matmul(a, b).scalar_type(), torch::kFloat);
  }
  {
    const Autocast outer(torch::kCPU, torch::kBFloat16);
    {
      const Autocast inner(torch::kCPU, torch::kBFloat16);
      EXPECT_EQ(torch::matmul(a, b).scalar_type(), torch::kBFloat16);
    }
    const torch::Tensor c = torch::matmul(a, b);
    EXPECT_EQ(c.scalar_type(), torch::kBFloat16);
    const torch::Tensor exact = torch::matmul(a.to(torch::kDouble), b.to(torch::kDouble)).to(torch::kFloat);
    EXPECT_LT((c.to(torch::kFloat) - exact).abs().max().item<float>(), 0.2);
  }
  EXPECT_EQ(torch::matmul(a, b).scalar_type(), torch::kFloat);
}

class ScoreParity : public ::testing::TestWithParam<ModelFile> {
 protected:
  void SetUp() override {
    const auto manifest = read_json(fixtures() / "clip" / "clip-manifest.json");
    const auto& entry = manifest["models"][GetParam().model];
    LoadOptions options;
    options.vocab = (fixtures() / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz").string();
    options.text_heads = entry["config"]["transformer_heads"].get<int64_t>();
    clip_ = load_clip((fixtures() / "clip" / GetParam().file).string(), options);
    prompts_ = manifest["prompts"].get<std::vector<std::string>>();
    for (const auto& image : entry["images"])
      images_.push_back((fixtures() / "clip" / image.get<std::string>()).string());
    logits_ =
        reference(fixtures() / "clip" / (GetParam().model + ".reference.safetensors")).at("logits_per_image");
    text_ = embed_prompts(clip_, prompts_, {}, true);
    std::vector<torch::Tensor> feats;
    stream_image_features(clip_, images_, 3, 2, true, [&](const ImageBatch& b) {
      EXPECT_TRUE(b.errors.empty());
      feats.push_back(b.features);
    });
    image_ = torch::cat(feats);
  }
  LoadedClip clip_;
  std::vector<std::string> prompts_, images_;
  torch::Tensor logits_, text_, image_;
};

TEST_P(ScoreParity, LogitScoresEqualTheReferenceLogits) {
  const double scale = clip_.model->logit_scale_exp().item<double>();
  const double err = rel_error(apply_metric(image_, text_, Metric::Logit, scale), logits_);
  std::printf("[score] %s logit rel %.3g\n", GetParam().file.c_str(), err);
  EXPECT_LT(err, 1e-4);
  EXPECT_TRUE(torch::allclose(apply_metric(image_, text_, Metric::Probs, scale).sum(1),
                              torch::ones({image_.size(0)})));
}

TEST_P(ScoreParity, RankingFollowsTheReferenceLogits) {
  const torch::Tensor cos = apply_metric(image_, text_, Metric::Cosine, 0);
  for (int64_t p = 0; p < cos.size(1); ++p) {
    EXPECT_TRUE(torch::equal(std::get<1>(cos.select(1, p).sort(0, true)),
                             std::get<1>(logits_.select(1, p).sort(0, true))))
        << "prompt " << p;
  }
}

TEST_P(ScoreParity, TemplatesAverageNormalizedEmbeddings) {
  const std::vector<std::string> templates = {"a photo of {}", "{}, a painting"};
  const torch::Tensor ensemble = embed_prompts(clip_, {prompts_[0]}, templates, true);
  const torch::Tensor parts =
      embed_prompts(clip_, {"a photo of " + prompts_[0], prompts_[0] + ", a painting"}, {}, true);
  const torch::Tensor mean = parts.mean(0);
  EXPECT_LT(rel_error(ensemble[0], mean / mean.norm()), 1e-6);
  EXPECT_THROW(embed_prompts(clip_, {prompts_[0]}, {"no placeholder"}, true), Error);
}

TEST_P(ScoreParity, Bf16ScoresStayWithinAHundredthOfFp32) {
  LoadOptions options;
  options.vocab = (fixtures() / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz").string();
  options.text_heads = clip_.model->config().transformer_heads;
  options.vision_heads = clip_.model->config().vision_heads;
  options.dtype = torch::kBFloat16;
  LoadedClip bf16 = load_clip((fixtures() / "clip" / GetParam().file).string(), options);
  std::vector<torch::Tensor> feats;
  stream_image_features(bf16, images_, 4, 2, true, [&](const ImageBatch& b) { feats.push_back(b.features); });
  const torch::Tensor diff =
      (apply_metric(torch::cat(feats), embed_prompts(bf16, prompts_, {}, true), Metric::Cosine, 0) -
       apply_metric(image_, text_, Metric::Cosine, 0))
          .abs();
  std::printf("[score] %s bf16 max |cos - cos_fp32| %.4f\n", GetParam().file.c_str(),
              diff.max().item<float>());
  EXPECT_LT(diff.max().item<float>(), 0.01f);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ScoreParity, ::testing::ValuesIn(clip_model_files()),
                         [](const ::testing::TestParamInfo<ModelFile>& info) {
                           return param_name(info.param.file);
                         });

TEST(Streaming, UnreadableImagesAreReportedInOrderAndTheRestScored) {
  TempDir dir;
  const auto manifest = read_json(fixtures() / "clip" / "clip-manifest.json");
  const std::string model = manifest["models"].begin().key();
  const auto& entry = manifest["models"][model];
  write_bytes(dir / "broken.png", "\x89PNG\r\n\x1a\nnot really");
  std::vector<std::string> paths;
  for (const auto& image : entry["images"])
    paths.push_back((fixtures() / "clip" / image.get<std::string>()).string());
  paths.insert(paths.begin() + 1, (dir / "broken.png").string());
  LoadOptions options;
  options.text_heads = entry["config"]["transformer_heads"].get<int64_t>();
  LoadedClip clip = load_clip((fixtures() / "clip" / entry["files"][0].get<std::string>()).string(), options);
  std::vector<std::string> seen, failed;
  stream_image_features(clip, paths, 2, 3, true, [&](const ImageBatch& b) {
    seen.insert(seen.end(), b.paths.begin(), b.paths.end());
    for (const auto& e : b.errors) failed.push_back(e.first);
    EXPECT_EQ(b.features.size(0), static_cast<int64_t>(b.paths.size()));
  });
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0], paths[1]);
  paths.erase(paths.begin() + 1);
  EXPECT_EQ(seen, paths);
}

TEST(Cache, HitsSkipEncodingAndCorruptEntriesAreRecomputed) {
  TempDir dir;
  const auto manifest = read_json(fixtures() / "clip" / "clip-manifest.json");
  const auto& entry = manifest["models"].begin().value();
  LoadOptions options;
  options.text_heads = entry["config"]["transformer_heads"].get<int64_t>();
  const std::string weights = (fixtures() / "clip" / entry["files"][0].get<std::string>()).string();
  LoadedClip clip = load_clip(weights, options);
  const std::string image = (fixtures() / "clip" / entry["images"][0].get<std::string>()).string();
  const EmbeddingCache cache((dir / "cache").string(),
                             model_cache_key((dir / "cache").string(), weights, "fp32"));
  auto run = [&]() {
    torch::Tensor out;
    stream_image_features(
        clip, {image}, 1, 1, false, [&](const ImageBatch& b) { out = b.features[0]; }, &cache);
    return out;
  };
  const torch::Tensor computed = run();  // a miss: encoded and stored
  const std::string sha = sha256_file(image);
  ASSERT_TRUE(cache.lookup(sha, computed.numel()).has_value());
  // Plant a different vector: a hit returns it, which proves the image was not encoded again.
  const torch::Tensor planted = torch::arange(computed.numel(), torch::kFloat);
  cache.store(sha, planted);
  EXPECT_TRUE(torch::equal(run(), planted));
  // Corrupt the entry: it is detected and the image re-encoded.
  for (const auto& f : std::filesystem::recursive_directory_iterator(dir / "cache")) {
    if (f.path().extension() == ".emb") write_bytes(f.path(), "garbage");
  }
  EXPECT_TRUE(torch::allclose(run(), computed));
  // A torn entry (cut short by a crash) and one flipped bit in the vector: both detected by the entry's
  // checksum.
  for (const bool torn : {true, false}) {
    cache.store(sha, planted);
    for (const auto& f : std::filesystem::recursive_directory_iterator(dir / "cache")) {
      if (f.path().extension() != ".emb") continue;
      std::string bytes = read_bytes(f.path());
      if (torn)
        bytes.resize(bytes.size() / 2);
      else
        bytes[bytes.size() / 2] ^= 0x10;
      write_bytes(f.path(), bytes);
    }
    EXPECT_TRUE(torch::allclose(run(), computed)) << (torn ? "torn entry" : "flipped bit");
  }
  // Another compute setup is another key.
  EXPECT_NE(model_cache_key((dir / "cache").string(), weights, "fp32"),
            model_cache_key((dir / "cache").string(), weights, "bf16"));
}

}  // namespace
}  // namespace clipguide::test
