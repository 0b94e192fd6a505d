// clipguide generate: an image made to fit a prompt by a VQGAN or by pixels, guided by one or more CLIP
// models. The sidecar JSON (and the PNG's text chunks) record the arguments, the seed and the model files'
// SHA-256, so
// --replay reproduces the image and --resume continues an interrupted run.
#include <algorithm>
#include <filesystem>
#include <iomanip>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "cli/common.h"
#include "clipguide/version.h"
#include "core/file_io.h"
#include "generators/diffusion_run.h"
#include "generators/guided_run.h"
#include "generators/pixels.h"
#include "generators/vqgan_generator.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "io/sha256.h"
#include "jobs/bundled.h"

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr int64_t kMaxSide = 4096;

struct GenerateParams {
  ModelArgs model;  // vocabulary, heads, device, precision, threads; the CLIP files come from --clip-model
  std::vector<std::string> clip_models;
  std::string prompt;
  int64_t prompt_every = 0;
  bool prompt_blend = false, truncate = false, overview = false, cuda_graph = false;
  std::vector<std::string> image_prompts;
  std::vector<std::string> init_images;
  std::string init_loss = "auto", size;
  double init_weight = 0;
  int64_t steps = 250, cutn = 32;
  double cut_pow = 1.0, noise_fac = 0.1, grad_clamp = 0;
  double tv_weight = 0, range_weight = 0, saturation_weight = 0;
  std::string augments = "flip,jitter,noise", loss = "spherical";
  cg::OptimizerOptions optimizer;
  std::string generator = "vqgan", vqgan_config, vqgan_checkpoint, pixel_param = "raw";
  std::string diffusion_checkpoint, diffusion_flags, sampler = "ddim", timestep_respacing;
  double eta = 0, clip_guidance_scale = 1000, tv_scale = 150, range_scale = 50, init_scale = 0,
         cond_scale = 3;
  int64_t cutn_batches = 1, skip_timesteps = 0, class_label = -1;
  int64_t seed = -1;
  std::string output = "output.png", frames, log;
  int64_t save_every = 0, n = 1, keep = 1, explore_steps = 0;
  std::string replay, resume;

  void validate() const {
    if (generator != "vqgan" && generator != "pixels" && generator != "diffusion") {
      cg::fail("--generator ", generator, " is not one of vqgan, pixels, diffusion");
    }
    if (generator == "diffusion" && diffusion_checkpoint.empty()) {
      cg::fail(
          "--generator diffusion needs --diffusion-checkpoint FILE (a guided-diffusion .pt or .safetensors)");
    }
    if (generator == "diffusion" && steps == 0)
      cg::fail("--steps 0 (a reconstruction) is for --generator vqgan or pixels");
    if (generator == "vqgan" && vqgan_checkpoint.empty()) {
      cg::fail(
          "--generator vqgan needs --vqgan-checkpoint FILE (a taming .ckpt or .safetensors); "
          "--generator pixels needs no weights");
    }
    if (steps < 0) cg::fail("--steps must be zero or positive");
    if (steps > 0 && prompt.empty() && image_prompts.empty())
      cg::fail("nothing to aim at: give -p PROMPT and/or --image-prompt FILE");
    if (steps > 0 && clip_models.empty())
      cg::fail("give at least one --clip-model FILE (a CLIP checkpoint) to guide with");
    if (steps == 0 && init_images.size() != 1)
      cg::fail("--steps 0 writes the generator's reconstruction of --init-image; give one");
    if (n < 1 || keep < 1 || keep > n)
      cg::fail("-n must be at least 1 and --keep between 1 and -n (got -n ", n, " --keep ", keep, ")");
    if (explore_steps < 0 || explore_steps > steps) cg::fail("--explore-steps must be between 0 and --steps");
    if (save_every < 0) cg::fail("--save-every must be zero (off) or positive");
    if (init_loss != "auto" && init_loss != "latent" && init_loss != "pixel")
      cg::fail("--init-loss ", init_loss, " is not one of latent, pixel");
    if (init_loss == "latent" && generator != "vqgan") cg::fail("--init-loss latent needs --generator vqgan");
    if (!std::isfinite(init_weight)) cg::fail("--init-weight must be a finite number");
    if (output.size() < 5 || output.compare(output.size() - 4, 4, ".png") != 0)
      cg::fail("-o must name a .png file (got '", output, "')");
  }
};

