#include "jobs/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <limits>
#include <nlohmann/json.hpp>

#include "clipguide/version.h"
#include "core/error.h"
#include "core/file_io.h"
#include "generators/diffusion_run.h"
#include "generators/guided_run.h"
#include "generators/pixels.h"
#include "generators/stable_diffusion.h"
#include "generators/vqgan_generator.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "io/sha256.h"
#include "jobs/bundled.h"

namespace clipguide {

using nlohmann::json;
namespace fs = std::filesystem;

// ---- the request as JSON ----

void to_json(json& j, const GuideModelSpec& m) {
  j = {{"path", m.path}, {"weight", m.weight}, {"cutn", m.cutn}};
}
void from_json(const json& j, GuideModelSpec& m) {
  j.at("path").get_to(m.path);
  if (j.contains("weight")) j.at("weight").get_to(m.weight);
  if (j.contains("cutn")) j.at("cutn").get_to(m.cutn);
}
void to_json(json& j, const RecordedModel& m) {
  j = {{"role", m.role}, {"path", m.path}, {"sha256", m.sha256}};
}
void from_json(const json& j, RecordedModel& m) {
  j.at("role").get_to(m.role);
  j.at("path").get_to(m.path);
  j.at("sha256").get_to(m.sha256);
}

namespace {

// Every recorded field of a request, by its JSON name: the one list to_json and from_json both walk.
template <class Request, class Visit>
void visit_fields(Request& r, Visit&& f) {
  f("clip_models", r.clip_models);
  f("pretrained", r.clip.pretrained);
  f("vocab", r.clip.vocab);
  f("text_heads", r.clip.text_heads);
  f("vision_heads", r.clip.vision_heads);
  f("activation", r.clip.activation);
  f("device", r.clip.device);
  f("precision", r.clip.precision);
  f("threads", r.clip.threads);
  f("generator", r.generator);
  f("vqgan_checkpoint", r.vqgan_checkpoint);
  f("vqgan_config", r.vqgan_config);
  f("diffusion_checkpoint", r.diffusion_checkpoint);
  f("diffusion_flags", r.diffusion_flags);
  f("sd_model", r.sd_model);
  f("sd_config", r.sd_config);
  f("sd_tokenizer", r.sd_tokenizer);
  f("scheduler", r.scheduler);
  f("cfg_scale", r.cfg_scale);
  f("negative", r.negative);
  f("strength", r.strength);
  f("guide_grad", r.guide_grad);
  f("guide_every", r.guide_every);
  f("vae_checkpointing", r.vae_checkpointing);
  f("prompt", r.prompt);
  f("prompt_every", r.prompt_every);
  f("prompt_blend", r.prompt_blend);
  f("truncate", r.truncate);
  f("image_prompts", r.image_prompts);
  f("deny", r.deny);
  f("deny_weight", r.deny_weight);
  f("deny_threshold", r.deny_threshold);
  f("cutn", r.cutn);
  f("cut_pow", r.cut_pow);
  f("overview", r.overview);
  f("augments", r.augments);
  f("noise_fac", r.noise_fac);
  f("loss", r.loss);
  f("tv_weight", r.tv_weight);
  f("range_weight", r.range_weight);
  f("saturation_weight", r.saturation_weight);
  f("grad_clamp", r.grad_clamp);
  f("cuda_graph", r.cuda_graph);
  f("init_images", r.init_images);
  f("init_weight", r.init_weight);
  f("init_loss", r.init_loss);
  f("width", r.width);
  f("height", r.height);
  f("pixel_param", r.pixel_param);
  f("sampler", r.sampler);
  f("timestep_respacing", r.timestep_respacing);
  f("eta", r.eta);
  f("clip_guidance_scale", r.clip_guidance_scale);
  f("tv_scale", r.tv_scale);
  f("range_scale", r.range_scale);
  f("init_scale", r.init_scale);
  f("cond_scale", r.cond_scale);
  f("cutn_batches", r.cutn_batches);
  f("batch", r.batch);
  f("skip_timesteps", r.skip_timesteps);
  f("class_label", r.class_label);
  f("steps", r.steps);
  f("optimizer", r.optimizer.kind);
  f("lr", r.optimizer.lr);
  f("lr_decay", r.optimizer.lr_decay);
  f("beta1", r.optimizer.beta1);
  f("beta2", r.optimizer.beta2);
  f("eps", r.optimizer.eps);
  f("weight_decay", r.optimizer.weight_decay);
  f("momentum", r.optimizer.momentum);
  f("seed", r.seed);
  f("n", r.n);
  f("keep", r.keep);
  f("explore_steps", r.explore_steps);
  f("output", r.output);
  f("frames", r.frames);
  f("log", r.log);
  f("save_every", r.save_every);
}

json request_json(const GenerateRequest& r) {
  json j = json::object();
  visit_fields(r, [&](const char* name, const auto& value) { j[name] = value; });
  return j;
}

GenerateRequest request_from(const json& j, const std::string& source) {
  if (!j.is_object()) fail(source, ": the recorded request is not a JSON object");
  GenerateRequest r;
  std::set<std::string> known;
  try {
    visit_fields(r, [&](const char* name, auto& value) {
      known.insert(name);
      if (j.contains(name)) j.at(name).get_to(value);
    });
  } catch (const json::exception& e) {
    fail(source, ": the recorded request does not read (", e.what(), ")");
  }
  for (const auto& item : j.items()) {
    if (known.count(item.key()) == 0)
      fail(source, ": the recorded request has an unknown field ", item.key());
  }
  return r;
}

bool one_of(const std::string& value, std::initializer_list<const char*> names) {
  return std::any_of(names.begin(), names.end(), [&](const char* n) { return value == n; });
}

void check_finite(double value, const char* name) {
  if (!std::isfinite(value)) fail(name, " must be a finite number (got ", value, ")");
}

constexpr int64_t kMaxSide = 4096;

}  // namespace

std::string GenerateRequest::to_json() const { return request_json(*this).dump(); }

GenerateRequest GenerateRequest::from_json(const std::string& text, const std::string& source) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail(source, ": not JSON (", e.what(), ")");
  }
  return request_from(j, source);
}

