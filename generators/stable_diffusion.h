// Stable Diffusion (Ref: Rombach et al. 2022, latent diffusion): a text encoder, a UNet over the VAE's
// latents and a scheduler, loaded from the files users have, and sampled as diffusers'
// StableDiffusionPipeline and StableDiffusionImg2ImgPipeline sample (classifier-free guidance, negative
// prompts, an init image at a strength), with CLIP guidance through the VAE as diffusers' community
// clip_guided_stable_diffusion pipeline computes it.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "clip/model.h"
#include "clip/tokenizer.h"
#include "core/names.h"
#include "generators/run.h"
#include "generators/sd_scheduler.h"
#include "generators/unet.h"
#include "generators/vqgan.h"
#include "prompts/prompt.h"

namespace clipguide {

struct StableDiffusion {
  std::shared_ptr<ClipModel> text_encoder;  // a CLIP text tower alone
  std::shared_ptr<const Tokenizer> tokenizer;
  int64_t text_skip_layers = 0;  // SD 2.x's CompVis files condition on the penultimate layer: 1
  std::shared_ptr<UNetModel> unet;
  std::shared_ptr<AutoencoderKL> vae;
  double scaling_factor = 0.18215;  // latents = scaling_factor * the VAE's
  SdSchedulerKind scheduler = SdSchedulerKind::Ddim;
  SdSchedulerConfig scheduler_config;
  std::string path;                // the folder or the single file
  std::vector<std::string> files;  // the weight files read, for the run's record

  // The VAE's downsampling factor (8 for Stable Diffusion).
  int64_t factor() const;
  int64_t latent_channels() const;
  // What image sides must be multiples of: the VAE's factor times the UNet's downsampling.
  int64_t size_multiple() const;
  // What the UNet is conditioned on: the text tower's per-token states of `prompts`, [N, context, width]. A
  // prompt longer than the context is an Error unless `truncate`.
  torch::Tensor encode_prompts(const std::vector<std::string>& prompts, bool truncate) const;
  std::string describe() const;
};

// A diffusers folder (model_index.json; unet/, vae/, text_encoder/, tokenizer/, scheduler/), or a CompVis
// single file (.ckpt through the safe reader, or .safetensors) with its model.diffusion_model.*,
// first_stage_model.* and cond_stage_model.* weights: SD 1.x's Hugging Face text tower
// (cond_stage_model.transformer.*) or SD 2.x's open_clip one (cond_stage_model.model.*, its penultimate layer
// unless the yaml says "last"). `original_config`: a single file's latent diffusion yaml (heads, v
// parameterisation, the text layer), optional; empty: the file's namesake .yaml beside it, if there is one
// (without one an SD 2.x file is read as epsilon-prediction, with a warning). `tokenizer`: a vocabulary file
// or folder; empty: the folder's tokenizer/, else beside the single file, else the CLIP cache. `scheduler`: a
// name from kSdSchedulers; empty: the folder's scheduler class (DDIM for a single file). The scheduler's
// noise schedule is the folder's scheduler_config.json, or Stable Diffusion's for a single file.
StableDiffusion load_stable_diffusion(const std::string& path, const std::string& original_config,
                                      const std::string& tokenizer, const std::string& scheduler,
                                      torch::Device device);

// How CLIP guidance's gradient reaches the latents (--guide-grad): through the VAE decoder and the UNet, as
// the community pipeline takes it; or through the decoder alone, the UNet's prediction held constant (no
// backward pass through the UNet).
enum class SdGuideGrad { Full, DecoderOnly };
inline constexpr Named<SdGuideGrad> kSdGuideGrads[] = {{SdGuideGrad::Full, "full"},
                                                       {SdGuideGrad::DecoderOnly, "decoder-only"}};

struct SdRunOptions {
  int64_t steps = 50;
  double eta = 0;          // DDIM's
  double cfg_scale = 7.5;  // classifier-free guidance; at most 1: the conditional prediction alone
  int64_t width = 512, height = 512;
  int64_t batch = 1;      // samples drawn together
  double strength = 0.8;  // with an init image: how much of the schedule is run over it
  // CLIP guidance (0: none).
  double clip_guidance_scale = 0;
  SdGuideGrad guide_grad = SdGuideGrad::Full;
  int64_t guide_every = 1;  // guide every k-th step
  int64_t cutn_batches = 1;
  double grad_clamp = 0;                         // RMS clamp on the latents' gradient; 0: off
  bool vae_checkpointing = false;                // the decoder's activations recomputed in the backward pass
  torch::ScalarType unet_dtype = torch::kFloat;  // fp16/bf16 under autocast on CUDA
  // When each segment of a story prompt conditions the UNet (its `every` and `blend`; no segments: one prompt
  // throughout), counted in this run's steps as the CLIP guide counts them.
  PromptSchedule story;