void add_options(cxxopts::Options& opts, GenerateParams& p) {
  // clang-format off: one option a line
  opts.add_options("prompts")(
      "p,prompt", "prompts 'text:weight:stop | ...' (weight may be negative; '^' separates story segments)",
      cxxopts::value(p.prompt))("prompt-every", "story mode: steps per '^' segment",
                                cxxopts::value(p.prompt_every))(
      "prompt-blend", "story mode: blend each segment's embeddings into the next",
      cxxopts::value(p.prompt_blend))("image-prompt", "an image to aim at, FILE[:weight[:stop]] (repeatable)",
                                      cxxopts::value(p.image_prompts))(
      "truncate", "truncate prompts longer than the CLIP context instead of failing",
      cxxopts::value(p.truncate));
  opts.add_options("guidance")(
      "clip-model", "CLIP checkpoint guiding the run, FILE[:weight[:cutn]] (repeat for an ensemble)",
      cxxopts::value(p.clip_models))("cutn", "cutouts per step and model",
                                     cxxopts::value(p.cutn)->default_value("32"))(
      "cut-pow", "cutout size exponent (>1: smaller cutouts)",
      cxxopts::value(p.cut_pow)->default_value("1.0"))("overview", "make the first cutout the whole image",
                                                       cxxopts::value(p.overview))(
      "augments",
      cg::cat("cutout augmentations, comma-separated: ", cg::names_of(cg::kAugments), "; or none"),
      cxxopts::value(p.augments)->default_value("flip,jitter,noise"))(
      "noise-fac", "largest std of the cutout noise", cxxopts::value(p.noise_fac)->default_value("0.1"))(
      "loss", cg::cat("distance to the prompts: ", cg::names_of(cg::kGuideLosses)),
      cxxopts::value(p.loss)->default_value("spherical"))("tv-weight", "total variation regulariser",
                                                          cxxopts::value(p.tv_weight)->default_value("0"))(
      "range-weight", "penalty on values outside [0, 1]", cxxopts::value(p.range_weight)->default_value("0"))(
      "saturation-weight", "colourfulness penalty (negative: more colour)",
      cxxopts::value(p.saturation_weight)->default_value("0"))(
      "grad-clamp", "scale gradients down to this RMS (0: off)",
      cxxopts::value(p.grad_clamp)->default_value("0"))(
      "cuda-graph",
      "run each step's CLIP work (cutouts to loss to gradient) as one captured CUDA graph: "
      "--device cuda, a build with CUDA",
      cxxopts::value(p.cuda_graph));
  opts.add_options("diffusion")("diffusion-checkpoint",
                                "guided-diffusion UNet weights (.pt state dict or .safetensors)",
                                cxxopts::value(p.diffusion_checkpoint))(
      "diffusion-flags", "JSON with model_flags/diffusion_flags (default: 256x256_diffusion_uncond's)",
      cxxopts::value(p.diffusion_flags))("sampler", cg::cat("diffusion: ", cg::names_of(cg::kSamplers)),
                                         cxxopts::value(p.sampler)->default_value("ddim"))(
      "timestep-respacing", "respaced steps: 50, ddim50, 10,15,20 (default: the flags', else 100)",
      cxxopts::value(p.timestep_respacing))("eta", "DDIM eta", cxxopts::value(p.eta)->default_value("0"))(
      "clip-guidance-scale", "weight of the CLIP loss in the guidance gradient",
      cxxopts::value(p.clip_guidance_scale)->default_value("1000"))(
      "tv-scale", "total variation of the prediction", cxxopts::value(p.tv_scale)->default_value("150"))(
      "range-scale", "prediction outside [-1, 1]", cxxopts::value(p.range_scale)->default_value("50"))(
      "init-scale", "MSE to the init image", cxxopts::value(p.init_scale)->default_value("0"))(
      "cutn-batches", "cutout batches per step (memory for time)",
      cxxopts::value(p.cutn_batches)->default_value("1"))(
      "skip-timesteps", "start this many steps in, from the noised --init-image",
      cxxopts::value(p.skip_timesteps)->default_value("0"))(
      "class-label", "class for class-conditional checkpoints",
      cxxopts::value(p.class_label)->default_value("-1"))(
      "cond-scale",
      "classifier-free guidance of CLIP-conditioned checkpoints (1: the conditional "
      "prediction alone)",
      cxxopts::value(p.cond_scale)->default_value("3"));
  opts.add_options("generator")("generator", "vqgan, pixels or diffusion",
                                cxxopts::value(p.generator)->default_value("vqgan"))(
      "vqgan-checkpoint", "taming VQGAN weights (.ckpt or .safetensors)", cxxopts::value(p.vqgan_checkpoint))(
      "vqgan-config", "taming .yaml (optional: the weights determine the architecture)",
      cxxopts::value(p.vqgan_config))("pixel-param", cg::cat("pixels: ", cg::names_of(cg::kPixelParams)),
                                      cxxopts::value(p.pixel_param)->default_value("raw"))(
      "init-image",
      "start from this image; given several (repeat the flag), from the one CLIP scores best "
      "for the prompts",
      cxxopts::value(p.init_images))("init-weight", "pull toward the init image",
                                     cxxopts::value(p.init_weight)->default_value("0"))(
      "init-loss", "latent (VQGAN z) or pixel MSE; default latent for vqgan, pixel for pixels",
      cxxopts::value(p.init_loss)->default_value("auto"))(
      "size", "WxH (default: the init image's size, else 256x256; VQGAN rounds down to its factor)",
      cxxopts::value(p.size));
  opts.add_options("optimisation")("steps", "optimisation steps (diffusion: set by the respacing)",
                                   cxxopts::value(p.steps)->default_value("250"))(
      "optimizer", "adam, adamw or sgd", cxxopts::value(p.optimizer.kind)->default_value("adam"))(
      "lr", "learning rate", cxxopts::value(p.optimizer.lr)->default_value("0.1"))(
      "lr-decay", "multiply the learning rate by this every step",
      cxxopts::value(p.optimizer.lr_decay)->default_value("1"))(
      "weight-decay", "AdamW decay / SGD L2", cxxopts::value(p.optimizer.weight_decay)->default_value("0"))(
      "seed", "random seed (default: a random one, recorded)", cxxopts::value(p.seed))(
      "n", "candidates: run N seeds, rerank by CLIP score, refine the best --keep",
      cxxopts::value(p.n)->default_value("1"))("keep", "candidates kept after reranking",
                                               cxxopts::value(p.keep)->default_value("1"))(
      "explore-steps", "steps each candidate runs before reranking (default: a quarter of --steps)",
      cxxopts::value(p.explore_steps));
  opts.add_options("output")("o,output", "the PNG to write (with OUT.json beside it)",
                             cxxopts::value(p.output)->default_value("output.png"))(
      "save-every", "rewrite the PNG every N steps", cxxopts::value(p.save_every)->default_value("0"))(
      "frames", "write every step as DIR/NNNNN.png", cxxopts::value(p.frames))(
      "log", "per-step losses as JSON lines", cxxopts::value(p.log))(
      "replay", "run again from a sidecar .json (or the PNG) and write -o (default OUT.replay.png)",
      cxxopts::value(p.replay))("resume", "continue an interrupted run from its sidecar .json",
                                cxxopts::value(p.resume));
  // clang-format on
  p.model.add_to(opts, true, false);
}