// ---- validation: every range of the request, here and in the option structs it fills ----

namespace {

ClipGuideOptions guide_options(const GenerateRequest& r) {
  ClipGuideOptions options;
  options.cutouts.cutn = r.cutn;
  options.cutouts.cut_pow = r.cut_pow;
  options.cutouts.overview = r.overview;
  options.cutouts.augments = parse_augments(r.augments);
  options.cutouts.noise_fac = r.noise_fac;
  options.loss = parse_guide_loss(r.loss);
  options.tv_weight = r.tv_weight;
  options.range_weight = r.range_weight;
  options.saturation_weight = r.saturation_weight;
  options.truncate = r.truncate;
  options.cuda_graph = r.cuda_graph;
  return options;
}

DiffusionGuideOptions diffusion_guidance(const GenerateRequest& r) {
  DiffusionGuideOptions g;
  g.clip_guidance_scale = r.clip_guidance_scale;
  g.tv_scale = r.tv_scale;
  g.range_scale = r.range_scale;
  g.init_scale = r.init_scale;
  g.cutn_batches = r.cutn_batches;
  g.grad_clamp = r.grad_clamp;
  return g;
}

SdRunOptions sd_options(const GenerateRequest& r) {
  SdRunOptions o;
  o.steps = r.steps;
  o.eta = r.eta;
  o.cfg_scale = r.cfg_scale;
  o.strength = r.strength;
  o.clip_guidance_scale = r.clip_models.empty() ? 0.0 : r.clip_guidance_scale;
  o.guide_grad = parse_name(kSdGuideGrads, r.guide_grad, "guide_grad");
  o.guide_every = r.guide_every;
  o.cutn_batches = r.cutn_batches;
  o.grad_clamp = r.grad_clamp;
  o.vae_checkpointing = r.vae_checkpointing;
  return o;
}

}  // namespace

