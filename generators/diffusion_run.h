// CLIP-guided diffusion. The guidance wraps the model, not the sampler: clip_guided_denoiser returns the
// guided prediction, so DDPM, DDIM and Euler ancestral take CLIP guidance without knowing about it. Ref:
// Crowson's CLIP guided diffusion notebooks (cond_fn through pred_xstart blended with x), Disco Diffusion
// (cutn_batches, gradient clamping).
#pragma once

#include <memory>
#include <optional>

#include "generators/diffusion.h"
#include "generators/run.h"
#include "generators/unet.h"

namespace clipguide {

struct DiffusionGuideOptions {
  double clip_guidance_scale = 1000;  // on the CLIP loss (spherical distance over cutouts)
  double tv_scale = 150;              // total variation of the blended prediction, in [-1, 1] units
  double range_scale = 50;            // pred_xstart outside [-1, 1]
  double init_scale = 0;              // MSE of the blended prediction to the init image
  int64_t cutn_batches = 1;           // cutout batches per step, gradients averaged (memory for time)
  double grad_clamp = 0;              // RMS clamp on the guidance gradient; 0: off
  // condition_score (DDIM, Euler ancestral) or condition_mean (DDPM, as guided-diffusion's p_sample).
  bool condition_score = true;

  void validate() const;
};

// The model output for (x, t) with t the respaced index (on the CPU); maps t to the UNet's own timestep. A
// CLIP-conditioned UNet takes its embedding [1, clip_dim] from `condition(t)` at every call, with
// classifier-free guidance (Ho & Salimans 2022; GLIDE's model_fn): the unconditional prediction (zero
// embedding) + cond_scale * (conditional - unconditional) on the noise channels, both from one batch;
// cond_scale 1 runs the conditional prediction alone.
ModelFn unet_model_fn(std::shared_ptr<UNetModel> unet, const DiffusionSchedule& s,
                      torch::Tensor class_labels = {},
                      std::function<torch::Tensor(const torch::Tensor& t)> condition = {},
                      double cond_scale = 1);
// The same with a condition that does not change with the step.
ModelFn unet_model_fn(std::shared_ptr<UNetModel> unet, const DiffusionSchedule& s, torch::Tensor class_labels,
                      std::function<torch::Tensor()> condition, double cond_scale = 1);

// Wraps `model` (and the plain p_mean_variance with clipped pred_xstart) with CLIP guidance: the gradient of
// clip_guidance_scale * CLIP loss(cutouts of x_in) + tv_scale * TV(x_in) + range_scale * range(pred_xstart)
// + init_scale * MSE(x_in, init) with x_in = pred_xstart * sqrt(1 - alpha_bar) + x * (1 - sqrt(1 -
// alpha_bar)), taken through the model, for the whole batch x at once (each sample guided by its own loss).
// Cutouts draw from `rng`; the loss of the last call is written to `last` when given. The prompt schedule's
// step is the sampler's: the respaced index t counted from the first index sampled, s.size() - 1 -
// skip_timesteps.
Denoiser clip_guided_denoiser(const DiffusionSchedule& s, ModelFn model,
                              std::shared_ptr<const ClipGuide> guide, DiffusionGuideOptions options,
                              torch::Generator rng, torch::Tensor init_image = {},
                              std::shared_ptr<GuideResult> last = nullptr, int64_t skip_timesteps = 0);

struct DiffusionRunOptions {
  Sampler sampler = Sampler::Ddim;
  double eta = 0.0;            // DDIM's eta
  int64_t skip_timesteps = 0;  // start this many steps in, from the noised init image
  int64_t width = 0, height = 0;
  int64_t batch = 1;  // samples drawn together, one noise stream: one batch through the UNet and CLIP a step
  int64_t class_label = -1;  // class-conditional checkpoints
  double cond_scale = 3;     // classifier-free guidance of CLIP-conditioned checkpoints (1: none)
  // The UNet's compute dtype: float32, or fp16/bf16 under autocast on its device (weights stay fp32).
  torch::ScalarType unet_dtype = torch::kFloat;
  DiffusionGuideOptions guidance;
};

class DiffusionRun : public Run {
 public:
  // `guide` may be null (unguided sampling). `init` [1, 3, H, W] in [0, 1] or absent. image() is [batch, 3,
  // H, W].
  DiffusionRun(std::shared_ptr<UNetModel> unet, DiffusionSchedule schedule,
               std::shared_ptr<const ClipGuide> guide, DiffusionRunOptions options,
               const std::optional<torch::Tensor>& init, uint64_t seed);
  DiffusionRun(const DiffusionRun&) = delete;  // its denoiser shares the run's preview and last loss
  DiffusionRun& operator=(const DiffusionRun&) = delete;
  GuideResult step() override;
  int64_t steps_done() const override { return steps_done_; }
  int64_t total_steps() const { return schedule_.size() - options_.skip_timesteps; }
  torch::Tensor image() override;
  std::string describe() const override;
  TensorMap state() const override;
  void load_state(const TensorMap& state) override;

 private:
  std::shared_ptr<UNetModel> unet_;
  DiffusionSchedule schedule_;
  DiffusionRunOptions options_;
  torch::Generator rng_;      // the sampler's noise
  torch::Generator cut_rng_;  // the guide's cutouts, a stream of its own
  torch::Tensor x_;
  int64_t steps_done_ = 0;
  // Written by the denoiser at each call: the latest prediction of the final image, and the guide's loss.
  std::shared_ptr<torch::Tensor> preview_ = std::make_shared<torch::Tensor>();
  std::shared_ptr<GuideResult> last_ = std::make_shared<GuideResult>();
  Denoiser denoiser_;
};

}  // namespace clipguide