std::string stem(const std::string& png) { return png.substr(0, png.size() - 4); }

// A sidecar, or the metadata a PNG of ours carries.
json read_metadata(const std::string& path) {
  const std::string bytes = cg::read_small_file(path, 64u << 20);
  if (bytes.size() >= 8 && bytes.compare(1, 3, "PNG") == 0) {
    for (const auto& [key, value] : cg::read_png_text(bytes, path)) {
      if (key == "clipguide") return json::parse(value);
    }
    cg::fail(path, ": this PNG carries no clipguide metadata");
  }
  try {
    return json::parse(bytes);
  } catch (const json::exception& e) {
    cg::fail(path, ": not a clipguide sidecar (", e.what(), ")");
  }
}

std::vector<std::string> recorded_argv(const json& meta, const std::string& path) {
  if (!meta.contains("argv") || !meta["argv"].is_array()) cg::fail(path, ": no recorded arguments (argv)");
  return meta["argv"].get<std::vector<std::string>>();
}

GenerateParams parse(const std::vector<std::string>& args, cxxopts::ParseResult* result_out = nullptr) {
  GenerateParams p;
  cxxopts::Options opts("clipguide generate", "");
  add_options(opts, p);
  std::vector<std::string> storage = {"generate"};
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : storage) argv.push_back(s.data());
  auto result = opts.parse(static_cast<int>(argv.size()), argv.data());
  if (result_out != nullptr) *result_out = result;
  return p;
}

json parts_json(const std::vector<std::pair<std::string, double>>& parts) {
  json out = json::object();
  for (const auto& [name, value] : parts) out[name] = value;
  return out;
}

struct ModelFile {
  std::string role, path, sha256;
};

struct Size {
  int64_t width = 0, height = 0;
};

Size parse_size(const std::string& s) {
  Size out;
  char x = 0, extra = 0;
  std::istringstream in(s);
  if (!(in >> out.width >> x >> out.height) || x != 'x' || (in >> extra))
    cg::fail("--size ", s, " is not WxH (for example 512x384)");
  if (out.width < 1 || out.height < 1 || out.width > kMaxSide || out.height > kMaxSide) {
    cg::fail("--size ", s, ": each side must be between 1 and ", kMaxSide);
  }
  return out;
}

