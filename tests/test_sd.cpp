// Parity with diffusers' Stable Diffusion schedulers (tools/make_sd_fixtures.py): each case's timesteps,
// sigmas and starting noise scale, then a whole run of steps from stored model outputs (and the noise the
// stochastic steps drew), checked step by step against what diffusers computed. Every count, shape and value
// comes from the fixture files (CLIPGUIDE_SD_FIXTURES, default tests/data/sd).
#include "core/error.h"
#include "fixtures.h"
#include "generators/sd_scheduler.h"
#include "generators/unet.h"
#include "generators/vqgan.h"

namespace clipguide::test {
namespace {

std::filesystem::path sd_fixtures() {
  if (const char* dir = std::getenv("CLIPGUIDE_SD_FIXTURES")) return dir;
  return std::filesystem::path(CLIPGUIDE_SOURCE_DIR) / "tests" / "data" / "sd";
}

const nlohmann::json& sd_manifest() {
  static const nlohmann::json m = read_json(sd_fixtures() / "sd-manifest.json");
  return m;
}

std::vector<std::string> scheduler_cases() {
  std::vector<std::string> out;
  for (const auto& [name, entry] : sd_manifest()["cases"].items()) out.push_back(name);
  return out;
}

// The case's scheduler as diffusers' from_config(config, **overrides) made it.
SdScheduler scheduler_of(const nlohmann::json& entry) {
  const std::filesystem::path path = sd_fixtures() / sd_manifest()["scheduler_config"].get<std::string>();
  nlohmann::json config = read_json(path);
  config.update(entry["overrides"]);
  const SdSchedulerKind kind = parse_sd_scheduler(entry["scheduler"].get<std::string>());
  return SdScheduler(kind, read_sd_scheduler_config(config.dump(), path.string(), kind));
}

class SdSchedulers : public ::testing::TestWithParam<std::string> {};

TEST_P(SdSchedulers, StepForStepAsDiffusers) {
  const std::string name = GetParam();
  const nlohmann::json& entry = sd_manifest()["cases"][name];
  static const TensorMap ref = reference(sd_fixtures() / "schedulers.safetensors");
  const auto at = [&](const std::string& key) { return ref.at(name + "/" + key); };
  SdScheduler s = scheduler_of(entry);
  s.set_timesteps(entry["steps"].get<int64_t>());

  const torch::Tensor timesteps = at("timesteps");
  ASSERT_EQ(static_cast<int64_t>(s.timesteps().size()), timesteps.numel());
  for (int64_t i = 0; i < timesteps.numel(); ++i)
    EXPECT_NEAR(s.timesteps()[i], timesteps[i].item<double>(), 1e-3) << "timestep " << i;
  if (ref.count(name + "/sigmas")) {
    const torch::Tensor sigmas = at("sigmas");
    for (int64_t i = 0; i < sigmas.numel(); ++i)
      EXPECT_NEAR(s.sigma(i), sigmas[i].item<double>(), 1e-5 * std::max(1.0, sigmas[i].item<double>()))
          << "sigma " << i;
  }
  EXPECT_NEAR(s.init_noise_sigma(), at("init_noise_sigma").item<double>(),
              1e-6 * at("init_noise_sigma").item<double>());

  const double eta = entry["eta"].get<double>();
  torch::Tensor sample = at("sample");
  for (int64_t i = 0; i < timesteps.numel(); ++i) {
    const std::string n = std::to_string(i);
    EXPECT_LT(rel_error(s.scale_model_input(sample, i), at("scaled_" + n)), 1e-5) << "scaled input " << i;
    const torch::Tensor noise = s.needs_noise(eta) ? at("noise_" + n) : torch::Tensor();
    sample = s.step(at("model_output_" + n), i, sample, eta, noise);
    EXPECT_LT(rel_error(sample, at("prev_" + n)), 1e-5) << "step " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, SdSchedulers, ::testing::ValuesIn(scheduler_cases()),
                         [](const auto& info) { return param_name(info.param); });

TEST(SdSchedulerConfig, ClassDefaultsAndOneLineErrors) {
  // A config without timestep_spacing: DDIM and PNDM space "leading", the Euler and DPM++ kinds "linspace".
  const std::string sd = R"({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
                              "skip_prk_steps": true, "steps_offset": 1})";
  EXPECT_EQ(read_sd_scheduler_config(sd, "c.json", SdSchedulerKind::Ddim).timestep_spacing, "leading");
  EXPECT_EQ(read_sd_scheduler_config(sd, "c.json", SdSchedulerKind::Euler).timestep_spacing, "linspace");
  EXPECT_TRUE(read_sd_scheduler_config(sd, "c.json", SdSchedulerKind::DpmSolver2MKarras).use_karras_sigmas);
  EXPECT_FALSE(read_sd_scheduler_config(sd, "c.json", SdSchedulerKind::DpmSolver2M).use_karras_sigmas);
  for (const std::string bad : {R"({"beta_schedule": "quadratic"})", R"({"prediction_type": "sample"})",
                                R"({"num_train_timesteps": 1e30})", R"({"thresholding": true})", R"([1, 2])",
                                R"({"trained_betas": [0.5]})", "{not json"}) {
    try {
      read_sd_scheduler_config(bad, "c.json", SdSchedulerKind::Ddim);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos);
      EXPECT_NE(std::string(e.what()).find("c.json"), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(read_sd_scheduler_config("{}", "c.json", SdSchedulerKind::Pndm),
               Error);  // Runge-Kutta warm-up
  SdScheduler s(SdSchedulerKind::EulerAncestral,
                read_sd_scheduler_config(sd, "c.json", SdSchedulerKind::EulerAncestral));
  EXPECT_THROW(s.set_timesteps(0), Error);
  EXPECT_THROW(s.set_timesteps(5000), Error);
  s.set_timesteps(4);
  const torch::Tensor x = torch::zeros({1, 4, 2, 2});
  EXPECT_THROW(s.step(x, 0, x), Error);  // ancestral steps need their noise
  EXPECT_THROW(s.step(x, 4, x, 0, x), Error);
}

class SdVae : public ::testing::TestWithParam<std::string> {};

TEST_P(SdVae, EncodesAndDecodesAsDiffusers) {
  const nlohmann::json& m = sd_manifest();
  const std::string path = GetParam() == "folder"
                               ? (sd_fixtures() / m["pipeline"].get<std::string>() / "vae").string()
                               : (sd_fixtures() / m["single_file"].get<std::string>()).string();
  const TensorMap ref = reference(sd_fixtures() / m["reference"].get<std::string>());
  const LoadedVae vae = load_vae(path, torch::kCPU);
  EXPECT_NEAR(vae.scaling_factor, m["vae"]["scaling_factor"].get<double>(), 1e-9);
  torch::NoGradGuard no_grad;
  const AutoencoderKL::Posterior posterior = vae.model->encode(ref.at("vae/x"));
  EXPECT_LT(rel_error(posterior.mean, ref.at("vae/mean")), 1e-5);
  EXPECT_LT(rel_error(posterior.logvar, ref.at("vae/logvar")), 1e-5);
  EXPECT_LT(rel_error(vae.model->decode(ref.at("vae/z")), ref.at("vae/decoded")), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, SdVae, ::testing::Values("folder", "single_file"),
                         [](const auto& info) { return info.param; });

// Each UNet from its diffusers folder, and SD 1.x's from the single file (its heads from the yaml beside it).
std::vector<std::string> unet_files() {
  std::vector<std::string> out;
  for (const auto& [name, entry] : sd_manifest()["unets"].items()) {
    out.push_back(name + "/folder");
    if (entry.contains("single_file")) out.push_back(name + "/single_file");
  }
  return out;
}

class SdUnet : public ::testing::TestWithParam<std::string> {};

TEST_P(SdUnet, PredictsAsDiffusers) {
  const std::string name = GetParam().substr(0, GetParam().find('/'));
  const bool folder = GetParam().find("/folder") != std::string::npos;
  const nlohmann::json& m = sd_manifest();
  const nlohmann::json& entry = m["unets"][name];
  const std::string path =
      (sd_fixtures() / entry[folder ? "folder" : "single_file"].get<std::string>()).string();
  const std::string yaml = folder ? "" : (sd_fixtures() / m["original_config"].get<std::string>()).string();
  const LoadedUNet unet = load_sd_unet(path, yaml, torch::kCPU);
  const TensorMap ref = reference(sd_fixtures() / m["reference"].get<std::string>());
  const auto at = [&](const std::string& key) { return ref.at(name + "/" + key); };
  torch::NoGradGuard no_grad;
  const torch::Tensor out = unet.model->forward(at("x"), at("t"), {}, {}, at("context"));
  EXPECT_LT(rel_error(out, at("out")), 1e-5) << unet.model->config().describe();
}

INSTANTIATE_TEST_SUITE_P(Fixtures, SdUnet, ::testing::ValuesIn(unet_files()),
                         [](const auto& info) { return param_name(info.param); });

TEST(SdWeights, OddDiffusersNamesAreLeftForTheStrictLoadToName) {
  const torch::Tensor t = torch::zeros({2, 2});
  const TensorMap unet = {{"conv_in.weight", t},
                          {"down_blocks.0.resnets.0.norm1.weight", t},
                          {"down_blocks.x.resnets.0.norm1.weight", t},
                          {"down_blocks.99999999999999999999.resnets.0.norm1.weight", t},
                          {"down_blocks.0.resnets.0.norm1", t},
                          {"mid_block.resnets.0", t},
                          {"up_blocks.0.upsamplers.0.conv.weight", t}};
  TensorMap mapped;
  ASSERT_NO_THROW(mapped = unet_weights_from_diffusers(unet));
  EXPECT_EQ(mapped.size(), unet.size());
  EXPECT_EQ(mapped.count("input_blocks.1.0.in_layers.0.weight"), 1u);
  EXPECT_EQ(mapped.count("down_blocks.x.resnets.0.norm1.weight"), 1u);
  const TensorMap vae = {{"encoder.down_blocks.0.resnets.0.conv1.weight", t},
                         {"encoder.down_blocks.x.resnets.0.conv1.weight", t},
                         {"decoder.up_blocks.123456789.resnets.0.conv1.weight", t},
                         {"decoder.up_blocks.", t},
                         {"encoder.mid_block.attentions.0.to_q.weight", t}};
  ASSERT_NO_THROW(mapped = vae_weights_from_diffusers(vae));
  EXPECT_EQ(mapped.size(), vae.size());
  EXPECT_EQ(mapped.count("encoder.down.0.block.0.conv1.weight"), 1u);
  EXPECT_EQ(mapped.at("encoder.mid.attn_1.q.weight").sizes(), torch::IntArrayRef({2, 2, 1, 1}));
}

TEST(SdVae, RefusesWhatItCannotRun) {
  TempDir dir;
  const std::filesystem::path folder = sd_fixtures() / sd_manifest()["pipeline"].get<std::string>() / "vae";
  std::filesystem::copy(folder, dir / "vae");
  nlohmann::json config = read_json(folder / "config.json");
  config["norm_num_groups"] = 16;
  write_bytes(dir / "vae" / "config.json", config.dump());
  EXPECT_THROW(load_vae((dir / "vae").string(), torch::kCPU), Error);
  // A CLIP's weights are not a VAE: one line naming what is missing.
  try {
    load_vae((sd_fixtures() / "schedulers.safetensors").string(), torch::kCPU);
    ADD_FAILURE() << "loaded a file of scheduler tensors as a VAE";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("VAE"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace clipguide::test