void GenerateRequest::validate() const {
  if (!one_of(generator, {"vqgan", "pixels", "diffusion", "sd"}))
    fail("generator ", generator, " is not one of vqgan, pixels, diffusion, sd");
  if (generator == "sd") {
    if (sd_model.empty())
      fail(
          "the sd generator needs a Stable Diffusion model (a diffusers folder or a single "
          ".ckpt/.safetensors)");
    if (steps == 0) fail("steps 0 (a reconstruction) is for the vqgan or pixels generator");
    if (!scheduler.empty()) parse_sd_scheduler(scheduler);
    sd_options(*this).validate();
    if (prompt.empty()) fail("the sd generator needs a prompt (its text conditions the UNet)");
    if (clip_models.empty() && (n > 1 || !deny.empty() || !image_prompts.empty()))
      fail("ranking candidates (n > 1), denied concepts and image prompts need a CLIP model to score with");
    if (init_images.size() > 1 && clip_models.empty())
      fail("choosing among several init images needs a CLIP model to score them");
  } else if (!sd_model.empty()) {
    fail("sd_model is for the sd generator (the generator is ", generator, ")");
  }
  if (generator == "diffusion" && diffusion_checkpoint.empty())
    fail("the diffusion generator needs a diffusion checkpoint (a guided-diffusion .pt or .safetensors)");
  if (generator == "vqgan" && vqgan_checkpoint.empty())
    fail("the vqgan generator needs a VQGAN checkpoint (a taming .ckpt or .safetensors); pixels need none");
  if (steps < 0) fail("steps must be zero or positive (got ", steps, ")");
  if (generator == "diffusion" && steps == 0)
    fail("steps 0 (a reconstruction) is for the vqgan or pixels generator");
  if (steps > 0 && prompt.empty() && image_prompts.empty())
    fail("nothing to aim at: give a prompt and/or an image prompt");
  if (steps > 0 && clip_models.empty() && generator != "sd")
    fail("give at least one CLIP model to guide with");
  if (steps == 0 && init_images.size() != 1)
    fail("steps 0 writes the generator's reconstruction of an init image; give one");
  for (const GuideModelSpec& m : clip_models) {
    if (m.path.empty()) fail("a CLIP model has no path");
    check_finite(m.weight, "a CLIP model's weight");
    if (m.cutn != 0) check_cutn(m.cutn, message(m.path, ": cutn"));
  }
  if (prompt_every < 0) fail("prompt_every must be zero or positive (got ", prompt_every, ")");
  for (const std::string& text : deny)
    if (text.empty()) fail("a denied concept is empty");
  check_finite(deny_weight, "deny_weight");
  if (!(deny_threshold > -1 && deny_threshold < 1))
    fail("deny_threshold must be a cosine in (-1, 1) (got ", deny_threshold, ")");
  if (seed < 0) fail("seed must be zero or positive (got ", seed, ")");
  if (n < 1 || keep < 1 || keep > n)
    fail("n must be at least 1 and keep between 1 and n (got n ", n, ", keep ", keep, ")");
  if (explore_steps < 0 || explore_steps > steps)
    fail("explore_steps must be between 0 and steps (got ", explore_steps, " of ", steps, ")");
  if (save_every < 0) fail("save_every must be zero (off) or positive");
  if (!one_of(init_loss, {"auto", "latent", "pixel"}))
    fail("init_loss ", init_loss, " is not one of latent, pixel");
  if (init_loss == "latent" && generator != "vqgan") fail("init_loss latent needs the vqgan generator");
  check_finite(init_weight, "init_weight");
  if ((width == 0) != (height == 0)) fail("give both width and height, or neither");
  if (width < 0 || height < 0 || width > kMaxSide || height > kMaxSide)
    fail("size ", width, "x", height, ": each side must be between 1 and ", kMaxSide);
  if (output.size() < 5 || output.compare(output.size() - 4, 4, ".png") != 0)
    fail("output must name a .png file (got ", output, ")");
  if (batch < 0 || batch > 1024) fail("batch must be between 0 (auto) and 1024 (got ", batch, ")");
  guide_options(*this).validate();
  for (double v : {tv_weight, range_weight, saturation_weight}) check_finite(v, "each regulariser weight");
  if (generator == "diffusion") {
    parse_sampler(sampler);
    if (!(eta >= 0) || !std::isfinite(eta)) fail("eta must be zero or positive (got ", eta, ")");
    check_finite(cond_scale, "cond_scale");
    diffusion_guidance(*this).validate();
    if (skip_timesteps < 0) fail("skip_timesteps must be zero or positive");
    if (skip_timesteps > 0 && init_images.empty())
      fail("skip_timesteps needs an init image (the steps skipped start from it)");
    if (class_label < -1) fail("class_label must be -1 (none) or a class");
  } else if (generator != "sd") {
    if (batch > 1) fail("batch: only diffusion and sd candidates are sampled as a batch");
    if (grad_clamp < 0) fail("grad_clamp must be zero (off) or positive");
    optimizer.validate();
    if (generator == "pixels") parse_pixel_param(pixel_param);
  }
  clip.check();
}

// ---- the bundled toy world ----

BundledChoice use_bundled_models(GenerateRequest& r, const std::set<std::string>& given) {
  BundledChoice chosen;
  if (given.count("generator") == 0 && !r.sd_model.empty()) r.generator = "sd";
  // Stable Diffusion runs without a CLIP model; the toy CLIP knows nothing of its pictures.
  chosen.clip = r.steps > 0 && r.clip_models.empty() && r.generator != "sd";
  if (r.steps > 0 && given.count("generator") == 0 && r.vqgan_checkpoint.empty() &&
      r.diffusion_checkpoint.empty() && r.sd_model.empty())
    r.generator = bundled_generator();
  chosen.vqgan = r.generator == "vqgan" && r.vqgan_checkpoint.empty();
  chosen.diffusion = r.generator == "diffusion" && r.diffusion_checkpoint.empty();
  if (chosen.clip) r.clip_models = {GuideModelSpec{bundled_clip()}};
  if (chosen.vqgan) {
    r.vqgan_checkpoint = bundled_vqgan();
    r.vqgan_config = bundled_vqgan_config();
  }
  if (chosen.diffusion) {
    r.diffusion_checkpoint = bundled_diffusion();
    r.diffusion_flags = bundled_diffusion_flags();
  }
  if (chosen.clip && (chosen.vqgan || chosen.diffusion || r.generator == "pixels")) {
    // A run's own init images replace the starting points and, for a VQGAN or pixels (which take their
    // size), the size.
    const bool own_init = given.count("init_images") > 0;
    const BundledSettings tuned = bundled_generate_settings(r.generator);
    auto fill = [&](const char* name, auto& field, const auto& value) {
      if (given.count(name) == 0) field = value;
    };
    if (given.count("size") == 0 && !(own_init && r.generator != "diffusion")) {
      r.width = tuned.size;
      r.height = tuned.size;
    }
    if (!own_init) r.init_images = tuned.starts;
    if (tuned.steps > 0) fill("steps", r.steps, tuned.steps);
    fill("cutn", r.cutn, tuned.cutn);
    if (!tuned.augments.empty()) fill("augments", r.augments, tuned.augments);
    if (r.generator == "diffusion") {
      fill("clip_guidance_scale", r.clip_guidance_scale, tuned.clip_guidance_scale);
      fill("tv_scale", r.tv_scale, tuned.tv_scale);
      fill("range_scale", r.range_scale, tuned.range_scale);
      fill("skip_timesteps", r.skip_timesteps, tuned.skip_timesteps);
      fill("n", r.n, tuned.n);
    }
  }
  return chosen;
}