// [1, 3, H, W] in [0, 1], resized as PIL's bicubic to the run's size.
torch::Tensor init_image_tensor(cg::Image img, Size size) {
  if (img.width != size.width || img.height != size.height)
    img = cg::resize_like_pil(img, static_cast<int>(size.width), static_cast<int>(size.height));
  return cg::to_rgb_tensor(img).permute({2, 0, 1}).unsqueeze(0).to(torch::kFloat).div(255);  // [H, W, 3] ->
                                                                                             // [1, 3, H, W]
}

struct Candidate {
  uint64_t seed = 0;
  std::shared_ptr<cg::Generator> generator;  // VQGAN or pixels; diffusion runs have none
  std::unique_ptr<cg::Run> run;
  double score = 0;
};

class GenerateJob {
 public:
  GenerateJob(GenerateParams p, std::vector<std::string> argv) : p_(std::move(p)), argv_(std::move(argv)) {}

  // `recorded_models`: a replay's models, whose SHA-256 must match the files loaded now.
  int run(const json* resume_meta, const json* recorded_models);

 private:
  void load_models();
  std::shared_ptr<cg::Generator> make_generator(uint64_t seed);
  std::unique_ptr<cg::Run> make_run(Candidate& c);
  void advance(size_t index, int64_t target, Progress& progress, cg::LineLog* log);
  json metadata(size_t index, int rank) const;
  std::string output_path(int rank) const {
    return p_.keep == 1 ? p_.output : cg::cat(stem(p_.output), "-", rank, ".png");
  }
  void write_image(const std::string& path, const torch::Tensor& image, const json& meta) const;
  [[noreturn]] void save_and_stop(size_t index);

  GenerateParams p_;
  std::vector<std::string> argv_;
  torch::Device device_ = torch::kCPU;
  Size size_;
  std::optional<torch::Tensor> init_;
  std::vector<ModelFile> files_;
  std::shared_ptr<cg::Vqgan> vqgan_;
  std::optional<cg::LoadedUNet> unet_;
  std::optional<cg::DiffusionSchedule> schedule_;
  std::shared_ptr<cg::ClipGuide> guide_;
  std::vector<Candidate> candidates_;
  std::vector<size_t> kept_;  // candidate indices in rank order, once reranked
  std::vector<std::pair<std::string, double>> last_parts_;
};

