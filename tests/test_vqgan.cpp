// Parity with taming-transformers on the vqgan fixtures: encode, quantize, decode, straight-through gradient,
// from both the Lightning .ckpt and the .safetensors file, with the config from the .yaml or from the
// weights.
#include "core/error.h"
#include "fixtures.h"
#include "generators/vqgan.h"
#include "io/checkpoint.h"
#include "io/image.h"

namespace clipguide::test {
namespace {

struct VqganFile {
  std::string model, file;
  bool with_yaml;
};
void PrintTo(const VqganFile& f, std::ostream* os) { *os << f.file << (f.with_yaml ? "+yaml" : ""); }

std::filesystem::path vqgan_dir() { return fixtures() / "vqgan"; }

std::vector<VqganFile> vqgan_files() {
  std::vector<VqganFile> out;
  const auto manifest = read_json(vqgan_dir() / "vqgan-manifest.json");
  for (const auto& [name, entry] : manifest["models"].items()) {
    for (const char* key : {"ckpt", "safetensors"}) {
      for (bool yaml : {true, false}) out.push_back({name, entry[key].get<std::string>(), yaml});
    }
  }
  return out;
}

class VqganParity : public ::testing::TestWithParam<VqganFile> {
 protected:
  void SetUp() override {
    manifest_ = read_json(vqgan_dir() / "vqgan-manifest.json")["models"][GetParam().model];
    const std::string yaml =
        GetParam().with_yaml ? (vqgan_dir() / manifest_["yaml"].get<std::string>()).string() : "";
    vqgan_ = load_vqgan((vqgan_dir() / GetParam().file).string(), yaml, torch::kCPU).model;
    ref_ = reference(vqgan_dir() / manifest_["reference"].get<std::string>());
  }
  nlohmann::json manifest_;
  std::shared_ptr<Vqgan> vqgan_;
  TensorMap ref_;
};

TEST_P(VqganParity, ConfigMatchesManifest) {
  const auto& m = manifest_["config"];
  const VqganConfig& c = vqgan_->config();
  EXPECT_EQ(c.embed_dim, m["embed_dim"].get<int64_t>());
  EXPECT_EQ(c.n_embed, m["n_embed"].get<int64_t>());
  EXPECT_EQ(c.ch, m["ddconfig"]["ch"].get<int64_t>());
  EXPECT_EQ(c.ch_mult, m["ddconfig"]["ch_mult"].get<std::vector<int64_t>>());
  EXPECT_EQ(c.num_res_blocks, m["ddconfig"]["num_res_blocks"].get<int64_t>());
  EXPECT_EQ(c.z_channels, m["ddconfig"]["z_channels"].get<int64_t>());
}

TEST_P(VqganParity, InitImagesAreTheReferenceInput) {
  const auto files = manifest_["init_images"].get<std::vector<std::string>>();
  std::vector<torch::Tensor> xs;
  for (const auto& f : files) {
    xs.push_back(to_rgb_tensor(read_image((vqgan_dir() / f).string())).permute({2, 0, 1}).to(torch::kFloat) /
                     127.5 -
                 1);
  }
  EXPECT_LT(rel_error(torch::stack(xs), ref_.at("x")), 1e-6);
}

TEST_P(VqganParity, EncodeQuantizeDecode) {
  torch::NoGradGuard no_grad;
  const torch::Tensor z = vqgan_->encode(ref_.at("x"));
  const double z_err = rel_error(z, ref_.at("z"));
  const auto q = vqgan_->quantize(ref_.at("z"));
  const double zq_err = rel_error(q.z_q, ref_.at("z_q"));
  const double dec_err = rel_error(vqgan_->decode(ref_.at("z_q")), ref_.at("decoded"));
  std::printf("[parity] %s z rel %.3g, z_q rel %.3g, decoded rel %.3g\n", GetParam().file.c_str(), z_err,
              zq_err, dec_err);
  EXPECT_LT(z_err, 1e-4);
  EXPECT_TRUE(torch::equal(q.indices, ref_.at("indices")));
  EXPECT_LT(zq_err, 1e-4);
  EXPECT_LT(dec_err, 1e-4);
}

TEST_P(VqganParity, StraightThroughGradient) {
  torch::Tensor z = ref_.at("z_perturbed").clone().requires_grad_(true);
  const auto q = vqgan_->quantize(z);
  EXPECT_TRUE(torch::equal(q.indices, ref_.at("indices_perturbed")));
  const torch::Tensor decoded = vqgan_->decode(q.z_q);
  EXPECT_LT(rel_error(decoded, ref_.at("decoded_perturbed")), 1e-4);
  (decoded * ref_.at("grad_weights")).sum().backward();
  const double err = rel_error(z.grad(), ref_.at("z_perturbed_grad"));
  std::printf("[parity] %s z_perturbed_grad rel %.3g\n", GetParam().file.c_str(), err);
  EXPECT_LT(err, 1e-3);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, VqganParity, ::testing::ValuesIn(vqgan_files()), [](const auto& info) {
  return param_name(info.param.file + (info.param.with_yaml ? "_yaml" : ""));
});

TEST(Vqgan, ConfigThatContradictsTheWeightsIsAnError) {
  TempDir dir;
  std::string yaml = read_bytes(vqgan_dir() / "vqgan-tiny.yaml");
  const auto pos = yaml.find("num_res_blocks:");
  ASSERT_NE(pos, std::string::npos);
  yaml.insert(pos, "num_res_blocks: 7\n      x_");
  write_bytes(dir / "bad.yaml", yaml);
  try {
    load_vqgan((vqgan_dir() / "vqgan-tiny.safetensors").string(), (dir / "bad.yaml").string(), torch::kCPU);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("holds a"), std::string::npos) << e.what();
  }
}

TEST(Vqgan, ClipCheckpointIsNotAVqgan) {
  const auto file = fixtures() / "clip" / clip_model_files().front().file;
  try {
    load_vqgan(file.string(), "", torch::kCPU);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a taming VQGAN"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace clipguide::test
