// Parity with diffusers' Stable Diffusion schedulers (tools/make_sd_fixtures.py): each case's timesteps,
// sigmas and starting noise scale, then a whole run of steps from stored model outputs (and the noise the
// stochastic steps drew), checked step by step against what diffusers computed. Every count, shape and value
// comes from the fixture files (CLIPGUIDE_SD_FIXTURES, default tests/data/sd).
#include "core/error.h"
#include "fixtures.h"
#include "generators/sd_scheduler.h"
#include "generators/stable_diffusion.h"
#include "generators/unet.h"
#include "generators/vqgan.h"
#include "guidance/clip_guide.h"

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
  const std::string path =
      (sd_fixtures() / m[GetParam() == "folder" ? "vae_folder" : "vae_single_file"].get<std::string>())
          .string();
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

// Each entry of a manifest section (unets, pipelines) from its diffusers folder, and from its single file
// (with its yaml) where it has one: "NAME/folder", "NAME/single_file".
std::vector<std::string> folder_and_single_file(const char* section) {
  std::vector<std::string> out;
  for (const auto& [name, entry] : sd_manifest()[section].items()) {
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
  const std::string yaml =
      folder ? "" : (sd_fixtures() / entry["original_config"].get<std::string>()).string();
  const LoadedUNet unet = load_sd_unet(path, yaml, torch::kCPU);
  const TensorMap ref = reference(sd_fixtures() / m["reference"].get<std::string>());
  const auto at = [&](const std::string& key) { return ref.at(name + "/" + key); };
  torch::NoGradGuard no_grad;
  const torch::Tensor out = unet.model->forward(at("x"), at("t"), {}, {}, at("context"));
  EXPECT_LT(rel_error(out, at("out")), 1e-5) << unet.model->config().describe();
}

INSTANTIATE_TEST_SUITE_P(Fixtures, SdUnet, ::testing::ValuesIn(folder_and_single_file("unets")),
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
  const std::filesystem::path folder = sd_fixtures() / sd_manifest()["vae_folder"].get<std::string>();
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

// ---- whole pipelines ----

struct PipelineCase {
  std::string name;
  bool folder = true;
  const nlohmann::json& entry() const { return sd_manifest()["pipelines"][name]; }
  std::shared_ptr<const StableDiffusion> load(const std::string& scheduler = "") const {
    const nlohmann::json& e = entry();
    const std::filesystem::path dir = sd_fixtures() / e["folder"].get<std::string>();
    if (folder) {
      return std::make_shared<StableDiffusion>(
          load_stable_diffusion(dir.string(), "", "", scheduler, torch::kCPU));
    }
    return std::make_shared<StableDiffusion>(
        load_stable_diffusion((sd_fixtures() / e["single_file"].get<std::string>()).string(),
                              (sd_fixtures() / e["original_config"].get<std::string>()).string(),
                              (dir / "tokenizer").string(), scheduler, torch::kCPU));
  }
  torch::Tensor at(const std::string& key) const {
    static const TensorMap ref = reference(sd_fixtures() / sd_manifest()["reference"].get<std::string>());
    return ref.at(name + "/" + key);
  }
};

PipelineCase pipeline_case(const std::string& param) {
  return {param.substr(0, param.find('/')), param.find("/folder") != std::string::npos};
}

class SdPipeline : public ::testing::TestWithParam<std::string> {};

TEST_P(SdPipeline, EncodesPromptsAsDiffusers) {
  const PipelineCase c = pipeline_case(GetParam());
  const auto sd = c.load();
  const std::vector<std::string> prompts = {c.entry()["prompt"], c.entry()["negative"]};
  const torch::Tensor tokens =
      sd->tokenizer->tokenize(prompts, sd->text_encoder->config().context_length, false);
  EXPECT_TRUE(torch::equal(tokens, c.at("tokens").to(torch::kLong))) << tokens << c.at("tokens");
  const torch::Tensor states = sd->encode_prompts(prompts, false);
  EXPECT_LT(rel_error(states.narrow(0, 0, 1), c.at("cond")), 1e-5) << sd->describe();
  EXPECT_LT(rel_error(states.narrow(0, 1, 1), c.at("uncond")), 1e-5);
}

// Four steps of the folder's scheduler with classifier-free guidance and a negative prompt, from the stored
// starting noise: the latents and the decoded image as diffusers' StableDiffusionPipeline made them. The
// single files carry no scheduler; they are given the folder's.
TEST_P(SdPipeline, SamplesWithClassifierFreeGuidanceAsDiffusers) {
  const PipelineCase c = pipeline_case(GetParam());
  std::string scheduler = c.entry()["scheduler"].get<std::string>();
  scheduler = scheduler == "PNDMScheduler"            ? "pndm"
              : scheduler == "EulerDiscreteScheduler" ? "euler"
                                                      : scheduler;
  auto sd = std::make_shared<StableDiffusion>(*c.load(scheduler));
  if (!c.folder) {  // the folder's noise schedule
    const std::filesystem::path config =
        sd_fixtures() / c.entry()["folder"].get<std::string>() / "scheduler" / "scheduler_config.json";
    sd->scheduler_config = read_sd_scheduler_config(read_bytes(config), config.string(), sd->scheduler);
  }
  const torch::Tensor states = sd->encode_prompts({c.entry()["prompt"], c.entry()["negative"]}, false);
  SdRunOptions options;
  options.steps = c.entry()["steps"].get<int64_t>();
  options.cfg_scale = c.entry()["cfg_scale"].get<double>();
  options.width = options.height = c.entry()["image_size"].get<int64_t>();
  SdRun run(sd, states.narrow(0, 0, 1), states.narrow(0, 1, 1), nullptr, options, std::nullopt, 0);
  run.start_from(c.at("start"));
  while (run.steps_done() < run.total_steps()) run.step();
  EXPECT_LT(rel_error(run.latents(), c.at("sampled")), 1e-4) << run.describe();
  EXPECT_LT(rel_error(run.image(), (c.at("image") / 2 + 0.5).clamp(0, 1)), 1e-4);

  // Image to image: the stored image at the stored strength, from the draws diffusers' generator made.
  options.strength = c.entry()["strength"].get<double>();
  SdRun refine(sd, states.narrow(0, 0, 1), states.narrow(0, 1, 1), nullptr, options, c.at("init"), 0);
  refine.start_from(c.at("add_noise"), c.at("posterior_noise"));
  EXPECT_LT(refine.total_steps(), options.steps);
  while (refine.steps_done() < refine.total_steps()) refine.step();
  EXPECT_LT(rel_error(refine.latents(), c.at("refined")), 1e-4) << refine.describe();
}

// A story prompt conditions the UNet segment by segment: its first `every` steps are the first prompt's run,
// the rest the second prompt's run resumed from there. Blended, the steps between differ from both.
TEST(SdStory, EachSegmentConditionsItsOwnSteps) {
  const PipelineCase c{sd_manifest()["pipelines"].begin().key(), true};
  const auto sd = c.load("ddim");
  const torch::Tensor states =
      sd->encode_prompts({c.entry()["prompt"], c.entry()["negative"], ""}, false);  // a, b, unconditional
  const torch::Tensor uncond = states.narrow(0, 2, 1);
  SdRunOptions one;
  one.steps = c.entry()["steps"].get<int64_t>();
  one.cfg_scale = c.entry()["cfg_scale"].get<double>();
  one.width = one.height = c.entry()["image_size"].get<int64_t>();
  ASSERT_GE(one.steps, 2);
  SdRunOptions options = one;
  options.story.segments.resize(2);
  options.story.every = one.steps / 2;
  SdRun story(sd, states.narrow(0, 0, 2), uncond, nullptr, options, std::nullopt, 0);
  SdRun first(sd, states.narrow(0, 0, 1), uncond, nullptr, one, std::nullopt, 0);
  SdRun second(sd, states.narrow(0, 1, 1), uncond, nullptr, one, std::nullopt, 0);
  while (story.steps_done() < options.story.every) {
    story.step();
    first.step();
  }
  EXPECT_LT(rel_error(story.latents(), first.latents()), 1e-6);
  second.load_state(first.state());
  while (story.steps_done() < story.total_steps()) {
    story.step();
    second.step();
  }
  EXPECT_LT(rel_error(story.latents(), second.latents()), 1e-6);
  while (first.steps_done() < first.total_steps()) first.step();
  EXPECT_GT(rel_error(story.latents(), first.latents()), 1e-3);  // the second prompt made a difference

  options.story.blend = true;
  SdRun blended(sd, states.narrow(0, 0, 2), uncond, nullptr, options, std::nullopt, 0);
  while (blended.steps_done() < blended.total_steps()) blended.step();
  if (options.story.every > 1) EXPECT_GT(rel_error(blended.latents(), story.latents()), 1e-6);
  EXPECT_THROW(SdRun(sd, states.narrow(0, 0, 1), uncond, nullptr, options, std::nullopt, 0), Error);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, SdPipeline, ::testing::ValuesIn(folder_and_single_file("pipelines")),
                         [](const auto& info) { return param_name(info.param); });

// One CLIP-guided DDIM step against the community pipeline's cond_fn with the same (one, whole-image) cutout:
// the latents' gradient, the guided prediction and the step's result. Then the cheaper ways agree with it:
// the checkpointed decoder exactly, decoder-only guidance in direction.
TEST(SdGuidance, OneGuidedStepAsTheCommunityPipeline) {
  const nlohmann::json& g = sd_manifest()["guided"];
  const nlohmann::json& pipe = sd_manifest()["pipelines"]["sd1"];
  const TensorMap ref = reference(sd_fixtures() / sd_manifest()["reference"].get<std::string>());
  const auto sd = std::make_shared<StableDiffusion>(
      load_stable_diffusion((sd_fixtures() / pipe["folder"].get<std::string>()).string(), "", "",
                            g["scheduler"].get<std::string>(), torch::kCPU));
  LoadOptions clip_options;
  clip_options.vocab = (fixtures() / "tokenizer" / "hf-tokenizer").string();
  GuideModel model{std::make_shared<LoadedClip>(load_clip(
                       (fixtures() / "clip" / g["clip"].get<std::string>()).string(), clip_options)),
                   "clip", 1.0, 0};
  ClipGuideOptions guide_options;
  guide_options.cutouts.cutn = 1;
  guide_options.cutouts.overview = true;
  guide_options.cutouts.augments = {};
  const auto guide = std::make_shared<ClipGuide>(std::vector<GuideModel>{model},
                                                 PromptSchedule::parse(g["prompt"], 0, false),
                                                 std::vector<Prompt>{}, guide_options);
  const torch::Tensor states = sd->encode_prompts({g["prompt"], g["negative"]}, false);
  SdRunOptions options;
  options.steps = g["steps"].get<int64_t>();
  options.cfg_scale = g["cfg_scale"].get<double>();
  options.clip_guidance_scale = g["clip_guidance_scale"].get<double>();
  options.width = options.height = pipe["image_size"].get<int64_t>();
  const auto at_step = [&](SdRunOptions o) {
    auto run = std::make_unique<SdRun>(sd, states.narrow(0, 0, 1), states.narrow(0, 1, 1), guide, o,
                                       std::nullopt, 0);
    TensorMap state = run->state();
    state["sd.x"] = ref.at("guided/latents");
    state["sd.steps_done"] = torch::tensor({g["step"].get<int64_t>()});
    run->load_state(state);
    return run;
  };
  auto run = at_step(options);
  const SdRun::Prediction p = run->predict();
  ASSERT_TRUE(p.grad.defined());
  EXPECT_LT(rel_error(p.grad, ref.at("guided/grad")), 1e-4) << rel_error(p.grad, ref.at("guided/grad"));
  EXPECT_LT(rel_error(p.output, ref.at("guided/noise_guided")), 1e-4);
  EXPECT_NEAR(p.loss.total.sum().item<double>(), ref.at("guided/loss").item<double>(),
              1e-4 * std::abs(ref.at("guided/loss").item<double>()));
  auto stepped = at_step(options);
  stepped->step();
  EXPECT_LT(rel_error(stepped->latents(), ref.at("guided/prev")), 1e-4);

  options.vae_checkpointing = true;
  EXPECT_LT(rel_error(at_step(options)->predict().grad, p.grad), 1e-5);
  options.vae_checkpointing = false;
  options.guide_grad = SdGuideGrad::DecoderOnly;
  const torch::Tensor cheap = at_step(options)->predict().grad;
  const double cos = torch::cosine_similarity(cheap.flatten(), p.grad.flatten(), 0).item<double>();
  EXPECT_GT(cos, 0.0) << "decoder-only guidance points away from the full gradient";
  options.guide_grad = SdGuideGrad::Full;
  options.guide_every = 2;  // step 1 of every 2: not guided
  EXPECT_FALSE(at_step(options)->predict().grad.defined());
}

// A single file's yaml, when none is given, is its namesake beside it (the tiny fixtures need theirs: their
// attention heads are not SD's).
TEST(SdPipelineFiles, ReadsTheYamlBesideASingleFile) {
  namespace fs = std::filesystem;
  for (const auto& item : sd_manifest()["pipelines"].items()) {
    const nlohmann::json& e = item.value();
    if (!e.contains("single_file")) continue;
    const fs::path file = sd_fixtures() / e["single_file"].get<std::string>();
    const fs::path yaml = sd_fixtures() / e["original_config"].get<std::string>();
    const std::string tokenizer = (sd_fixtures() / e["folder"].get<std::string>() / "tokenizer").string();
    const auto load = [&](const fs::path& weights, const fs::path& config) {
      return load_stable_diffusion(weights.string(), config.string(), tokenizer, "ddim", torch::kCPU);
    };
    const StableDiffusion given = load(file, yaml);
    TempDir dir;
    const fs::path linked = dir / ("model" + file.extension().string());
    fs::create_symlink(fs::absolute(file), linked);
    fs::copy_file(yaml, dir / "model.yaml");
    const StableDiffusion beside = load(linked, "");
    EXPECT_EQ(beside.scheduler_config.prediction_type, given.scheduler_config.prediction_type) << item.key();
    EXPECT_EQ(beside.text_skip_layers, given.text_skip_layers) << item.key();
    EXPECT_EQ(beside.files.back(), (dir / "model.yaml").string());
  }
}

TEST(SdPipelineFiles, RefusesWhatItCannotRun) {
  const nlohmann::json& pipe = sd_manifest()["pipelines"]["sd1"];
  const std::filesystem::path folder = sd_fixtures() / pipe["folder"].get<std::string>();
  TempDir dir;
  std::filesystem::copy(folder, dir / "sd", std::filesystem::copy_options::recursive);
  // SDXL: refused by name.
  nlohmann::json index = read_json(folder / "model_index.json");
  index["text_encoder_2"] = {"transformers", "CLIPTextModelWithProjection"};
  write_bytes(dir / "sd" / "model_index.json", index.dump());
  EXPECT_THROW(load_stable_diffusion((dir / "sd").string(), "", "", "", torch::kCPU), Error);
  // A scheduler class not run here: the error names it, and --scheduler chooses another.
  write_bytes(dir / "sd" / "model_index.json", read_bytes(folder / "model_index.json"));
  nlohmann::json scheduler = read_json(folder / "scheduler" / "scheduler_config.json");
  scheduler["_class_name"] = "LMSDiscreteScheduler";
  write_bytes(dir / "sd" / "scheduler" / "scheduler_config.json", scheduler.dump());
  try {
    load_stable_diffusion((dir / "sd").string(), "", "", "", torch::kCPU);
    ADD_FAILURE() << "loaded a pipeline with an LMS scheduler";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("LMSDiscreteScheduler"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(load_stable_diffusion((dir / "sd").string(), "", "", "ddim", torch::kCPU));
  // A text encoder of another width than the UNet attends to.
  EXPECT_THROW(load_stable_diffusion(
                   (sd_fixtures() / sd_manifest()["unets"]["sd1"]["single_file"].get<std::string>()).string(),
                   "", (sd_fixtures() / "schedulers.safetensors").string(), "", torch::kCPU),
               Error);
  // A file that is not a whole Stable Diffusion checkpoint.
  EXPECT_THROW(
      load_stable_diffusion((sd_fixtures() / "schedulers.safetensors").string(), "", "", "", torch::kCPU),
      Error);
}

}  // namespace
}  // namespace clipguide::test