void GenerateJob::load_models() {
  const cg::LoadOptions load = p_.model.load_options();
  device_ = load.device;
  if (p_.generator == "vqgan") {
    cg::LoadedVqgan v = cg::load_vqgan(p_.vqgan_checkpoint, p_.vqgan_config, device_);
    vqgan_ = v.model;
    files_.push_back({"vqgan", v.path, cg::sha256_file(v.path)});
  }
  if (p_.generator == "diffusion") {
    unet_ = cg::load_unet(p_.diffusion_checkpoint, p_.diffusion_flags, device_);
    files_.push_back({"diffusion", unet_->path, cg::sha256_file(unet_->path)});
    const std::string respacing = !p_.timestep_respacing.empty() ? p_.timestep_respacing
                                  : !unet_->diffusion.timestep_respacing.empty()
                                      ? unet_->diffusion.timestep_respacing
                                      : "100";
    schedule_ =
        cg::DiffusionSchedule::make(unet_->diffusion.noise_schedule, unet_->diffusion.steps, respacing);
    p_.steps = schedule_->size() - p_.skip_timesteps;  // the sampler's steps
    if (p_.skip_timesteps < 0 || p_.steps < 1)
      cg::fail("--skip-timesteps must be between 0 and ", schedule_->size() - 1);
  }
  // Size: --size, else the init image's, else 256x256; a VQGAN needs multiples of its factor.
  std::vector<cg::Image> init_images;
  for (const auto& path : p_.init_images) init_images.push_back(cg::read_image(path));
  if (!p_.size.empty()) {
    size_ = parse_size(p_.size);
  } else if (!init_images.empty()) {
    size_ = {init_images.front().width, init_images.front().height};
  } else {
    size_ = unet_ ? Size{unet_->image_size, unet_->image_size} : Size{256, 256};
  }
  if (vqgan_) {
    const int64_t f = vqgan_->config().factor();
    const Size rounded{std::max(f, size_.width / f * f), std::max(f, size_.height / f * f)};
    if (rounded.width != size_.width || rounded.height != size_.height) {
      cg::warn("clipguide generate: size ", size_.width, "x", size_.height, " rounded to ", rounded.width,
               "x", rounded.height, " (multiples of the VQGAN's factor ", f, ")");
    }
    size_ = rounded;
  }
  std::vector<torch::Tensor>
      starts;  // the init images at the run's size; the first unless CLIP picks another
  for (cg::Image& img : init_images) starts.push_back(init_image_tensor(std::move(img), size_).to(device_));
  if (!starts.empty()) init_ = starts.front();
  if (p_.steps == 0) return;

  std::vector<cg::GuideModel> models;
  for (const auto& spec : p_.clip_models) {
    auto [path, numbers] = cg::split_trailing_numbers(spec, 2);
    cg::GuideModel m;
    m.clip = std::make_shared<cg::LoadedClip>(cg::load_clip(path, load));
    m.name = path;
    if (!numbers.empty()) m.weight = numbers[0];
    if (numbers.size() > 1) {
      if (numbers[1] != std::floor(numbers[1]) || std::abs(numbers[1]) > 1e9)
        cg::fail("--clip-model ", spec, ": cutn must be a whole number");
      m.cutn = static_cast<int64_t>(numbers[1]);
      cg::check_cutn(m.cutn, cg::message("--clip-model ", spec, ": cutn"));
    }
    files_.push_back({"clip", m.clip->path, cg::sha256_file(m.clip->path)});
    models.push_back(std::move(m));
  }
  std::vector<cg::Prompt> image_prompts;
  for (const auto& spec : p_.image_prompts) image_prompts.push_back(cg::parse_image_prompt(spec));
  cg::PromptSchedule schedule;
  if (!p_.prompt.empty()) schedule = cg::PromptSchedule::parse(p_.prompt, p_.prompt_every, p_.prompt_blend);
  cg::ClipGuideOptions options;
  options.cutouts.cutn = p_.cutn;
  options.cutouts.cut_pow = p_.cut_pow;
  options.cutouts.overview = p_.overview;
  options.cutouts.augments = cg::parse_augments(p_.augments);
  options.cutouts.noise_fac = p_.noise_fac;
  options.loss = cg::parse_guide_loss(p_.loss);
  options.tv_weight = p_.tv_weight;
  options.range_weight = p_.range_weight;
  options.saturation_weight = p_.saturation_weight;
  options.truncate = p_.truncate;
  options.cuda_graph = p_.cuda_graph;
  const bool pixel_init =
      init_ && (p_.init_loss == "pixel" || (p_.init_loss == "auto" && p_.generator == "pixels"));
  if (pixel_init) options.init_weight = p_.init_weight;
  guide_ = std::make_shared<cg::ClipGuide>(std::move(models), std::move(schedule), std::move(image_prompts),
                                           options);
  if (starts.size() > 1) {
    // Several starts: the one CLIP scores best for the prompts (at step 0).
    double best = -std::numeric_limits<double>::infinity();
    size_t chosen = 0;
    for (size_t i = 0; i < starts.size(); ++i) {
      const double score = guide_->score(starts[i], 0);
      if (score > best) {
        best = score;
        chosen = i;
      }
    }
    init_ = starts[chosen];
    cg::warn("clipguide generate: starting from ", p_.init_images[chosen], " (CLIP score ", best,
             ", the best of ", starts.size(), " init images)");
  }
  if (pixel_init) guide_->set_init_image(*init_);
}

std::unique_ptr<cg::Run> GenerateJob::make_run(Candidate& c) {
  if (unet_) {
    cg::DiffusionRunOptions options;
    options.sampler = cg::parse_sampler(p_.sampler);
    options.eta = p_.eta;
    options.skip_timesteps = p_.skip_timesteps;
    options.width = size_.width;
    options.height = size_.height;
    options.class_label = p_.class_label;
    options.cond_scale = p_.cond_scale;
    // On CUDA, --precision fp16/bf16 runs the UNet under autocast too (on the CPU only CLIP changes
    // precision).
    if (device_.is_cuda() && p_.model.precision != "fp32") options.unet_dtype = p_.model.load_options().dtype;
    options.guidance.clip_guidance_scale = p_.clip_guidance_scale;
    options.guidance.tv_scale = p_.tv_scale;
    options.guidance.range_scale = p_.range_scale;
    options.guidance.init_scale = p_.init_scale;
    options.guidance.cutn_batches = p_.cutn_batches;
    options.guidance.grad_clamp = p_.grad_clamp;
    // DDPM follows guided-diffusion's p_sample (condition_mean); the others condition the score.
    options.guidance.condition_score = options.sampler != cg::Sampler::Ddpm;
    return std::make_unique<cg::DiffusionRun>(unet_->model, *schedule_, guide_, options, init_, c.seed);
  }
  c.generator = make_generator(c.seed);
  return std::make_unique<cg::GuidedRun>(c.generator, guide_, p_.optimizer, p_.grad_clamp, c.seed);
}