void use_generator_defaults(GenerateRequest& r, const std::set<std::string>& given) {
  if (r.generator != "sd") return;
  if (given.count("steps") == 0) r.steps = 50;
  if (given.count("cutn") == 0) r.cutn = 4;
  if (given.count("clip_guidance_scale") == 0) r.clip_guidance_scale = r.clip_models.empty() ? 0 : 100;
}

// ---- sidecars ----

GenerateRecord read_generate_record(const std::string& path) {
  const std::string bytes = read_small_file(path, 64u << 20);
  json meta;
  if (bytes.size() >= 8 && bytes.compare(1, 3, "PNG") == 0) {
    for (const auto& [key, value] : read_png_text(bytes, path)) {
      if (key == "clipguide") meta = json::parse(value, nullptr, false);
    }
    if (meta.is_null()) fail(path, ": this PNG carries no clipguide metadata");
  } else {
    meta = json::parse(bytes, nullptr, false);
  }
  if (meta.is_discarded() || !meta.is_object()) fail(path, ": not a clipguide sidecar (not a JSON object)");
  GenerateRecord record;
  try {
    if (meta.contains("request")) record.request = request_from(meta["request"], path);
    if (meta.contains("argv")) meta["argv"].get_to(record.argv);
    if (meta.contains("models")) meta["models"].get_to(record.models);
    if (meta.contains("resume")) {
      const json& r = meta["resume"];
      ResumePoint point;
      point.source = path;
      point.state = (fs::path(path).parent_path() / r.at("state").get<std::string>()).string();
      if (r.contains("kept") && !r["kept"].is_null()) {
        if (!r["kept"].is_array()) fail(path, ": resume.kept is not a list of candidates");
        for (const json& k : r["kept"]) {
          if (!k.is_number_unsigned())
            fail(path, ": resume.kept names candidate ", k.dump(), ", not a number");
          point.kept.push_back(k.get<size_t>());
        }
      }
      record.resume = point;
    }
  } catch (const json::exception& e) {
    fail(path, ": not a clipguide sidecar (", e.what(), ")");
  }
  if (!record.request && record.argv.empty()) fail(path, ": no recorded request");
  return record;
}

// ---- the job ----

namespace {

std::string stem(const std::string& png) { return png.substr(0, png.size() - 4); }

json parts_json(const std::vector<std::pair<std::string, double>>& parts) {
  json out = json::object();
  for (const auto& [name, value] : parts) out[name] = value;
  return out;
}

// [1, 3, H, W] in [0, 1], resized as PIL's bicubic to the run's size.
torch::Tensor init_image_tensor(Image img, int64_t width, int64_t height) {
  if (img.width != width || img.height != height)
    img = resize_like_pil(img, static_cast<int>(width), static_cast<int>(height));
  return to_rgb_tensor(img).permute({2, 0, 1}).unsqueeze(0).to(torch::kFloat).div(255);
}

struct Candidate {
  uint64_t seed = 0;                     // its run's seed (a batch shares one)
  std::shared_ptr<Generator> generator;  // VQGAN or pixels; diffusion runs have none
  size_t run = 0;                        // its run in runs_, and its sample in that run's batch
  int64_t row = 0;
  double score = 0;
  std::vector<std::pair<std::string, double>> parts;  // its loss by part at its last step
};

struct Stopped {
  size_t candidate;
};

class GenerateJob {
 public:
  GenerateJob(GenerateRequest request, const GenerateCallbacks& callbacks)
      : r_(std::move(request)), callbacks_(callbacks) {}

  GenerateResult run(const ResumePoint* resume);

 private:
  void load_models();
  void check_pinned_models() const;
  std::shared_ptr<Generator> make_generator(uint64_t seed);
  std::unique_ptr<Run> make_run(Candidate& c, int64_t batch);
  torch::Tensor image_of(size_t index) {
    return runs_[candidates_[index].run]->image().narrow(0, candidates_[index].row, 1);
  }
  void resume_from(const ResumePoint& resume);
  void advance(size_t index, int64_t target);
  json metadata(size_t index, int rank) const;
  std::string output_path(int rank) const {
    return r_.keep == 1 ? r_.output : cat(stem(r_.output), "-", rank, ".png");
  }
  void write_image(const std::string& path, const torch::Tensor& image, const json& meta) const;
  // Per image of `images` [B, 3, H, W]: closer than deny_threshold to a denied concept.
  std::vector<bool> denied(const torch::Tensor& images, int64_t step) const {
    std::vector<bool> out(images.size(0), false);
    for (const auto& guide : deny_) {
      const torch::Tensor cos = guide->scores(images, step).cpu();
      for (int64_t b = 0; b < images.size(0); ++b)
        out[b] = out[b] || cos[b].item<double>() > r_.deny_threshold;
    }
    return out;
  }
  GenerateResult save_state(size_t index);

