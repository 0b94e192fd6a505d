// Ref: huggingface/diffusers pipelines/stable_diffusion/pipeline_stable_diffusion.py (encode_prompt,
// prepare_latents, the denoising loop), pipeline_stable_diffusion_img2img.py (get_timesteps,
// prepare_latents), examples/community/clip_guided_stable_diffusion.py (cond_fn);
// loaders/single_file_utils.py (the CompVis names); Stability-AI/stablediffusion
// ldm/modules/encoders/modules.py (FrozenOpenCLIPEmbedder's layers).
#include "generators/stable_diffusion.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "clip/load.h"
#include "core/device.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/json_fields.h"
#include "core/random.h"
#include "guidance/clip_guide.h"
#include "io/checkpoint.h"

namespace fs = std::filesystem;

namespace clipguide {

namespace {

// diffusers' scheduler classes -> ours (DPM++ 2M with Karras sigmas when the config asks for them).
SdSchedulerKind kind_of_class(const std::string& cls, bool karras, const std::string& where) {
  if (cls == "DDIMScheduler") return SdSchedulerKind::Ddim;
  if (cls == "PNDMScheduler") return SdSchedulerKind::Pndm;
  if (cls == "EulerDiscreteScheduler") return SdSchedulerKind::Euler;
  if (cls == "EulerAncestralDiscreteScheduler") return SdSchedulerKind::EulerAncestral;
  if (cls == "DPMSolverMultistepScheduler")
    return karras ? SdSchedulerKind::DpmSolver2MKarras : SdSchedulerKind::DpmSolver2M;
  fail(where, ": the scheduler class '", cls, "' is not one run here; choose one with --scheduler (",
       names_of(kSdSchedulers), ")");
}

// The latent diffusion yaml's settings that the weights cannot tell.
struct OriginalConfig {
  bool v_prediction = false;
  std::string text_layer;  // FrozenOpenCLIPEmbedder's layer: "penultimate" or "last"; empty: not given
};

OriginalConfig read_original_config(const std::string& path) {
  OriginalConfig out;
  if (path.empty()) return out;
  try {
    const YAML::Node params = YAML::Load(read_small_file(path, kMaxConfigBytes))["model"]["params"];
    if (!params.IsMap()) fail(path, ": no model.params (latent diffusion's config)");
    if (params["parameterization"]) {
      const std::string p = params["parameterization"].as<std::string>();
      if (p != "eps" && p != "v") fail(path, ": parameterization '", p, "' is not eps or v");
      out.v_prediction = p == "v";
    }
    const YAML::Node cond = params["cond_stage_config"];
    if (cond && cond["params"] && cond["params"]["layer"]) {
      out.text_layer = cond["params"]["layer"].as<std::string>();
      if (out.text_layer != "penultimate" && out.text_layer != "last")
        fail(path, ": cond_stage_config layer '", out.text_layer, "' is not penultimate or last");
    }
  } catch (const YAML::Exception& e) {
    fail(path, ": not a readable latent diffusion config: ", e.msg);
  }
  return out;
}

// Stable Diffusion's training noise schedule, as its scheduler_config.json writes it: what a single file,
// which carries none, is sampled with.
std::string default_scheduler_json(bool v_prediction) {
  return nlohmann::json{{"beta_start", 0.00085},
                        {"beta_end", 0.012},
                        {"beta_schedule", "scaled_linear"},
                        {"num_train_timesteps", 1000},
                        {"set_alpha_to_one", false},
                        {"skip_prk_steps", true},
                        {"steps_offset", 1},
                        {"clip_sample", false},
                        {"prediction_type", v_prediction ? "v_prediction" : "epsilon"}}
      .dump();
}

std::shared_ptr<const Tokenizer> read_tokenizer(const std::string& path, const ClipModel& text) {
  auto tokenizer = std::make_shared<Tokenizer>(Tokenizer::from_path(path));
  if (tokenizer->max_id() >= text.config().vocab_size) {
    fail(path, ": vocabulary has ids up to ", tokenizer->max_id(),
         " but the text encoder's token embedding has ", text.config().vocab_size,
         " rows; it is not this model's vocabulary");
  }
  return tokenizer;
}

}  // namespace

int64_t StableDiffusion::factor() const { return vae->config().factor(); }

int64_t StableDiffusion::latent_channels() const { return vae->config().embed_dim; }

int64_t StableDiffusion::size_multiple() const {
  return factor() << (unet->config().channel_mult.size() - 1);
}

torch::Tensor StableDiffusion::encode_prompts(const std::vector<std::string>& prompts, bool truncate) const {
  const torch::NoGradGuard no_grad;
  const torch::Tensor tokens = tokenizer->tokenize(prompts, text_encoder->config().context_length, truncate);
  const torch::Device device = text_encoder->parameters().front().device();
  return text_encoder->encode_text_states(tokens.to(device), text_skip_layers).to(torch::kFloat);
}

std::string StableDiffusion::describe() const {
  return cat(unet->config().describe(), ", VAE f", factor(), ", ", text_encoder->config().architecture(),
             text_skip_layers > 0 ? " (penultimate layer)" : "");
}

StableDiffusion load_stable_diffusion(const std::string& path, const std::string& original_config,
                                      const std::string& tokenizer, const std::string& scheduler,
                                      torch::Device device) {
  StableDiffusion sd;
  sd.path = path;
  std::error_code ec;
  const bool folder = fs::is_directory(path, ec);
  LoadOptions text_options;
  text_options.device = device;
  std::string scheduler_json, scheduler_where, scheduler_class;
  bool karras = false;
  std::string vocabulary = tokenizer;
  bool open_clip_text = false;  // a single file's SD 2.x text tower (its tokenizer pads with 0)
  if (folder) {
    const fs::path dir(path);
    const std::string index = (dir / "model_index.json").string();
    if (!fs::exists(index, ec)) fail(path, ": not a diffusers Stable Diffusion folder (no model_index.json)");
    const nlohmann::json j =
        parse_json_object(read_small_file(index, kMaxConfigBytes), path, "model_index.json");
    if (j.contains("text_encoder_2") || j.contains("add_embedding"))
      fail(path, ": an SDXL pipeline (text_encoder_2) is not supported; Stable Diffusion 1.x and 2.x are");
    for (const char* part : {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}) {
      if (!fs::is_directory(dir / part, ec)) fail(path, ": the pipeline has no ", part, "/ folder");
    }
    LoadedUNet unet = load_sd_unet((dir / "unet").string(), "", device);
    LoadedVae vae = load_vae((dir / "vae").string(), device);
    Checkpoint text = read_checkpoint((dir / "text_encoder").string());
    sd.files = {unet.path, vae.path, text.path};
    sd.unet = unet.model;
    sd.vae = vae.model;
    sd.scaling_factor = vae.scaling_factor;
    sd.text_encoder = clip_model_from_tensors(std::move(text.tensors), text.configs, text.path, text_options);
    if (vocabulary.empty()) vocabulary = (dir / "tokenizer").string();
    scheduler_where = (dir / "scheduler" / "scheduler_config.json").string();
    scheduler_json = read_small_file(scheduler_where, kMaxConfigBytes);
    const nlohmann::json s = parse_json_object(scheduler_json, path, "scheduler/scheduler_config.json");
    read_field(s, "_class_name", scheduler_class, scheduler_where);
    read_field(s, "use_karras_sigmas", karras, scheduler_where);
  } else {
    // The yaml given, else the file's namesake beside it (model.yaml for model.ckpt, as the web UIs keep
    // them).
    std::string yaml = original_config;
    if (yaml.empty()) {
      const fs::path beside = fs::path(path).replace_extension(".yaml");
      if (fs::is_regular_file(beside, ec)) yaml = beside.string();
    }
    const OriginalConfig original = read_original_config(yaml);
    Checkpoint ckpt = read_checkpoint(path);
    for (const char* prefix : {"model.diffusion_model.", "first_stage_model.", "cond_stage_model."}) {
      if (!has_prefix(ckpt.tensors, prefix))
        fail(path, ": not a single-file Stable Diffusion checkpoint (no ", prefix, "* weights)");
    }
    // SD 1.x: transformers' CLIPTextModel (QuickGELU, every layer); SD 2.x: open_clip's text tower (GELU),
    // which latent diffusion's FrozenOpenCLIPEmbedder reads at its penultimate layer.
    TensorMap text;
    if (has_prefix(ckpt.tensors, "cond_stage_model.transformer.")) {
      text = tensors_under(ckpt.tensors, "cond_stage_model.transformer.");
      text_options.activation = "quick_gelu";
    } else if (has_prefix(ckpt.tensors, "cond_stage_model.model.")) {
      text = tensors_under(ckpt.tensors, "cond_stage_model.model.");
      text.erase("logit_scale");  // scores nothing here
      text_options.activation = "gelu";
      open_clip_text = true;
      sd.text_skip_layers = original.text_layer == "last" ? 0 : 1;
    } else {
      fail(path, ": its cond_stage_model is neither SD 1.x's (cond_stage_model.transformer.*) nor SD 2.x's ",
           "(cond_stage_model.model.*) text tower");
    }
    sd.text_encoder =
        clip_model_from_tensors(std::move(text), {}, path + " (cond_stage_model)", text_options);
    if (open_clip_text && yaml.empty()) {
      warn(path,
           ": an SD 2.x file without its yaml is read as epsilon-prediction (the 512 base models); the 768 ",
           "v-prediction ones need v2-inference-v.yaml (--sd-config, or beside the file as ",
           fs::path(path).stem().string(), ".yaml)");
    }
    LoadedUNet unet = load_sd_unet(ckpt, yaml, device);
    LoadedVae vae = load_vae(ckpt, device);
    sd.files = {ckpt.path};
    if (!yaml.empty()) sd.files.push_back(yaml);
    sd.unet = unet.model;
    sd.vae = vae.model;
    sd.scaling_factor = vae.scaling_factor;
    if (vocabulary.empty()) vocabulary = find_vocab("", path, ModelFamily::Clip);
    if (vocabulary.empty()) {
      fail(path, ": no tokenizer vocabulary beside the file or in ~/.cache/clip; give one (CLIP's ",
           "bpe_simple_vocab_16e6.txt.gz, or a folder with vocab.json and merges.txt)");
    }
    scheduler_where = path;
    scheduler_json = default_scheduler_json(original.v_prediction);
    scheduler_class = "DDIMScheduler";
    sd.tokenizer = read_tokenizer(vocabulary, *sd.text_encoder);
    // As their tokenizers pad: SD 1.x's CLIPTokenizer with the end token, open_clip's with 0.
    sd.tokenizer =
        std::make_shared<Tokenizer>(sd.tokenizer->with_pad_id(open_clip_text ? 0 : sd.tokenizer->eot()));
  }
  if (!sd.tokenizer) sd.tokenizer = read_tokenizer(vocabulary, *sd.text_encoder);
  sd.scheduler = scheduler.empty() ? kind_of_class(scheduler_class, karras, scheduler_where)
                                   : parse_sd_scheduler(scheduler);
  sd.scheduler_config = read_sd_scheduler_config(scheduler_json, scheduler_where, sd.scheduler);
  // The parts must fit together.
  const int64_t text_width = sd.text_encoder->config().transformer_width;
  if (sd.unet->config().context_dim != text_width) {
    fail(path, ": the UNet attends to ", sd.unet->config().context_dim,
         "-d text states but the text encoder gives ", text_width, "-d ones");
  }
  if (sd.unet->config().in_channels != sd.latent_channels()) {
    fail(path, ": the UNet takes ", sd.unet->config().in_channels, " latent channels but the VAE makes ",
         sd.latent_channels());
  }
  for (auto& p : sd.text_encoder->parameters()) p.requires_grad_(false);
  for (auto& p : sd.unet->parameters()) p.requires_grad_(false);
  for (auto& p : sd.vae->parameters()) p.requires_grad_(false);
  return sd;
}

// ---- sampling ----

void SdRunOptions::validate() const {
  if (steps < 1 || steps > 1000) fail("steps must be between 1 and 1000 (got ", steps, ")");
  if (!(eta >= 0) || !std::isfinite(eta)) fail("eta must be zero or positive (got ", eta, ")");
  if (!std::isfinite(cfg_scale) || cfg_scale < 0)
    fail("cfg_scale must be zero or positive (got ", cfg_scale, ")");
  if (!(strength > 0 && strength <= 1)) fail("strength must be in (0, 1] (got ", strength, ")");
  if (!std::isfinite(clip_guidance_scale) || clip_guidance_scale < 0)
    fail("clip_guidance_scale must be zero or positive (got ", clip_guidance_scale, ")");
  if (guide_every < 1) fail("guide_every must be at least 1 (got ", guide_every, ")");
  if (cutn_batches < 1 || cutn_batches > 1024)
    fail("cutn_batches must be between 1 and 1024 (got ", cutn_batches, ")");
  if (!(grad_clamp >= 0) || !std::isfinite(grad_clamp)) fail("grad_clamp must be zero (off) or positive");
  if (batch < 1 || batch > 1024) fail("a batch must hold 1 to 1024 samples (got ", batch, ")");
}

int64_t sd_calls_run(const StableDiffusion& model, const SdRunOptions& options, bool init) {
  SdScheduler scheduler(model.scheduler, model.scheduler_config);
  scheduler.set_timesteps(options.steps);
  const auto calls = static_cast<int64_t>(scheduler.timesteps().size());
  if (!init) return calls;
  // The last int(steps * strength) steps run over the noised init image.
  const int64_t kept =
      std::min(static_cast<int64_t>(static_cast<double>(options.steps) * options.strength), options.steps);
  if (kept < 1)
    fail("strength ", options.strength, " of ", options.steps, " steps runs no step; raise either");
  return calls - (options.steps - kept);
}

SdRun::SdRun(std::shared_ptr<const StableDiffusion> model, torch::Tensor cond, torch::Tensor uncond,
             std::shared_ptr<const ClipGuide> guide, SdRunOptions options,
             const std::optional<torch::Tensor>& init, uint64_t seed)
    : model_(std::move(model)),
      guide_(std::move(guide)),
      options_(options),
      scheduler_(model_->scheduler, model_->scheduler_config),
      rng_(make_generator(seed)),
      cut_rng_(make_generator(seed ^ 0x9e3779b97f4a7c15ULL)) {
  options_.validate();
  const int64_t f = model_->factor(), multiple = model_->size_multiple();
  if (options_.width % multiple != 0 || options_.height % multiple != 0) {
    fail("Stable Diffusion image size ", options_.width, "x", options_.height, " is not a multiple of ",
         multiple, " (the VAE's factor ", f, " times the UNet's ", multiple / f, ")");
  }
  if (options_.clip_guidance_scale > 0 && !guide_) fail("CLIP guidance needs a CLIP model and a prompt");
  const torch::Device device = model_->unet->parameters().front().device();
  const int64_t segments = std::max<int64_t>(static_cast<int64_t>(options_.story.segments.size()), 1);
  if (cond.dim() != 3 || cond.size(0) != segments)
    fail("Stable Diffusion's text states must be [", segments, ", L, D], one row per prompt segment");
  cond_ = cond.to(device, torch::kFloat);
  uncond_ = uncond.to(device, torch::kFloat).expand({options_.batch, -1, -1});
  scheduler_.set_timesteps(options_.steps);
  first_ =
      static_cast<int64_t>(scheduler_.timesteps().size()) - sd_calls_run(*model_, options_, init.has_value());
  if (init) {
    const torch::NoGradGuard no_grad;
    const AutoencoderKL::Posterior posterior = model_->vae->encode(init->to(device, torch::kFloat) * 2 - 1);
    init_latents_mean_ = posterior.mean;
    init_latents_std_ = (0.5 * posterior.logvar).exp();
  }
  const std::vector<int64_t> shape = {options_.batch, model_->latent_channels(), options_.height / f,
                                      options_.width / f};
  const torch::Tensor posterior_noise = init ? torch::randn(shape, rng_) : torch::Tensor();
  start_from(torch::randn(shape, rng_), posterior_noise);
}

void SdRun::start_from(const torch::Tensor& noise, const torch::Tensor& posterior_noise) {
  const torch::NoGradGuard no_grad;
  const torch::Device device = cond_.device();
  const torch::Tensor n = noise.to(device, torch::kFloat);
  if (!init_latents_mean_.defined()) {
    x_ = n * scheduler_.init_noise_sigma();
  } else {
    if (!posterior_noise.defined()) fail("an init image's start needs the posterior's noise too");
    const torch::Tensor latents =
        (init_latents_mean_ + init_latents_std_ * posterior_noise.to(device, torch::kFloat)) *
        model_->scaling_factor;
    // The scheduler's add_noise at the first step run.
    if (scheduler_.sigma_space()) {
      x_ = latents + n * scheduler_.sigma(first_);
    } else {
      const double a = scheduler_.alpha_bar_at(first_);
      x_ = latents * std::sqrt(a) + n * std::sqrt(1 - a);
    }
  }
  steps_done_ = 0;
  preview_ = torch::Tensor();
}

torch::Tensor SdRun::unet(const torch::Tensor& x, int64_t i, const torch::Tensor& context) const {
  const torch::Tensor t = torch::full({x.size(0)}, scheduler_.timesteps()[static_cast<size_t>(i)],
                                      x.options().dtype(torch::kFloat));
  const Autocast mixed(x.device(), options_.unet_dtype, options_.unet_dtype != torch::kFloat);
  return model_->unet->forward(scheduler_.scale_model_input(x, i), t, {}, {}, context).to(torch::kFloat);
}

torch::Tensor SdRun::cond_at(int64_t step) const {
  const PromptSchedule::Position at = options_.story.at(step);
  torch::Tensor c = cond_[static_cast<int64_t>(at.segment)];
  if (at.toward_next > 0) c = torch::lerp(c, cond_[static_cast<int64_t>(at.segment) + 1], at.toward_next);
  return c.unsqueeze(0).expand({options_.batch, -1, -1});
}

std::pair<torch::Tensor, torch::Tensor> SdRun::halves(const torch::Tensor& x, int64_t i) const {
  const torch::NoGradGuard no_grad;
  const torch::Tensor cond = cond_at(steps_done_);
  if (options_.cfg_scale <= 1) return {torch::Tensor(), unet(x, i, cond)};
  // The unconditional and conditional predictions from one batch, in diffusers' order.
  const torch::Tensor both = unet(torch::cat({x, x}), i, torch::cat({uncond_, cond}));
  const int64_t B = x.size(0);
  return {both.narrow(0, 0, B), both.narrow(0, B, B)};
}

torch::Tensor SdRun::guided_by_cfg(const torch::Tensor& uncond, const torch::Tensor& cond) const {
  return uncond.defined() ? uncond + options_.cfg_scale * (cond - uncond) : cond;
}

SdRun::Prediction SdRun::predict() {
  if (steps_done_ >= total_steps()) fail("the sampler has finished");
  const int64_t i = first_ + steps_done_;
  const bool guided = guide_ && options_.clip_guidance_scale > 0 && steps_done_ % options_.guide_every == 0;
  Prediction p;
  if (!guided) {
    const auto [uncond, cond] = halves(x_, i);
    p.output = guided_by_cfg(uncond, cond);
    preview_ = scheduler_.predict_original(p.output, i, x_);
    return p;
  }
  // CLIP guidance (the community pipeline's cond_fn): x_0 from the conditional prediction, decoded, scored.
  const torch::AutoGradMode enable(true);
  const torch::Tensor x = x_.detach().requires_grad_(true);
  torch::Tensor cond_output;
  if (options_.guide_grad == SdGuideGrad::Full) {
    // The conditional prediction with its graph for the backward pass, the unconditional one without: two
    // UNet passes, where the community pipeline runs a third for the gradient.
    cond_output = unet(x, i, cond_at(steps_done_));
    torch::Tensor uncond_output;
    if (options_.cfg_scale > 1) {
      const torch::NoGradGuard no_grad;
      uncond_output = unet(x_, i, uncond_);
    }
    p.output = guided_by_cfg(uncond_output, cond_output.detach());
  } else {
    // Decoder only: the UNet's prediction is a constant of the latents.
    const auto [uncond, cond] = halves(x_, i);
    p.output = guided_by_cfg(uncond, cond);
    cond_output = cond;
  }
  const torch::Tensor x0 = scheduler_.predict_original(cond_output, i, x);
  torch::Tensor sample = x0;
  if (!scheduler_.sigma_space()) {
    const double fac = std::sqrt(1 - scheduler_.alpha_bar_at(i));
    sample = x0 * fac + x * (1 - fac);
  }
  const torch::Tensor z = sample / model_->scaling_factor;
  torch::Tensor decoded;
  {
    // Checkpointed, the decoder keeps no graph: decode_backward runs it again below.
    const torch::AutoGradMode graph(!options_.vae_checkpointing);
    decoded = model_->vae->decode(z);
  }
  // The CLIP loss's gradient on the decoded pixels, one cutout batch at a time.
  const torch::Tensor pixels = decoded.detach().requires_grad_(true);
  const torch::Tensor images = (pixels / 2 + 0.5).clamp(0, 1);
  auto [images_grad, summary] =
      guide_->gradient(images, cut_rng_, steps_done_, options_.clip_guidance_scale, options_.cutn_batches);
  const torch::Tensor grad_pixels =
      torch::autograd::grad({images}, {pixels}, {images_grad.to(images.scalar_type())})[0];
  torch::Tensor grad;
  if (options_.vae_checkpointing) {
    grad = torch::autograd::grad({z}, {x}, {model_->vae->decode_backward(z.detach(), grad_pixels)})[0];
  } else {
    grad = torch::autograd::grad({decoded}, {x}, {grad_pixels})[0];
  }
  p.grad = -clamp_grad_rms(grad, options_.grad_clamp);
  p.loss = summary;
  // The gradient moves the prediction (DDIM-like) or the latents (Euler-like, in step()).
  if (!scheduler_.sigma_space()) {
    const double a = scheduler_.alpha_bar_at(i);
    const double scale = model_->scheduler_config.prediction_type == "v_prediction" ? std::sqrt((1 - a) / a)
                                                                                    : std::sqrt(1 - a);
    p.output = p.output - scale * p.grad;
  }
  preview_ = scheduler_.predict_original(p.output, i, x_);
  return p;
}

GuideResult SdRun::step() {
  const int64_t i = first_ + steps_done_;
  Prediction p = predict();
  const torch::NoGradGuard no_grad;
  if (p.grad.defined() && scheduler_.sigma_space()) {
    const double s = scheduler_.sigma(i);
    x_ = x_ + p.grad * (s * s);
  }
  const torch::Tensor noise =
      scheduler_.needs_noise(options_.eta) ? torch::randn(x_.sizes(), rng_).to(x_.device()) : torch::Tensor();
  x_ = scheduler_.step(p.output, i, x_, options_.eta, noise);
  ++steps_done_;
  if (!torch::isfinite(x_).all().item<bool>()) {
    fail("the sample diverged (not finite) at step ", steps_done_,
         "; lower clip_guidance_scale or cfg_scale, or set grad_clamp");
  }
  if (!p.loss.total.defined()) p.loss.total = torch::zeros({x_.size(0)});
  return p.loss;
}

torch::Tensor SdRun::image() {
  const torch::NoGradGuard no_grad;
  const torch::Tensor latents = steps_done_ >= total_steps() || !preview_.defined() ? x_ : preview_;
  return (model_->vae->decode(latents / model_->scaling_factor) / 2 + 0.5).clamp(0, 1);
}

std::string SdRun::describe() const {
  return cat("Stable Diffusion (", model_->describe(), "), ", name_of(kSdSchedulers, scheduler_.kind()),
             " over ", options_.steps, " steps",
             first_ > 0 ? cat(" (the last ", total_steps(), " over the init image)") : "",
             options_.cfg_scale > 1 ? cat(", classifier-free guidance ", options_.cfg_scale) : "",
             guide_ && options_.clip_guidance_scale > 0
                 ? cat(", CLIP guidance ", options_.clip_guidance_scale, " (",
                       name_of(kSdGuideGrads, options_.guide_grad),
                       options_.guide_every > 1 ? cat(", every ", options_.guide_every, " steps") : "", ")")
                 : "");
}

TensorMap SdRun::state() const {
  TensorMap out = scheduler_.state();
  out["sd.x"] = x_.detach().cpu().clone();
  out["sd.steps_done"] = torch::tensor({steps_done_});
  out["rng.noise"] = rng_.get_state();
  out["rng.cutouts"] = cut_rng_.get_state();
  if (preview_.defined()) out["sd.preview"] = preview_.detach().cpu().clone();
  return out;
}

void SdRun::load_state(const TensorMap& state) {
  const auto get = [&](const std::string& key) -> const torch::Tensor& {
    return require(state, key, "resume state");
  };
  if (get("sd.x").sizes() != x_.sizes()) fail("resume state does not fit ", describe());
  const int64_t done = get("sd.steps_done").item<int64_t>();
  if (done < 0 || done > total_steps()) fail("resume state's step count is out of range");
  x_ = get("sd.x").to(x_.device(), torch::kFloat);
  steps_done_ = done;
  rng_.set_state(get("rng.noise").to(torch::kUInt8));
  cut_rng_.set_state(get("rng.cutouts").to(torch::kUInt8));
  scheduler_.load_state(state, x_.device());
  const auto it = state.find("sd.preview");
  preview_ = it == state.end() ? torch::Tensor() : it->second.to(x_.device(), torch::kFloat);
}

}  // namespace clipguide