std::shared_ptr<cg::Generator> GenerateJob::make_generator(uint64_t seed) {
  if (vqgan_) {
    const bool latent = p_.init_loss == "latent" || p_.init_loss == "auto";
    return std::make_shared<cg::VqganGenerator>(vqgan_, size_.width, size_.height, init_,
                                                latent ? p_.init_weight : 0.0, seed);
  }
  return std::make_shared<cg::PixelGenerator>(size_.width, size_.height,
                                              cg::parse_pixel_param(p_.pixel_param), init_, seed, device_);
}

json GenerateJob::metadata(size_t index, int rank) const {
  json models = json::array();
  for (const auto& f : files_) models.push_back({{"role", f.role}, {"path", f.path}, {"sha256", f.sha256}});
  const Candidate& c = candidates_[index];
  return {{"clipguide", CLIPGUIDE_VERSION},
          {"command", "generate"},
          {"argv", argv_},
          {"prompt", p_.prompt},
          {"seed", c.seed},
          {"size", {size_.width, size_.height}},
          {"generator", c.run ? c.run->describe() : c.generator->describe()},
          {"device", device_.str()},
          {"precision", p_.model.precision},
          {"threads", torch::get_num_threads()},
          {"steps_done", c.run ? c.run->steps_done() : 0},
          {"candidate", {{"index", index}, {"of", p_.n}, {"rank", rank}, {"score", c.score}}},
          {"loss", parts_json(last_parts_)},
          {"models", models}};
}

void GenerateJob::write_image(const std::string& path, const torch::Tensor& image, const json& meta) const {
  const std::string png =
      cg::encode_png(cg::to_rgb_bytes(image), {{"prompt", p_.prompt},
                                               {"seed", std::to_string(meta["seed"].get<uint64_t>())},
                                               {"clipguide", meta.dump()}});
  cg::write_file_atomic(path, png);
  cg::write_file_atomic(stem(path) + ".json", meta.dump(2) + "\n");
}

void GenerateJob::advance(size_t index, int64_t target, Progress& progress, cg::LineLog* log) {
  Candidate& c = candidates_[index];
  while (c.run->steps_done() < target) {
    if (InterruptScope::requested()) save_and_stop(index);
    const auto start = std::chrono::steady_clock::now();
    const cg::GuideResult r = c.run->step();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const int64_t step = c.run->steps_done();
    last_parts_ = r.parts.read();  // the loss's one read-back this step
    const double loss = r.total[0].item<double>();
    std::string note = cg::cat("loss ", std::to_string(loss).substr(0, 6));
    for (const auto& [name, value] : last_parts_)
      note += cg::cat(" | ", name.substr(0, 24), " ", std::to_string(value).substr(0, 6));
    progress.advance(1, note);
    if (log != nullptr) {
      log->append(json{
          {"candidate", index},
          {"seed", c.seed},
          {"step", step},
          {"loss", loss},
          {"parts", parts_json(last_parts_)},
          {"seconds",
           seconds}}.dump());
    }
    if (!p_.frames.empty()) {
      const std::string name = p_.n == 1
                                   ? cg::cat(std::setw(5), std::setfill('0'), step, ".png")
                                   : cg::cat("c", index, "-", std::setw(5), std::setfill('0'), step, ".png");
      cg::write_file_atomic((fs::path(p_.frames) / name).string(),
                            cg::encode_png(cg::to_rgb_bytes(c.run->image())));
    }
    if (p_.save_every > 0 && step % p_.save_every == 0)
      write_image(p_.output, c.run->image(), metadata(index, 0));
  }
}

void GenerateJob::save_and_stop(size_t index) {
  cg::TensorMap state;
  json steps = json::array();
  for (size_t i = 0; i < candidates_.size(); ++i) {
    for (auto& [key, value] : candidates_[i].run->state()) state[cg::cat("c", i, ".", key)] = value;
    steps.push_back(candidates_[i].run->steps_done());
  }
  const std::string state_path = stem(p_.output) + ".state.safetensors";
  cg::write_file_atomic(state_path,
                        cg::serialize_safetensors(state, {{"format", "clipguide generate resume state"}}));
  json meta = metadata(index, 0);
  meta["resume"] = {{"state", fs::path(state_path).filename().string()},
                    {"steps", steps},
                    {"kept", kept_.empty() ? json(nullptr) : json(kept_)}};
  write_image(p_.output, candidates_[index].run->image(), meta);
  std::cerr << "\n";
  cg::warn("clipguide generate: stopped at step ", candidates_[index].run->steps_done(), "; saved ",
           p_.output, " and its state; continue with: clipguide generate --resume ", stem(p_.output),
           ".json");
  throw Interrupted();
}