  GenerateRequest r_;  // batch resolved once the device is known, as the sidecars record it
  const GenerateCallbacks& callbacks_;
  LoadOptions load_;
  int64_t steps_ = 0;  // the optimiser's steps, or the sampler's (the respaced steps less those skipped)
  int64_t width_ = 0, height_ = 0;
  std::optional<torch::Tensor> init_;
  std::vector<RecordedModel> files_;
  std::shared_ptr<Vqgan> vqgan_;
  std::optional<LoadedUNet> unet_;
  std::optional<DiffusionSchedule> schedule_;
  std::shared_ptr<const StableDiffusion> sd_;
  PromptSchedule sd_story_;            // the prompt's segments, as the UNet reads them
  torch::Tensor sd_cond_, sd_uncond_;  // each segment's and the negative prompt's text states
  std::shared_ptr<ClipGuide> guide_;
  std::vector<std::shared_ptr<ClipGuide>> deny_;  // one guide a denied concept: its scores() are the cosines
  std::vector<std::unique_ptr<Run>> runs_;  // one per candidate, or one per batch of diffusion candidates
  std::vector<Candidate> candidates_;
  std::vector<size_t> kept_;  // candidate indices in rank order, once reranked
  std::unique_ptr<LineLog> log_;
};

void GenerateJob::load_models() {
  load_ = r_.clip.resolve();
  steps_ = r_.steps;
  if (r_.generator == "vqgan") {
    LoadedVqgan v = load_vqgan(r_.vqgan_checkpoint, r_.vqgan_config, load_.device);
    vqgan_ = v.model;
    files_.push_back({"vqgan", v.path, sha256_file(v.path)});
  }
  if (r_.generator == "diffusion") {
    unet_ = load_unet(r_.diffusion_checkpoint, r_.diffusion_flags, load_.device);
    files_.push_back({"diffusion", unet_->path, sha256_file(unet_->path)});
    const std::string respacing = !r_.timestep_respacing.empty() ? r_.timestep_respacing
                                  : !unet_->diffusion.timestep_respacing.empty()
                                      ? unet_->diffusion.timestep_respacing
                                      : "100";
    schedule_ = DiffusionSchedule::make(unet_->diffusion.noise_schedule, unet_->diffusion.steps, respacing);
    steps_ = schedule_->size() - r_.skip_timesteps;  // DiffusionRun checks skip_timesteps against it
    // Auto: every candidate in one batch on CUDA; one at a time on the CPU, where bench/diffusion measured a
    // batch of 4 slower than 4 single samples.
    if (r_.batch == 0) r_.batch = load_.device.is_cuda() ? r_.n : 1;
  }
  if (r_.generator == "sd") {
    sd_ = std::make_shared<const StableDiffusion>(
        load_stable_diffusion(r_.sd_model, r_.sd_config, r_.sd_tokenizer, r_.scheduler, load_.device));
    for (const std::string& file : sd_->files) files_.push_back({"sd", file, sha256_file(file)});
    // The UNet reads each story segment's positive prompts in turn; the negative side holds the denied
    // concepts too.
    sd_story_ = PromptSchedule::parse(r_.prompt, r_.prompt_every, r_.prompt_blend);
    std::vector<std::string> texts;
    for (const auto& segment : sd_story_.segments) {
      std::string text;
      for (const auto& p : segment)
        if (p.weight > 0) text += cat(text.empty() ? "" : ", ", p.text);
      texts.push_back(text);
    }
    std::string negative = r_.negative;
    for (const std::string& denied : r_.deny) negative += cat(negative.empty() ? "" : ", ", denied);
    texts.push_back(negative);
    const torch::Tensor states = sd_->encode_prompts(texts, r_.truncate);
    const int64_t S = states.size(0) - 1;
    sd_cond_ = states.narrow(0, 0, S);
    sd_uncond_ = states.narrow(0, S, 1);
    steps_ = sd_calls_run(*sd_, sd_options(r_), !r_.init_images.empty());
    if (r_.batch == 0) r_.batch = load_.device.is_cuda() ? r_.n : 1;
  }
  // Size: the request's, else the init image's, else the UNet's, else 256x256 (512x512 for Stable Diffusion);
  // a VQGAN and Stable Diffusion need multiples of their factor.
  std::vector<Image> init_images;
  for (const auto& path : r_.init_images) init_images.push_back(read_image(path));
  if (r_.width > 0) {
    width_ = r_.width;
    height_ = r_.height;
  } else if (!init_images.empty()) {
    width_ = init_images.front().width;
    height_ = init_images.front().height;
  } else {
    width_ = height_ = unet_ ? unet_->image_size : sd_ ? 512 : 256;
  }
  if (vqgan_ || sd_) {
    const int64_t f = vqgan_ ? vqgan_->config().factor() : sd_->size_multiple();
    const int64_t w = std::max(f, width_ / f * f), h = std::max(f, height_ / f * f);
    if (w != width_ || h != height_) {
      warn("clipguide generate: size ", width_, "x", height_, " rounded to ", w, "x", h,
           " (multiples of the ", vqgan_ ? "VQGAN" : "Stable Diffusion model", "'s factor ", f, ")");
    }
    width_ = w;
    height_ = h;
  }
  std::vector<torch::Tensor>
      starts;  // the init images at the run's size; the first unless CLIP picks another
  for (Image& img : init_images)
    starts.push_back(init_image_tensor(std::move(img), width_, height_).to(load_.device));
  if (!starts.empty()) init_ = starts.front();
  if (r_.steps == 0 || r_.clip_models.empty()) return;  // an sd run may have no CLIP

  std::vector<GuideModel> models;
  for (const GuideModelSpec& spec : r_.clip_models) {
    GuideModel m;
    m.clip = std::make_shared<LoadedClip>(load_clip(spec.path, load_));
    m.name = spec.path;
    m.weight = spec.weight;
    m.cutn = spec.cutn;
    files_.push_back({"clip", m.clip->path, sha256_file(m.clip->path)});
    models.push_back(std::move(m));
  }
  std::vector<Prompt> image_prompts;
  for (const auto& spec : r_.image_prompts) image_prompts.push_back(parse_image_prompt(spec));
  PromptSchedule schedule;
  if (!r_.prompt.empty()) schedule = PromptSchedule::parse(r_.prompt, r_.prompt_every, r_.prompt_blend);
  if (schedule.segments.empty() && !r_.deny.empty()) schedule.segments.emplace_back();
  for (auto& segment : schedule.segments)
    for (const std::string& text : r_.deny) segment.push_back({text, -r_.deny_weight});
  ClipGuideOptions options = guide_options(r_);
  for (const std::string& text : r_.deny) {
    PromptSchedule one;
    one.segments = {{{text, 1.0}}};
    deny_.push_back(std::make_shared<ClipGuide>(models, std::move(one), std::vector<Prompt>{}, options));
  }
  const bool pixel_init =
      init_ && (r_.init_loss == "pixel" || (r_.init_loss == "auto" && r_.generator == "pixels"));
  if (pixel_init) options.init_weight = r_.init_weight;
  guide_ =
      std::make_shared<ClipGuide>(std::move(models), std::move(schedule), std::move(image_prompts), options);
  if (starts.size() > 1) {
    // Several starts: the one CLIP scores best for the prompts (at step 0).
    const torch::Tensor scores = guide_->scores(torch::cat(starts), 0);
    const auto chosen = static_cast<size_t>(scores.argmax().item<int64_t>());
    init_ = starts[chosen];
    warn("clipguide generate: starting from ", r_.init_images[chosen], " (CLIP score ",
         scores[static_cast<int64_t>(chosen)].item<double>(), ", the best of ", starts.size(),
         " init images)");
  }
  if (pixel_init) guide_->set_init_image(*init_);
}

void GenerateJob::check_pinned_models() const {
  // A replay must use the same model files, or it would not reproduce the image.
  for (const RecordedModel& pinned : r_.pinned_models) {
    auto now = std::find_if(files_.begin(), files_.end(),
                            [&](const RecordedModel& f) { return f.path == pinned.path; });
    if (now == files_.end()) fail(pinned.path, " was recorded but not loaded; a replay needs the same files");
    if (now->sha256 != pinned.sha256) {
      fail(pinned.path, " changed since the recorded run (SHA-256 ", now->sha256, ", recorded ",
           pinned.sha256, "); a replay needs the same files");
    }
  }
}

std::unique_ptr<Run> GenerateJob::make_run(Candidate& c, int64_t batch) {
  if (sd_) {
    SdRunOptions options = sd_options(r_);
    options.story = sd_story_;
    options.width = width_;
    options.height = height_;
    options.batch = batch;
    // A reduced precision runs the UNet under autocast, on CUDA and (bf16) on the CPU too: the step is the
    // UNet (bench/sd). The VAE, the text encoder and the sampler's arithmetic stay fp32.
    if (load_.dtype != torch::kFloat) options.unet_dtype = load_.dtype;
    return std::make_unique<SdRun>(sd_, sd_cond_, sd_uncond_, guide_, options, init_, c.seed);
  }
  if (unet_) {
    DiffusionRunOptions options;
    options.sampler = parse_sampler(r_.sampler);
    options.eta = r_.eta;
    options.skip_timesteps = r_.skip_timesteps;
    options.width = width_;
    options.height = height_;
    options.class_label = r_.class_label;
    options.cond_scale = r_.cond_scale;
    options.batch = batch;
    // On CUDA a reduced precision runs the UNet under autocast too (on the CPU only CLIP changes precision).
    if (load_.device.is_cuda() && load_.dtype != torch::kFloat) options.unet_dtype = load_.dtype;
    options.guidance = diffusion_guidance(r_);
    // DDPM follows guided-diffusion's p_sample (condition_mean); the others condition the score.
    options.guidance.condition_score = options.sampler != Sampler::Ddpm;
    return std::make_unique<DiffusionRun>(unet_->model, *schedule_, guide_, options, init_, c.seed);
  }
  c.generator = make_generator(c.seed);
  return std::make_unique<GuidedRun>(c.generator, guide_, r_.optimizer, r_.grad_clamp, c.seed);
}

std::shared_ptr<Generator> GenerateJob::make_generator(uint64_t seed) {
  if (vqgan_) {
    const bool latent = r_.init_loss == "latent" || r_.init_loss == "auto";
    return std::make_shared<VqganGenerator>(vqgan_, width_, height_, init_, latent ? r_.init_weight : 0.0,
                                            seed);
  }
  return std::make_shared<PixelGenerator>(width_, height_, parse_pixel_param(r_.pixel_param), init_, seed,
                                          load_.device);
}

json GenerateJob::metadata(size_t index, int rank) const {
  const Candidate& c = candidates_[index];
  const Run* run = runs_.empty() ? nullptr : runs_[c.run].get();
  json meta = {{"clipguide", CLIPGUIDE_VERSION},
               {"command", "generate"},
               {"request", request_json(r_)},
               {"prompt", r_.prompt},
               {"seed", c.seed},
               {"size", {width_, height_}},
               {"generator", run ? run->describe() : c.generator->describe()},
               {"device", load_.device.str()},
               {"precision", r_.clip.precision},
               {"threads", torch::get_num_threads()},
               {"steps_done", run ? run->steps_done() : 0},
               {"candidate",
                {{"index", index}, {"of", r_.n}, {"rank", rank}, {"score", c.score}, {"batch_row", c.row}}},
               {"loss", parts_json(c.parts)},
               {"models", files_}};
  if (!r_.command_line.empty()) meta["argv"] = r_.command_line;
  return meta;
}

void GenerateJob::write_image(const std::string& path, const torch::Tensor& image, const json& meta) const {
  const std::string png =
      encode_png(to_rgb_bytes(image), {{"prompt", r_.prompt},
                                       {"seed", std::to_string(meta["seed"].get<uint64_t>())},
                                       {"clipguide", meta.dump()}});
  write_file_atomic(path, png);
  write_file_atomic(stem(path) + ".json", meta.dump(2) + "\n");
}

void GenerateJob::advance(size_t index, int64_t target) {
  const size_t r = candidates_[index].run;
  Run& run = *runs_[r];
  std::vector<size_t> members;  // the candidates this run steps together
  for (size_t i = 0; i < candidates_.size(); ++i) {
    if (candidates_[i].run == r) members.push_back(i);
  }
  while (run.steps_done() < target) {
    if (callbacks_.should_stop && callbacks_.should_stop()) throw Stopped{index};
    const auto start = std::chrono::steady_clock::now();
    const GuideResult result = run.step();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    // The loss's one read-back this step, for every sample of the batch.
    const torch::Tensor totals = result.total.detach().to(torch::kCPU, torch::kDouble);
    const LossParts parts{result.parts.names,
                          result.parts.values.defined() ? result.parts.values.cpu() : torch::Tensor()};
    const bool frame = !r_.frames.empty(),
               snapshot = r_.save_every > 0 && run.steps_done() % r_.save_every == 0;
    const torch::Tensor images = frame || snapshot || callbacks_.on_image ? run.image() : torch::Tensor();
    for (size_t m : members) {
      Candidate& c = candidates_[m];
      GenerateStep info;
      info.candidate = m;
      info.seed = c.seed;
      info.step = run.steps_done();
      info.seconds = seconds;
      info.loss = totals[c.row].item<double>();
      c.parts = info.parts = parts.read(c.row);
      if (callbacks_.on_step) callbacks_.on_step(info);
      if (log_) {
        log_->append(json{{"candidate", m},
                          {"seed", c.seed},
                          {"step", info.step},
                          {"loss", info.loss},
                          {"parts", parts_json(info.parts)},
                          {"seconds", info.seconds}}
                         .dump());
      }
      if (!images.defined()) continue;
      const torch::Tensor image = images.narrow(0, c.row, 1);
      if (frame) {
        const std::string name = r_.n == 1
                                     ? cat(std::setw(5), std::setfill('0'), info.step, ".png")
                                     : cat("c", m, "-", std::setw(5), std::setfill('0'), info.step, ".png");
        write_file_atomic((fs::path(r_.frames) / name).string(), encode_png(to_rgb_bytes(image)));
      }
      if (snapshot && m == members.front()) write_image(r_.output, image, metadata(m, 0));
      if (callbacks_.on_image) callbacks_.on_image(info, image);
    }
  }
}

GenerateResult GenerateJob::save_state(size_t index) {
  TensorMap state;
  json steps = json::array();
  for (size_t i = 0; i < runs_.size(); ++i) {
    for (auto& [key, value] : runs_[i]->state()) state[cat("c", i, ".", key)] = value;
    steps.push_back(runs_[i]->steps_done());
  }
  const std::string state_path = stem(r_.output) + ".state.safetensors";
  write_file_atomic(state_path,
                    serialize_safetensors(state, {{"format", "clipguide generate resume state"}}));
  json meta = metadata(index, 0);
  meta["resume"] = {{"state", fs::path(state_path).filename().string()},
                    {"steps", steps},
                    {"kept", kept_.empty() ? json(nullptr) : json(kept_)}};
  write_image(r_.output, image_of(index), meta);
  GenerateResult result;
  result.stopped = true;
  result.steps_done = runs_[candidates_[index].run]->steps_done();
  result.sidecar = stem(r_.output) + ".json";
  return result;
}

void GenerateJob::resume_from(const ResumePoint& resume) {
  const TensorMap state = read_safetensors(resume.state).tensors;
  for (size_t i = 0; i < runs_.size(); ++i) runs_[i]->load_state(tensors_under(state, cat("c", i, ".")));
  for (size_t k : resume.kept) {
    if (k >= candidates_.size())
      fail(resume.source, ": resume.kept names candidate ", k, ", not one of the ", candidates_.size());
  }
  kept_ = resume.kept;
}

GenerateResult GenerateJob::run(const ResumePoint* resume) {
  load_models();
  check_pinned_models();
  GenerateResult result;
  if (r_.steps == 0) {
    // The generator's reconstruction of the init image, e.g. VQGAN decode(quantize(encode(x))).
    const auto seed = static_cast<uint64_t>(r_.seed);
    candidates_.push_back({seed, make_generator(seed), 0, 0, 0, {}});
    torch::NoGradGuard no_grad;
    write_image(r_.output, candidates_[0].generator->image(), metadata(0, 1));
    result.images.push_back({r_.output, 0, seed, 0, false, "", 0});
    return result;
  }
  // Candidates i, i + 1, ... of a batch share a run and its seed, seed + i; alone, candidate i has seed + i.
  const int64_t batch = unet_ || sd_ ? r_.batch : 1;
  for (int64_t i = 0; i < r_.n; i += batch) {
    const int64_t size = std::min(batch, r_.n - i);
    Candidate first;
    first.seed = static_cast<uint64_t>(r_.seed + i);
    first.run = runs_.size();
    runs_.push_back(make_run(first, size));
    for (int64_t row = 0; row < size; ++row) {
      Candidate c = first;
      c.row = row;
      candidates_.push_back(c);
    }
  }
  if (resume != nullptr) resume_from(*resume);
  if (!r_.log.empty()) log_ = std::make_unique<LineLog>(r_.log);
  // A sampler's early images are noise: diffusion candidates are ranked when finished (best-of-N).
  const int64_t explore = r_.n == 1 || unet_ || sd_
                              ? steps_
                              : (r_.explore_steps > 0 ? r_.explore_steps : std::max<int64_t>(1, steps_ / 4));
  int64_t done = 0;
  for (const auto& c : candidates_) done += std::min(runs_[c.run]->steps_done(), explore);
  for (size_t k : kept_) done += std::max<int64_t>(0, runs_[candidates_[k].run]->steps_done() - explore);
  if (callbacks_.on_start) callbacks_.on_start(r_.n * explore + r_.keep * (steps_ - explore), done);
  try {
    if (kept_.empty()) {
      for (size_t i = 0; i < candidates_.size(); ++i) advance(i, explore);
      std::vector<torch::Tensor> images;
      for (size_t i = 0; i < candidates_.size(); ++i) images.push_back(image_of(i));
      // Without a CLIP (an sd run; then n is 1) there is nothing to rank.
      const torch::Tensor scores = guide_ ? guide_->scores(torch::cat(images), explore).cpu()
                                          : torch::full({static_cast<int64_t>(images.size())},
                                                        std::numeric_limits<double>::quiet_NaN());
      std::vector<size_t> order(candidates_.size());
      for (size_t i = 0; i < order.size(); ++i) {
        order[i] = i;
        candidates_[i].score = scores[static_cast<int64_t>(i)].item<double>();
      }
      // Candidates too close to a denied concept rank after the clean ones.
      const std::vector<bool> flagged = denied(torch::cat(images), explore);
      std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
        if (flagged[a] != flagged[b]) return !flagged[a];
        return candidates_[a].score > candidates_[b].score;
      });
      kept_.assign(order.begin(), order.begin() + r_.keep);
    }
    for (size_t k : kept_) advance(k, steps_);
  } catch (const Stopped& stopped) {
    return save_state(stopped.candidate);
  }
  for (size_t rank = 0; rank < kept_.size(); ++rank) {
    Candidate& c = candidates_[kept_[rank]];
    const torch::Tensor image = image_of(kept_[rank]);
    c.score = guide_ ? guide_->score(image, steps_) : std::numeric_limits<double>::quiet_NaN();
    GeneratedImage out{"", kept_[rank], c.seed, c.score, false, "", 0};
    for (size_t d = 0; d < deny_.size(); ++d) {
      const double cos = deny_[d]->score(image);
      if (out.denied.empty() || cos > out.denied_cos) {
        out.denied = r_.deny[d];
        out.denied_cos = cos;
      }
    }
    out.flagged = !out.denied.empty() && out.denied_cos > r_.deny_threshold;
    if (!out.flagged) {
      out.path = output_path(static_cast<int>(rank + 1));
      write_image(out.path, image, metadata(kept_[rank], static_cast<int>(rank + 1)));
    }
    result.images.push_back(out);
  }
  fs::remove(stem(r_.output) + ".state.safetensors");
  if (r_.keep > 1) {
    // Snapshots and interrupted states used the base name; the ranked files are the results.
    fs::remove(r_.output);
    fs::remove(stem(r_.output) + ".json");
  }
  return result;
}

}  // namespace

GenerateResult generate(const GenerateRequest& request, const GenerateCallbacks& callbacks,
                        const ResumePoint* resume) {
  request.validate();
  // Outputs are checked (and their folders made) before anything is loaded, so a run cannot fail at its end.
  prepare_output_file(request.output);
  if (!request.log.empty()) prepare_output_file(request.log);
  if (!request.frames.empty()) prepare_output_dir(request.frames);
  GenerateJob job(request, callbacks);
  return job.run(resume);
}

}  // namespace clipguide