  void validate() const;
};

// How many of the scheduler's calls a run makes: all of them, or with an init image the last int(steps *
// strength) steps' (diffusers' get_timesteps).
int64_t sd_calls_run(const StableDiffusion& model, const SdRunOptions& options, bool init);

// One Stable Diffusion sampling, step by step. The prompts are already encoded: `cond` [S, L, D], one row per
// segment of options.story (S = 1 for one prompt), and `uncond` (the negative prompt's, or the empty
// prompt's) [1, L, D]. Within a blended story the UNet's text states move linearly toward the next segment's.
// `guide` may be null (no CLIP guidance). `init` [1, 3, H, W] in [0, 1] or absent. Every random draw comes
// from the seed's CPU stream, in diffusers' order: the starting noise, or for an init image the posterior's
// sample and then the noise added to it; then each stochastic step's noise.
class SdRun : public Run {
 public:
  SdRun(std::shared_ptr<const StableDiffusion> model, torch::Tensor cond, torch::Tensor uncond,
        std::shared_ptr<const ClipGuide> guide, SdRunOptions options,
        const std::optional<torch::Tensor>& init, uint64_t seed);
  GuideResult step() override;
  int64_t steps_done() const override { return steps_done_; }
  int64_t total_steps() const { return static_cast<int64_t>(scheduler_.timesteps().size()) - first_; }
  // The images [batch, 3, H, W] in [0, 1]: the latest prediction of the final image, decoded (the final
  // image once done).
  torch::Tensor image() override;
  // The latents in the scheduler's space, [batch, C, H / f, W / f].
  const torch::Tensor& latents() const { return x_; }
  // Restarts from given draws instead of the seed's: `noise` standard normal shaped as the latents; with an
  // init image, `posterior_noise` too (the parity tests replay diffusers' draws this way).
  void start_from(const torch::Tensor& noise, const torch::Tensor& posterior_noise = {});
  // The model's guided prediction at the next step, and the latents' gradient of the CLIP loss (undefined
  // when this step is not guided): the parts of step(), for the tests.
  struct Prediction {
    torch::Tensor output, grad;
    GuideResult loss;
  };
  Prediction predict();
  std::string describe() const override;
  TensorMap state() const override;
  void load_state(const TensorMap& state) override;

 private:
  // The UNet's output at call i for latents `x` in the scheduler's space and text states `context`.
  torch::Tensor unet(const torch::Tensor& x, int64_t i, const torch::Tensor& context) const;
  // Without graphs: the unconditional prediction (undefined when cfg_scale <= 1) and the conditional one.
  std::pair<torch::Tensor, torch::Tensor> halves(const torch::Tensor& x, int64_t i) const;
  // The conditional text states at this run's step `step`, [batch, L, D].
  torch::Tensor cond_at(int64_t step) const;
  // Classifier-free guidance of the two.
  torch::Tensor guided_by_cfg(const torch::Tensor& uncond, const torch::Tensor& cond) const;
  std::shared_ptr<const StableDiffusion> model_;
  torch::Tensor cond_, uncond_;
  std::shared_ptr<const ClipGuide> guide_;
  SdRunOptions options_;
  SdScheduler scheduler_;
  torch::Tensor init_latents_mean_, init_latents_std_;  // the init image's posterior
  int64_t first_ = 0;                                   // the first call run (an init image skips some)
  torch::Generator rng_, cut_rng_;
  torch::Tensor x_, preview_;
  int64_t steps_done_ = 0;
};

}  // namespace clipguide