int GenerateJob::run(const json* resume_meta, const json* recorded_models) {
  load_models();
  if (recorded_models != nullptr) {
    // A replay must use the same model files, or it would not reproduce the image (hashes from the load
    // above).
    for (const auto& m : *recorded_models) {
      const std::string path = m["path"].get<std::string>(), recorded = m["sha256"].get<std::string>();
      auto now =
          std::find_if(files_.begin(), files_.end(), [&](const ModelFile& f) { return f.path == path; });
      if (now == files_.end()) cg::fail(path, " was recorded but not loaded; a replay needs the same files");
      if (now->sha256 != recorded) {
        cg::fail(path, " changed since the recorded run (SHA-256 ", now->sha256, ", recorded ", recorded,
                 "); a replay needs the same files");
      }
    }
  }
  if (p_.steps == 0) {
    // The generator's reconstruction of the init image, e.g. VQGAN decode(quantize(encode(x))).
    candidates_.push_back(
        {static_cast<uint64_t>(p_.seed), make_generator(static_cast<uint64_t>(p_.seed)), nullptr, 0});
    torch::NoGradGuard no_grad;
    write_image(p_.output, candidates_[0].generator->image(), metadata(0, 1));
    std::cout << p_.output << "\n";
    return 0;
  }
  for (int64_t i = 0; i < p_.n; ++i) {
    candidates_.emplace_back();
    Candidate& c = candidates_.back();
    c.seed = static_cast<uint64_t>(p_.seed + i);
    c.run = make_run(c);
  }
  if (resume_meta != nullptr) {
    const json& r = (*resume_meta)["resume"];
    const std::string state_path =
        (fs::path(p_.output).parent_path() / r["state"].get<std::string>()).string();
    const cg::TensorMap state = cg::read_safetensors(state_path).tensors;
    for (size_t i = 0; i < candidates_.size(); ++i) {
      cg::TensorMap mine;
      const std::string prefix = cg::cat("c", i, ".");
      for (const auto& [key, value] : state) {
        if (key.rfind(prefix, 0) == 0) mine[key.substr(prefix.size())] = value;
      }
      candidates_[i].run->load_state(mine);
    }
    if (!r["kept"].is_null()) {
      if (!r["kept"].is_array()) cg::fail(p_.resume, ": resume.kept is not a list of candidates");
      for (const json& k : r["kept"]) {
        if (!k.is_number_unsigned() || k.get<uint64_t>() >= candidates_.size()) {
          cg::fail(p_.resume, ": resume.kept names candidate ", k.dump(), ", not one of the ",
                   candidates_.size());
        }
        kept_.push_back(k.get<size_t>());
      }
    }
  }
  // Ctrl-C from here on saves the run and its state (steps done so far); before, while loading, it just
  // stops: there is nothing to save yet.
  InterruptScope interrupt;
  std::unique_ptr<cg::LineLog> log;
  if (!p_.log.empty()) log = std::make_unique<cg::LineLog>(p_.log);
  // A sampler's early images are noise: diffusion candidates are ranked when finished (best-of-N).
  const int64_t explore =
      p_.n == 1 || unet_ ? p_.steps
                         : (p_.explore_steps > 0 ? p_.explore_steps : std::max<int64_t>(1, p_.steps / 4));
  Progress progress(static_cast<size_t>(p_.n * explore + p_.keep * (p_.steps - explore)), "steps");
  int64_t done = 0;
  for (const auto& c : candidates_) done += std::min(c.run->steps_done(), explore);
  progress.advance(static_cast<size_t>(done));
  if (kept_.empty()) {
    for (size_t i = 0; i < candidates_.size(); ++i) advance(i, explore, progress, log.get());
    std::vector<size_t> order(candidates_.size());
    for (size_t i = 0; i < order.size(); ++i) {
      order[i] = i;
      candidates_[i].score = guide_->score(candidates_[i].run->image(), explore);
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return candidates_[a].score > candidates_[b].score; });
    kept_.assign(order.begin(), order.begin() + p_.keep);
  }
  for (size_t r = 0; r < kept_.size(); ++r) advance(kept_[r], p_.steps, progress, log.get());
  for (size_t r = 0; r < kept_.size(); ++r) {
    Candidate& c = candidates_[kept_[r]];
    const torch::Tensor image = c.run->image();
    c.score = guide_->score(image, p_.steps);
    write_image(output_path(static_cast<int>(r + 1)), image, metadata(kept_[r], static_cast<int>(r + 1)));
    std::cout << output_path(static_cast<int>(r + 1)) << "\t" << c.score << "\n";
  }
  fs::remove(stem(p_.output) + ".state.safetensors");
  if (p_.keep > 1) {
    // Snapshots and interrupted states used the base name; the ranked files are the results.
    fs::remove(p_.output);
    fs::remove(stem(p_.output) + ".json");
  }
  return 0;
}

}  // namespace

