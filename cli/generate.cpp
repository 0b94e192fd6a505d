// clipguide generate: the command line of the generate job (jobs/generate.h). It parses the options into a
// GenerateRequest, fills what is left from the bundled toy world, and makes one generate() call, drawing its
// progress and turning Ctrl-C into a saved, resumable stop.
#include "jobs/generate.h"

#include <filesystem>
#include <random>
#include <set>
#include <sstream>

#include "cli/common.h"
#include "generators/diffusion.h"
#include "generators/pixels.h"
#include "generators/stable_diffusion.h"
#include "guidance/clip_guide.h"
#include "guidance/cutouts.h"
#include "prompts/prompt.h"

namespace fs = std::filesystem;

namespace {

// The request, and the options that reach it only after parsing (their syntax is the command line's).
struct Flags {
  cg::GenerateRequest request;
  ModelArgs model;                       // vocabulary, heads, device, precision, threads
  std::vector<std::string> clip_models;  // FILE[:weight[:cutn]]
  std::string size;                      // WxH
  std::string replay, resume;
};

void add_options(cxxopts::Options& opts, Flags& f) {
  cg::GenerateRequest& r = f.request;
  // clang-format off: one option a line
  opts.add_options("prompts")(
      "p,prompt", "prompts 'text:weight:stop | ...' (weight may be negative; '^' separates story segments)",
      cxxopts::value(r.prompt))("prompt-every", "story mode: steps per '^' segment",
                                cxxopts::value(r.prompt_every))(
      "prompt-blend", "story mode: blend each segment's embeddings into the next",
      cxxopts::value(r.prompt_blend))("image-prompt", "an image to aim at, FILE[:weight[:stop]] (repeatable)",
                                      cxxopts::value(r.image_prompts))(
      "truncate", "truncate prompts longer than the CLIP context instead of failing",
      cxxopts::value(r.truncate))(
      "deny",
      "a concept to keep away from (repeatable): a negative prompt in every segment, and an image "
      "closer to it than --deny-threshold at the end is reported, not written (exit 3)",
      cxxopts::value(r.deny))("deny-weight", "the weight of each --deny concept's negative prompt",
                              cxxopts::value(r.deny_weight)->default_value("1"))(
      "deny-threshold", "the cosine to a --deny concept above which an image is flagged",
      cxxopts::value(r.deny_threshold)->default_value("0.25"));
  opts.add_options("guidance")(
      "clip-model", "CLIP checkpoint guiding the run, FILE[:weight[:cutn]] (repeat for an ensemble)",
      cxxopts::value(f.clip_models))("cutn", "cutouts per step and model",
                                     cxxopts::value(r.cutn)->default_value("32"))(
      "cut-pow", "cutout size exponent (>1: smaller cutouts)",
      cxxopts::value(r.cut_pow)->default_value("1.0"))("overview", "make the first cutout the whole image",
                                                       cxxopts::value(r.overview))(
      "augments",
      cg::cat("cutout augmentations, comma-separated: ", cg::names_of(cg::kAugments), "; or none"),
      cxxopts::value(r.augments)->default_value("flip,jitter,noise"))(
      "noise-fac", "largest std of the cutout noise", cxxopts::value(r.noise_fac)->default_value("0.1"))(
      "loss",
      cg::cat(
          "distance to the prompts: ", cg::names_of(cg::kGuideLosses),
          " (sigmoid: SigLIP's own loss -log sigmoid(logit) for SigLIP models; CLIP models keep spherical)"),
      cxxopts::value(r.loss)->default_value("spherical"))("tv-weight", "total variation regulariser",
                                                          cxxopts::value(r.tv_weight)->default_value("0"))(
      "range-weight", "penalty on values outside [0, 1]", cxxopts::value(r.range_weight)->default_value("0"))(
      "saturation-weight", "colourfulness penalty (negative: more colour)",
      cxxopts::value(r.saturation_weight)->default_value("0"))(
      "grad-clamp", "scale gradients down to this RMS (0: off)",
      cxxopts::value(r.grad_clamp)->default_value("0"))(
      "cuda-graph",
      "run each step's CLIP work (cutouts to loss to gradient) as one captured CUDA graph: "
      "--device cuda, a build with CUDA",
      cxxopts::value(r.cuda_graph));
  opts.add_options("diffusion")("diffusion-checkpoint",
                                "guided-diffusion UNet weights (.pt state dict or .safetensors)",
                                cxxopts::value(r.diffusion_checkpoint))(
      "diffusion-flags", "JSON with model_flags/diffusion_flags (default: 256x256_diffusion_uncond's)",
      cxxopts::value(r.diffusion_flags))("sampler", cg::cat("diffusion: ", cg::names_of(cg::kSamplers)),
                                         cxxopts::value(r.sampler)->default_value("ddim"))(
      "timestep-respacing", "respaced steps: 50, ddim50, 10,15,20 (default: the flags', else 100)",
      cxxopts::value(r.timestep_respacing))("eta", "DDIM eta", cxxopts::value(r.eta)->default_value("0"))(
      "clip-guidance-scale", "weight of the CLIP loss in the guidance gradient",
      cxxopts::value(r.clip_guidance_scale)->default_value("1000"))(
      "tv-scale", "total variation of the prediction", cxxopts::value(r.tv_scale)->default_value("150"))(
      "range-scale", "prediction outside [-1, 1]", cxxopts::value(r.range_scale)->default_value("50"))(
      "init-scale", "MSE to the init image", cxxopts::value(r.init_scale)->default_value("0"))(
      "cutn-batches", "cutout batches per step (memory for time)",
      cxxopts::value(r.cutn_batches)->default_value("1"))(
      "batch",
      "candidates of -n sampled together, one batch through the UNet and CLIP (0: all of them on CUDA, "
      "one at a time on the CPU, where a batch measured slower)",
      cxxopts::value(r.batch)->default_value("0"))("skip-timesteps",
                                                   "start this many steps in, from the noised --init-image",
                                                   cxxopts::value(r.skip_timesteps)->default_value("0"))(
      "class-label", "class for class-conditional checkpoints",
      cxxopts::value(r.class_label)->default_value("-1"))(
      "cond-scale",
      "classifier-free guidance of CLIP-conditioned checkpoints (1: the conditional "
      "prediction alone)",
      cxxopts::value(r.cond_scale)->default_value("3"));
  opts.add_options("stable diffusion")(
      "sd-model",
      "a Stable Diffusion diffusers folder or single .ckpt/.safetensors file (implies --generator sd)",
      cxxopts::value(r.sd_model))(
      "sd-config",
      "a single file's latent diffusion .yaml (heads, v, text layer; default: its namesake beside it)",
      cxxopts::value(r.sd_config))(
      "sd-tokenizer",
      "its vocabulary (default: the folder's tokenizer/, else beside the file, else the CLIP cache)",
      cxxopts::value(r.sd_tokenizer))(
      "scheduler", cg::cat("sd: ", cg::names_of(cg::kSdSchedulers), " (default: the model's own)"),
      cxxopts::value(r.scheduler))("cfg-scale", "sd: classifier-free guidance (1: the prompt alone)",
                                   cxxopts::value(r.cfg_scale)->default_value("7.5"))(
      "negative", "sd: the negative prompt", cxxopts::value(r.negative))(
      "strength", "sd with --init-image: how far it is noised (the last steps x strength steps run)",
      cxxopts::value(r.strength)->default_value("0.8"))(
      "guide-grad",
      cg::cat("sd: how CLIP guidance reaches the latents: ", cg::names_of(cg::kSdGuideGrads),
              " (decoder-only: no backward pass through the UNet)"),
      cxxopts::value(r.guide_grad)->default_value("full"))("guide-every", "sd: CLIP-guide every k-th step",
                                                           cxxopts::value(r.guide_every)->default_value("1"))(
      "vae-checkpointing", "sd: recompute the VAE decoder's activations in the backward pass (less memory)",
      cxxopts::value(r.vae_checkpointing));
  opts.add_options("generator")("generator", "vqgan, pixels, diffusion or sd",
                                cxxopts::value(r.generator)->default_value("vqgan"))(
      "vqgan-checkpoint", "taming VQGAN weights (.ckpt or .safetensors)", cxxopts::value(r.vqgan_checkpoint))(
      "vqgan-config", "taming .yaml (optional: the weights determine the architecture)",
      cxxopts::value(r.vqgan_config))("pixel-param", cg::cat("pixels: ", cg::names_of(cg::kPixelParams)),
                                      cxxopts::value(r.pixel_param)->default_value("raw"))(
      "init-image",
      "start from this image; given several (repeat the flag), from the one CLIP scores best "
      "for the prompts",
      cxxopts::value(r.init_images))("init-weight", "pull toward the init image",
                                     cxxopts::value(r.init_weight)->default_value("0"))(
      "init-loss", "latent (VQGAN z) or pixel MSE; default latent for vqgan, pixel for pixels",
      cxxopts::value(r.init_loss)->default_value("auto"))(
      "size", "WxH (default: the init image's size, else 256x256; VQGAN rounds down to its factor)",
      cxxopts::value(f.size));
  opts.add_options("optimisation")(
      "steps", "optimisation steps (diffusion: set by the respacing; sd: the scheduler's, 50)",
      cxxopts::value(r.steps)->default_value("250"))("optimizer", "adam, adamw or sgd",
                                                     cxxopts::value(r.optimizer.kind)->default_value("adam"))(
      "lr", "learning rate", cxxopts::value(r.optimizer.lr)->default_value("0.1"))(
      "lr-decay", "multiply the learning rate by this every step",
      cxxopts::value(r.optimizer.lr_decay)->default_value("1"))(
      "weight-decay", "AdamW decay / SGD L2", cxxopts::value(r.optimizer.weight_decay)->default_value("0"))(
      "seed", "random seed (default: a random one, recorded)", cxxopts::value(r.seed)->default_value("-1"))(
      "n", "candidates: run N seeds, rerank by CLIP score, refine the best --keep",
      cxxopts::value(r.n)->default_value("1"))("keep", "candidates kept after reranking",
                                               cxxopts::value(r.keep)->default_value("1"))(
      "explore-steps", "steps each candidate runs before reranking (default: a quarter of --steps)",
      cxxopts::value(r.explore_steps));
  opts.add_options("output")("o,output", "the PNG to write (with OUT.json beside it)",
                             cxxopts::value(r.output)->default_value("output.png"))(
      "save-every", "rewrite the PNG every N steps", cxxopts::value(r.save_every)->default_value("0"))(
      "frames", "write every step as DIR/NNNNN.png", cxxopts::value(r.frames))(
      "log", "per-step losses as JSON lines", cxxopts::value(r.log))(
      "replay", "run again from a sidecar .json (or the PNG) and write -o (default OUT.replay.png)",
      cxxopts::value(f.replay))("resume", "continue an interrupted run from its sidecar .json",
                                cxxopts::value(f.resume));
  // clang-format on
  f.model.add_to(opts, true, false);
}

Flags parse(const std::vector<std::string>& args, cxxopts::ParseResult* result_out = nullptr) {
  Flags f;
  cxxopts::Options opts("clipguide generate", "");
  add_options(opts, f);
  std::vector<std::string> storage = {"generate"};
  storage.insert(storage.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& s : storage) argv.push_back(s.data());
  auto result = opts.parse(static_cast<int>(argv.size()), argv.data());
  if (result_out != nullptr) *result_out = result;
  return f;
}

// The request the options describe: --clip-model's and --size's syntax read here, every range checked by
// the request's validate().
cg::GenerateRequest to_request(Flags f) {
  cg::GenerateRequest r = std::move(f.request);
  r.clip = f.model;
  for (const auto& spec : f.clip_models) {
    auto [path, numbers] = cg::split_trailing_numbers(spec, 2);
    cg::GuideModelSpec m{path};
    if (!numbers.empty()) m.weight = numbers[0];
    if (numbers.size() > 1) {
      if (numbers[1] != std::floor(numbers[1]) || std::abs(numbers[1]) > 1e9)
        cg::fail("--clip-model ", spec, ": cutn must be a whole number");
      m.cutn = static_cast<int64_t>(numbers[1]);
      if (m.cutn == 0) cg::fail("--clip-model ", spec, ": cutn must be positive");
    }
    r.clip_models.push_back(std::move(m));
  }
  if (!f.size.empty()) {
    char x = 0, extra = 0;
    std::istringstream in(f.size);
    if (!(in >> r.width >> x >> r.height) || x != 'x' || (in >> extra) || r.width < 1 || r.height < 1)
      cg::fail("--size ", f.size, " is not WxH with positive sides (for example 512x384)");
  }
  return r;
}

// The request fields the command line set (use_bundled_models leaves them alone).
std::set<std::string> given_fields(const cxxopts::ParseResult& given) {
  std::set<std::string> out;
  for (const auto& kv : given.arguments()) {
    std::string name = kv.key();
    std::replace(name.begin(), name.end(), '-', '_');
    if (name == "init_image") name = "init_images";
    out.insert(name);
  }
  return out;
}

std::string stem(const std::string& png) { return png.substr(0, png.size() - 4); }

// The command line's notes for the bundled models a run falls back to.
void note_bundled(const cg::GenerateRequest& r, const cg::BundledChoice& chosen) {
  auto noted = [](const std::string& what, const char* flag, const std::string& path) {
    cg::warn("clipguide generate: no ", flag, " given; using the bundled toy ", what, " (", path, ")");
  };
  if (chosen.clip) {
    cg::warn("clipguide generate: no --clip-model given; using the bundled toy CLIP (", r.clip_models[0].path,
             "), which knows only coloured shapes; pass --clip-model for a real CLIP (see README: Models)");
  }
  if (chosen.vqgan) noted("VQGAN", "--vqgan-checkpoint", r.vqgan_checkpoint);
  if (chosen.diffusion) noted("diffusion model", "--diffusion-checkpoint", r.diffusion_checkpoint);
}

}  // namespace

