// The generate job as a library call: a GenerateRequest (a plain struct: models, prompts, generator settings,
// candidates, outputs, seed) and generate(), which loads the models, runs the candidates, reranks them by
// CLIP score, writes the ranked PNGs with their sidecars and returns them. `clipguide generate` is this call
// behind a command line; a C++ host fills the struct instead.
//
// Every value is checked in one place, GenerateRequest::validate(), and its errors name the request's fields
// (as they are spelled in the recorded JSON). A run records its request in each sidecar, so a replay runs
// exactly the same job.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "clip/load.h"
#include "generators/optimizer.h"

namespace clipguide {

// One CLIP model of the guide's ensemble.
struct GuideModelSpec {
  std::string path;   // a checkpoint file or folder, as load_clip takes it
  double weight = 1;  // its loss's weight in the ensemble
  int64_t cutn = 0;   // its cutouts per step; 0: the request's cutn
};

// A model file a run used, with its SHA-256: recorded in every sidecar, and checked again by a replay.
struct RecordedModel {
  std::string role;  // clip, vqgan, diffusion
  std::string path, sha256;
};

struct GenerateRequest {
  // Models.
  std::vector<GuideModelSpec> clip_models;
  ModelSettings
      clip;  // vocabulary, heads, device, precision, threads (the generator runs on the same device)
  std::string generator = "vqgan";  // vqgan, pixels, diffusion, sd
  std::string vqgan_checkpoint, vqgan_config;
  std::string diffusion_checkpoint, diffusion_flags;  // flags: empty for 256x256_diffusion_uncond's
  // Stable Diffusion: a diffusers folder or a CompVis single file, its latent diffusion yaml (optional), and
  // a tokenizer vocabulary (empty: the folder's, else beside the file, else the CLIP cache).
  std::string sd_model, sd_config, sd_tokenizer;

  // Prompts: the schedule syntax of PromptSchedule::parse ('text:weight:stop | ...', '^' between story
  // segments), and image prompts FILE[:weight[:stop]].
  std::string prompt;
  int64_t prompt_every = 0;
  bool prompt_blend = false;
  bool truncate = false;  // cut prompts longer than the CLIP context instead of failing
  std::vector<std::string> image_prompts;
  // Concepts to keep away from: each a negative prompt (weight -deny_weight) in every segment, and a last
  // check of every kept image (cos above deny_threshold, in the mean over the guide's models): such an image
  // is ranked after the clean candidates and, if kept, reported flagged and not written.
  std::vector<std::string> deny;
  double deny_weight = 1.0, deny_threshold = 0.25;

  // The guide.
  int64_t cutn = 32;
  double cut_pow = 1.0;
  bool overview = false;
  std::string augments = "flip,jitter,noise";  // names from kAugments, comma-separated, or "none"
  double noise_fac = 0.1;
  std::string loss = "spherical";  // a name from kGuideLosses
  double tv_weight = 0, range_weight = 0, saturation_weight = 0;
  double grad_clamp = 0;  // gradient RMS cap; 0: off
  bool cuda_graph = false;

  // Start images and size.
  std::vector<std::string> init_images;  // several: the run starts from the one CLIP scores best
  double init_weight = 0;
  std::string init_loss = "auto";   // auto, latent (VQGAN), pixel
  int64_t width = 0, height = 0;    // 0: the first init image's, else the UNet's, else 256
  std::string pixel_param = "raw";  // a name from kPixelParams

  // Diffusion.
  std::string sampler = "ddim";    // a name from kSamplers
  std::string timestep_respacing;  // empty: the flags', else 100
  double eta = 0, clip_guidance_scale = 1000, tv_scale = 150, range_scale = 50, init_scale = 0;
  double cond_scale = 3;
  int64_t cutn_batches = 1, skip_timesteps = 0, class_label = -1;
  // Candidates sampled together, one batch through the UNet and CLIP a step (seeded seed + i for the batch
  // starting at candidate i). 0: all of n on CUDA, one at a time on the CPU, where a batch measured slower
  // (bench/diffusion --batch); generate() records the value it chose.
  int64_t batch = 0;

  // Stable Diffusion. The prompt's first segment (its positive texts) conditions the UNet; `negative`, with
  // the denied concepts, is the unconditional side of classifier-free guidance. A CLIP model is optional:
  // without one there is no CLIP guidance, and no ranking (n 1). `steps` are the scheduler's; an init image
  // is noised `strength` of the way (the last steps * strength steps are run). CLIP guidance reuses
  // clip_guidance_scale (100 when not given: use_generator_defaults), cutn_batches and grad_clamp.
  std::string scheduler;  // a name from kSdSchedulers; empty: the model's own
  double cfg_scale = 7.5;
  std::string negative;
  double strength = 0.8;
  std::string guide_grad = "full";  // a name from kSdGuideGrads
  int64_t guide_every = 1;
  bool vae_checkpointing = false;