// Without --clip-model (or the generator's weights), the bundled toy-world models, each said once on stderr;
// with no
// --generator and no generator weights, the bundled generator. With the CLIP and the generator bundled, the
// settings tuned for them fill whatever was not given (bench/toyworld measures them). All of it goes into the
// recorded arguments, so a replay runs exactly this.
void use_bundled_models(GenerateParams& p, std::vector<std::string>& args,
                        const cxxopts::ParseResult& given) {
  const size_t recorded = args.size();
  auto set = [&](const std::string& flag, const std::string& value) {
    if (flag.size() == 1) {  // a short option (-n): cxxopts takes no --n=
      args.push_back("-" + flag);
      args.push_back(value);
    } else {
      args.push_back(cg::cat("--", flag, "=", value));
    }
  };
  auto noted = [](const std::string& what, const std::string& flag, const std::string& path) {
    cg::warn("clipguide generate: no ", flag, " given; using the bundled toy ", what, " (", path, ")");
    return path;
  };
  const bool default_clip = p.steps > 0 && p.clip_models.empty();
  if (p.steps > 0 && given.count("generator") == 0 && p.vqgan_checkpoint.empty() &&
      p.diffusion_checkpoint.empty()) {
    p.generator = cg::bundled_generator();
    set("generator", p.generator);
  }
  const bool default_vqgan = p.generator == "vqgan" && p.vqgan_checkpoint.empty();
  const bool default_diffusion = p.generator == "diffusion" && p.diffusion_checkpoint.empty();
  if (default_clip) set("clip-model", bundled_clip_noted("generate", "--clip-model"));
  if (default_vqgan) {
    set("vqgan-checkpoint", noted("VQGAN", "--vqgan-checkpoint", cg::bundled_vqgan()));
    set("vqgan-config", cg::bundled_vqgan_config());
  }
  if (default_diffusion) {
    set("diffusion-checkpoint", noted("diffusion model", "--diffusion-checkpoint", cg::bundled_diffusion()));
    set("diffusion-flags", cg::bundled_diffusion_flags());
  }
  if (default_clip && (default_vqgan || default_diffusion || p.generator == "pixels")) {
    // A run's own --init-image replaces the starting points and, for a VQGAN or pixels (which take its size),
    // the size.
    const bool own_init = given.count("init-image") > 0;
    for (const auto& [flag, value] : cg::bundled_generate_defaults(p.generator)) {
      if (given.count(flag) ||
          (own_init && (flag == "init-image" || (flag == "size" && p.generator != "diffusion"))))
        continue;
      set(flag, value);
    }
  }
  if (args.size() != recorded) p = parse(args);  // once, with everything added
}

int run_generate(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  {
    GenerateParams help_params;
    cxxopts::Options opts("clipguide generate",
                          "Make an image that fits a prompt: a VQGAN or pixels, guided by CLIP.");
    add_options(opts, help_params);
    if (!parse_or_help(opts, argc, argv)) return 0;
  }
  cxxopts::ParseResult given;
  GenerateParams p = parse(args, &given);
  json meta;
  const json* resume = nullptr;
  const bool replaying = !p.replay.empty();
  if (replaying || !p.resume.empty()) {
    // The recorded arguments define the image; this command line may only choose where the outputs go.
    const std::string source = replaying ? p.replay : p.resume;
    meta = read_metadata(source);
    const GenerateParams here = p;
    args = recorded_argv(meta, source);
    p = parse(args);
    if (replaying) {
      p.output = given.count("output") ? here.output : stem(p.output) + ".replay.png";
    } else {
      if (!meta.contains("resume"))
        cg::fail(source, ": this run finished; there is nothing to resume (use --replay to run it again)");
      p.output = (fs::path(source).parent_path() / fs::path(p.output).filename()).string();
      resume = &meta;
    }
    p.frames = here.frames;
    p.log = here.log;
    p.save_every = here.save_every;
    if (given.count("threads")) p.model.threads = here.model.threads;
  }
  if (!replaying && p.resume.empty()) use_bundled_models(p, args, given);
  if (p.seed < 0) {
    p.seed = static_cast<int64_t>(std::random_device{}() & 0x7fffffff);
    args.push_back(cg::cat("--seed=", p.seed));
  }
  p.validate();
  // Outputs are checked (and their folders made) before anything is loaded, so a run cannot fail at its end.
  cg::prepare_output_file(p.output);
  if (!p.log.empty()) cg::prepare_output_file(p.log);
  if (!p.frames.empty()) cg::prepare_output_dir(p.frames);
  GenerateJob job(p, args);
  return job.run(resume, replaying ? &meta["models"] : nullptr);
}