int run_generate(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  {
    Flags help;
    cxxopts::Options opts(
        "clipguide generate",
        "Make an image that fits a prompt: a VQGAN, pixels, a diffusion model or Stable Diffusion, guided by "
        "CLIP.");
    add_options(opts, help);
    if (!parse_or_help(opts, argc, argv)) return 0;
  }
  cxxopts::ParseResult given;
  Flags flags = parse(args, &given);
  const Flags here = flags;
  cg::GenerateRequest r;
  std::optional<cg::ResumePoint> resume;
  const bool replaying = !flags.replay.empty();
  if (replaying || !flags.resume.empty()) {
    // The recorded request defines the image; this command line may only choose where the outputs go.
    const std::string source = replaying ? flags.replay : flags.resume;
    cg::GenerateRecord record = cg::read_generate_record(source);
    // Sidecars before the request was recorded hold the command line, bundled settings and seed included.
    r = record.request ? *record.request : to_request(parse(record.argv));
    r.command_line = record.argv;
    if (replaying) {
      r.output = given.count("output") ? here.request.output : stem(r.output) + ".replay.png";
      r.pinned_models = record.models;
    } else {
      if (!record.resume)
        cg::fail(source, ": this run finished; there is nothing to resume (use --replay to run it again)");
      r.output = (fs::path(source).parent_path() / fs::path(r.output).filename()).string();
      resume = record.resume;
    }
    r.frames = here.request.frames;
    r.log = here.request.log;
    r.save_every = here.request.save_every;
    if (given.count("threads")) r.clip.threads = here.model.threads;
  } else {
    r = to_request(flags);
    const std::set<std::string> fields = given_fields(given);
    note_bundled(r, cg::use_bundled_models(r, fields));
    cg::use_generator_defaults(r, fields);
    if (r.seed < 0) r.seed = static_cast<int64_t>(std::random_device{}() & 0x7fffffff);
    r.command_line = args;
  }

  // Ctrl-C from the run's start on saves the run and its state; before, while loading, it just stops: there
  // is nothing to save yet.
  std::unique_ptr<InterruptScope> interrupt;
  std::unique_ptr<Progress> progress;
  cg::GenerateCallbacks callbacks;
  callbacks.on_start = [&](int64_t total, int64_t done) {
    interrupt = std::make_unique<InterruptScope>();
    progress = std::make_unique<Progress>(static_cast<size_t>(total), "steps");
    progress->advance(static_cast<size_t>(done));
  };
  callbacks.on_step = [&](const cg::GenerateStep& step) {
    std::string note = cg::cat("loss ", std::to_string(step.loss).substr(0, 6));
    for (const auto& [name, value] : step.parts)
      note += cg::cat(" | ", name.substr(0, 24), " ", std::to_string(value).substr(0, 6));
    progress->advance(1, note);
  };
  callbacks.should_stop = [] { return InterruptScope::requested(); };
  const cg::GenerateResult result = cg::generate(r, callbacks, resume ? &*resume : nullptr);
  progress.reset();
  if (result.stopped) {
    cg::warn("clipguide generate: stopped at step ", result.steps_done, "; saved ", r.output,
             " and its state; continue with: clipguide generate --resume ", result.sidecar);
    throw Interrupted();
  }
  bool flagged = false;
  for (const cg::GeneratedImage& image : result.images) {
    if (image.flagged) {
      flagged = true;
      cg::warn("clipguide generate: candidate ", image.candidate, " (seed ", image.seed, ") is flagged: cos ",
               image.denied_cos, " to the denied concept ", image.denied, " is above ", r.deny_threshold,
               "; it was not written");
      continue;
    }
    if (r.steps == 0 || std::isnan(image.score)) {  // a reconstruction, or an sd run without a CLIP
      std::cout << image.path << "\n";
    } else {
      std::cout << image.path << "\t" << image.score << "\n";
    }
  }
  return flagged ? 3 : 0;
}