  // Optimisation (VQGAN and pixels); for diffusion the respacing sets the steps, for sd they are the
  // scheduler's.
  int64_t steps = 250;
  OptimizerOptions optimizer;

  // Candidates: n seeds (seed, seed + 1, ...), reranked by CLIP score after explore_steps (0: a quarter of
  // the steps; diffusion candidates are ranked when finished), the best `keep` refined and written.
  int64_t seed = 0;
  int64_t n = 1, keep = 1, explore_steps = 0;

  // Outputs: the PNG (OUT.json beside it; keep > 1: OUT-1.png, OUT-2.png, ...), every step's image in
  // `frames`, per-step losses as JSON lines in `log`, a snapshot every `save_every` steps.
  std::string output = "output.png";
  std::string frames, log;
  int64_t save_every = 0;

  // Not part of the job: the model files this run must load, with their SHA-256 (a replay's); and the command
  // line it came from, recorded in the sidecars as it was typed.
  std::vector<RecordedModel> pinned_models;
  std::vector<std::string> command_line;

  // An Error naming the first field out of range or inconsistent with the others.
  void validate() const;
  // The request as the JSON object sidecars record (all but pinned_models and command_line), and back.
  // from_json takes missing fields from the defaults above and refuses unknown ones.
  std::string to_json() const;
  static GenerateRequest from_json(const std::string& text, const std::string& source);
};

// Which models the request named none of and now takes from the bundled toy world.
struct BundledChoice {
  bool clip = false, vqgan = false, diffusion = false;
};

// The bundled toy-world models fill what the request leaves empty: the CLIP (when guided), and, with no
// generator weights and `given` not naming "generator", the bundled generator and its weights. With the CLIP
// and the generator bundled, the settings tuned for them (bench/toyworld) fill every field `given` does not
// name (field names as in to_json; "size" for width and height). Errors when the bundled files are missing.
BundledChoice use_bundled_models(GenerateRequest& request, const std::set<std::string>& given);

// The generator's own defaults for the fields `given` does not name (field names as in to_json): for sd,
// diffusers' (steps 50, cutn 4, clip_guidance_scale 100 with a CLIP model and 0 without). Other generators'
// defaults are the request's.
void use_generator_defaults(GenerateRequest& request, const std::set<std::string>& given);

// A step as generate() reports it.
struct GenerateStep {
  size_t candidate = 0;
  uint64_t seed = 0;
  int64_t step = 0;  // steps this candidate has done
  double loss = 0;
  std::vector<std::pair<std::string, double>> parts;  // the loss by prompt and model
  double seconds = 0;
};

struct GenerateCallbacks {
  // Once the models are loaded and the run starts: the steps the whole run takes, and those already done (a
  // resumed run).
  std::function<void(int64_t total, int64_t done)> on_start;
  // After every step.
  std::function<void(const GenerateStep&)> on_step;
  // After every step, with the candidate's current image [1, 3, H, W] in [0, 1] (made only when this is set:
  // a VQGAN decodes it).
  std::function<void(const GenerateStep&, const torch::Tensor& image)> on_image;
  // Polled before every step; true stops the run, which then saves its state to resume from.
  std::function<bool()> should_stop;
};

// Where an interrupted run stands, as its sidecar records it.
struct ResumePoint {
  std::string source;        // the sidecar it was read from, for messages
  std::string state;         // the .state.safetensors file
  std::vector<size_t> kept;  // candidates in rank order, once reranked; empty before
};

struct GeneratedImage {
  std::string path;  // the PNG written; empty when flagged
  size_t candidate = 0;
  uint64_t seed = 0;
  double score = 0;       // the guide's CLIP score at the last step (NaN for an sd run without a CLIP model)
  bool flagged = false;   // closer than deny_threshold to a denied concept: not written
  std::string denied;     // the denied concept it came closest to (with any)
  double denied_cos = 0;  // its cosine to that concept
};

struct GenerateResult {
  std::vector<GeneratedImage> images;  // best first; empty when stopped
  bool stopped = false;                // should_stop asked; `sidecar` records where to resume from
  int64_t steps_done = 0;              // of the candidate that was running when stopped
  std::string sidecar;                 // OUT.json
};

// Runs the request (validated first). `resume`: continue an interrupted run of the same request.
GenerateResult generate(const GenerateRequest& request, const GenerateCallbacks& callbacks = {},
                        const ResumePoint* resume = nullptr);

// What a sidecar (OUT.json, or the metadata chunk of one of our PNGs) records.
struct GenerateRecord {
  std::optional<GenerateRequest> request;  // absent in sidecars of versions that recorded only the argv
  std::vector<std::string> argv;           // the command line, when the run came from one
  std::vector<RecordedModel> models;
  std::optional<ResumePoint> resume;  // present while the run is interrupted
};
GenerateRecord read_generate_record(const std::string& path);

}  // namespace clipguide
