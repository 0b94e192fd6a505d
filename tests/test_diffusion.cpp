// Parity with guided-diffusion on the diffusion fixtures (UNet output, respaced schedules, p_mean_variance,
// DDPM and DDIM steps plain and guided, whole loops from the stored noise), and every sampler on a
// closed-form model.
#include "core/error.h"
#include "fixtures.h"
#include "generators/diffusion.h"
#include "generators/diffusion_run.h"
#include "generators/unet.h"

namespace clipguide::test {
namespace {

std::filesystem::path diffusion_dir() { return fixtures() / "diffusion"; }

struct UNetFile {
  std::string model, file;
};
void PrintTo(const UNetFile& f, std::ostream* os) { *os << f.file; }

std::vector<UNetFile> unet_files() {
  std::vector<UNetFile> out;
  const auto manifest = read_json(diffusion_dir() / "diffusion-manifest.json");
  for (const auto& [name, entry] : manifest["models"].items()) {
    for (const char* key : {"pt", "safetensors"}) out.push_back({name, entry[key].get<std::string>()});
  }
  return out;
}

class DiffusionParity : public ::testing::TestWithParam<UNetFile> {
 protected:
  void SetUp() override {
    const auto entry = read_json(diffusion_dir() / "diffusion-manifest.json")["models"][GetParam().model];
    flags_path_ = diffusion_dir() / entry["flags"].get<std::string>();
    flags_ = read_json(flags_path_);
    unet_ = load_unet((diffusion_dir() / GetParam().file).string(), flags_path_.string(), torch::kCPU);
    ref_ = reference(diffusion_dir() / entry["reference"].get<std::string>());
  }
  // The schedule a prefix's references were made with: "p" (timestep_respacing) or "ddim" (ddim_respacing).
  DiffusionSchedule schedule(const std::string& prefix) const {
    const std::string respacing =
        prefix == "p" ? unet_.diffusion.timestep_respacing : flags_["ddim_respacing"].get<std::string>();
    return DiffusionSchedule::make(unet_.diffusion.noise_schedule, unet_.diffusion.steps, respacing);
  }
  Denoiser denoiser(const DiffusionSchedule& s) const {
    auto model = unet_.model;
    const torch::Tensor map = s.timestep_map;
    return plain_denoiser(s, [model, map](const torch::Tensor& x, const torch::Tensor& t) {
      return model->forward(x, map.index_select(0, t));
    });
  }
  torch::Tensor probe_t(const DiffusionSchedule& s) const {
    const int64_t last = s.size() - 1;
    return torch::tensor({last, last / 2}, torch::kLong);
  }
  std::filesystem::path flags_path_;
  nlohmann::json flags_;
  LoadedUNet unet_;
  TensorMap ref_;
};

TEST_P(DiffusionParity, UNetOutput) {
  torch::NoGradGuard no_grad;
  const double err = rel_error(unet_.model->forward(ref_.at("x"), ref_.at("t_raw")), ref_.at("unet_out"));
  std::printf("[parity] %s unet_out rel %.3g\n", GetParam().file.c_str(), err);
  EXPECT_LT(err, 1e-4);
  const auto& m = flags_["model_flags"];
  EXPECT_EQ(unet_.model->config().model_channels, m["num_channels"].get<int64_t>());
  EXPECT_EQ(unet_.model->config().num_res_blocks, m["num_res_blocks"].get<int64_t>());
  EXPECT_EQ(unet_.model->config().learn_sigma(), m["learn_sigma"].get<bool>());
}

TEST_P(DiffusionParity, SchedulesStepsAndLoops) {
  torch::NoGradGuard no_grad;
  for (const std::string prefix : {"p", "ddim"}) {
    const DiffusionSchedule s = schedule(prefix);
    EXPECT_TRUE(torch::equal(s.timestep_map, ref_.at(prefix + "_timestep_map"))) << prefix;
    EXPECT_LT(rel_error(s.betas, ref_.at(prefix + "_betas")), 1e-12) << prefix;
    const Denoiser d = denoiser(s);
    const torch::Tensor x = ref_.at("x"), t = probe_t(s);
    const Prediction p = d(x, t);
    for (const auto& [name, value] :
         std::vector<std::pair<std::string, torch::Tensor>>{{"mean", p.mean},
                                                            {"variance", p.variance},
                                                            {"log_variance", p.log_variance},
                                                            {"pred_xstart", p.pred_xstart}}) {
      const double err = rel_error(value, ref_.at(prefix + "_pmv_" + name));
      std::printf("[parity] %s %s_pmv_%s rel %.3g\n", GetParam().file.c_str(), prefix.c_str(), name.c_str(),
                  err);
      EXPECT_LT(err, 1e-4) << prefix << " " << name;
    }
    const torch::Tensor noise = ref_.at(prefix + "_step_noise"), grad = ref_.at(prefix + "_cond_grad");
    torch::Tensor step, guided;
    if (prefix == "p") {
      step = p_sample(d, x, t, noise);
      guided = p_sample(
          [&](const torch::Tensor& xx, const torch::Tensor& tt) { return condition_mean(d(xx, tt), grad); },
          x, t, noise);
    } else {
      step = ddim_sample(s, d, x, t, 0.5, noise);
      guided = ddim_sample(
          s,
          [&](const torch::Tensor& xx, const torch::Tensor& tt) {
            return condition_score(s, d(xx, tt), xx, tt, grad);
          },
          x, t, 0.5, noise);
    }
    const double step_err = rel_error(step, ref_.at(prefix + "_step")),
                 guided_err = rel_error(guided, ref_.at(prefix + "_step_guided"));
    std::printf("[parity] %s %s_step rel %.3g, %s_step_guided rel %.3g\n", GetParam().file.c_str(),
                prefix.c_str(), step_err, prefix.c_str(), guided_err);
    EXPECT_LT(step_err, 1e-4) << prefix;
    EXPECT_LT(guided_err, 1e-4) << prefix;
    // The whole loop from x, consuming the stored noise in order (DDIM with eta 0).
    const torch::Tensor loop_noise = ref_.at(prefix + "_loop_noise");
    torch::Tensor img = x;
    for (int64_t k = 0; k < s.size(); ++k) {
      const torch::Tensor tt = torch::full({x.size(0)}, s.size() - 1 - k, torch::kLong);
      img = prefix == "p" ? p_sample(d, img, tt, loop_noise[k])
                          : ddim_sample(s, d, img, tt, 0.0, loop_noise[k]);
    }
    const double loop_err = rel_error(img, ref_.at(prefix + "_loop_out"));
    std::printf("[parity] %s %s_loop_out rel %.3g\n", GetParam().file.c_str(), prefix.c_str(), loop_err);
    EXPECT_LT(loop_err, 1e-3) << prefix;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, DiffusionParity, ::testing::ValuesIn(unet_files()),
                         [](const auto& info) { return param_name(info.param.file); });

TEST(SpaceTimesteps, AsGuidedDiffusion) {
  EXPECT_EQ(space_timesteps(10, "ddim5"), (std::vector<int64_t>{0, 2, 4, 6, 8}));
  EXPECT_EQ(space_timesteps(300, "10,15,20").size(), 45u);
  EXPECT_EQ(space_timesteps(100, "3"), (std::vector<int64_t>{0, 50, 99}));  // round(49.5) = 50, half to even
  EXPECT_EQ(space_timesteps(4, "").size(), 4u);
  EXPECT_THROW(space_timesteps(10, "ddim7"), Error);
  EXPECT_THROW(space_timesteps(10, "20"), Error);
  EXPECT_THROW(space_timesteps(10, "a,b"), Error);
  EXPECT_THROW(DiffusionSchedule::make("quadratic", 1000, ""), Error);
}

// A model that knows the data is one fixed image x0 predicts the exact noise; every sampler must end at x0.
TEST(Samplers, ReachTheDataOfAClosedFormModel) {
  auto rng = at::detail::createCPUGenerator(5);
  const torch::Tensor x0 = torch::rand({2, 3, 8, 8}, rng) * 1.6 - 0.8;
  for (const std::string schedule : {"linear", "cosine"}) {
    const DiffusionSchedule s = DiffusionSchedule::make(schedule, 1000, "50");
    const ModelFn exact = [&](const torch::Tensor& x, const torch::Tensor& t) {
      const torch::Tensor ab = extract(s.alphas_cumprod, t, x);
      return (x - ab.sqrt() * x0) / (1 - ab).sqrt();
    };
    const Denoiser d = plain_denoiser(s, exact);
    for (Sampler sampler : {Sampler::Ddpm, Sampler::Ddim, Sampler::EulerAncestral}) {
      torch::Tensor x = torch::randn({2, 3, 8, 8}, rng);
      for (int64_t k = s.size() - 1; k >= 0; --k) {
        x = sample_step(sampler, s, d, x, torch::full({2}, k, torch::kLong), 1.0,
                        torch::randn({2, 3, 8, 8}, rng));
      }
      EXPECT_LT(rel_error(x, x0), 1e-4) << schedule << " " << sampler_name(sampler);
    }
  }
  EXPECT_THROW(parse_sampler("plms"), Error);
}

// CLIP guidance on the fixture UNet and the fixture CLIP: the guided sample fits the prompt better than the
// unguided one from the same seed, with every sampler; and a run stopped and resumed gives the same sample.
TEST(DiffusionRun, GuidanceLowersTheClipLossAndResumesExactly) {
  const auto entry = read_json(diffusion_dir() / "diffusion-manifest.json")["models"].begin().value();
  const LoadedUNet unet =
      load_unet((diffusion_dir() / entry["safetensors"].get<std::string>()).string(),
                (diffusion_dir() / entry["flags"].get<std::string>()).string(), torch::kCPU);
  const auto clip_manifest = read_json(fixtures() / "clip" / "clip-manifest.json");
  const std::shared_ptr<LoadedClip> clip = fixture_vit_clip();
  ClipGuideOptions guide_options;
  guide_options.cutouts.cutn = 8;
  const std::string prompt = clip_manifest["prompts"][0].get<std::string>();
  auto guide = std::make_shared<ClipGuide>(std::vector<GuideModel>{{clip, "fixture", 1.0, 0}},
                                           PromptSchedule::parse(prompt, 0, false), std::vector<Prompt>{},
                                           guide_options);
  const DiffusionSchedule s =
      DiffusionSchedule::make(unet.diffusion.noise_schedule, unet.diffusion.steps, "20");
  auto final_loss = [&](const torch::Tensor& image) {
    torch::NoGradGuard no_grad;
    auto rng = make_generator(1234);
    return guide->loss(image, rng).total.item<double>();
  };
  for (Sampler sampler : {Sampler::Ddpm, Sampler::Ddim, Sampler::EulerAncestral}) {
    DiffusionRunOptions options;
    options.sampler = sampler;
    options.width = options.height = unet.image_size;
    options.guidance.clip_guidance_scale = 300;
    options.guidance.tv_scale = options.guidance.range_scale =
        0;  // random weights predict far outside [-1, 1]
    options.guidance.condition_score = sampler != Sampler::Ddpm;
    DiffusionRun unguided(unet.model, s, nullptr, options, std::nullopt, 7),
        guided(unet.model, s, guide, options, std::nullopt, 7);
    TensorMap halfway;
    while (guided.steps_done() < guided.total_steps()) {
      unguided.step();
      guided.step();
      if (guided.steps_done() == guided.total_steps() / 2) halfway = guided.state();
    }
    const double plain = final_loss(unguided.image()), steered = final_loss(guided.image());
    std::printf("[guided] fixture UNet + CLIP, %s: CLIP loss unguided %.4f, guided %.4f\n",
                sampler_name(sampler), plain, steered);
    EXPECT_LT(steered, plain) << sampler_name(sampler);
    DiffusionRun resumed(unet.model, s, guide, options, std::nullopt, 7);
    resumed.load_state(halfway);
    while (resumed.steps_done() < resumed.total_steps()) resumed.step();
    EXPECT_TRUE(torch::equal(resumed.image(), guided.image())) << sampler_name(sampler);
  }
}

TEST(UNet, FlagsThatContradictTheWeightsAreAnError) {
  TempDir dir;
  const auto entry = read_json(diffusion_dir() / "diffusion-manifest.json")["models"].begin().value();
  auto flags = read_json(diffusion_dir() / entry["flags"].get<std::string>());
  flags["model_flags"]["num_res_blocks"] = flags["model_flags"]["num_res_blocks"].get<int64_t>() + 1;
  write_bytes(dir / "bad.json", flags.dump());
  const std::string weights = (diffusion_dir() / entry["safetensors"].get<std::string>()).string();
  EXPECT_THROW(load_unet(weights, (dir / "bad.json").string(), torch::kCPU), Error);
  const auto vqgan = read_json(fixtures() / "vqgan" / "vqgan-manifest.json")["models"].begin().value();
  EXPECT_THROW(
      load_unet((fixtures() / "vqgan" / vqgan["safetensors"].get<std::string>()).string(), "", torch::kCPU),
      Error);
}

}  // namespace
}  // namespace clipguide::test
