// The Gaussian diffusion process of guided-diffusion and its samplers, as small free functions over a
// denoiser callback: noise schedules, timestep respacing, p_mean_variance with learned-range variance, DDPM
// and DDIM steps, guidance by condition_mean / condition_score, and k-diffusion's Euler ancestral over the
// same callback. Ref: openai/guided-diffusion gaussian_diffusion.py, respace.py; crowsonkb/k-diffusion
// sampling.py.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "core/names.h"

namespace clipguide {

// guided-diffusion's space_timesteps: "25" (evenly strided), "10,15,20" (per section), "ddim50" (stride that
// gives exactly 50). Error naming the spec if it cannot be met.
std::vector<int64_t> space_timesteps(int64_t num_timesteps, const std::string& respacing);

// Everything per respaced step, in float64 as guided-diffusion keeps it.
struct DiffusionSchedule {
  int64_t original_steps = 0;
  torch::Tensor timestep_map;  // [T] int64: respaced index -> original timestep
  torch::Tensor betas, alphas_cumprod, alphas_cumprod_prev, sqrt_recip_alphas_cumprod,
      sqrt_recipm1_alphas_cumprod, sqrt_one_minus_alphas_cumprod, posterior_variance,
      posterior_log_variance_clipped, posterior_mean_coef1, posterior_mean_coef2, log_betas;

  // noise_schedule "linear" or "cosine"; respacing "" keeps every step.
  static DiffusionSchedule make(const std::string& noise_schedule, int64_t steps,
                                const std::string& respacing);
  int64_t size() const { return betas.size(0); }
};

// A model's prediction at (x_t, t): what p_mean_variance returns.
struct Prediction {
  torch::Tensor mean, variance, log_variance, pred_xstart;
};

// x_t [B, C, H, W] and respaced indices t [B] (int64) -> the raw model output [B, C or 2C, H, W]. The
// callback maps t through the schedule's timestep_map itself (see unet_denoiser).
using ModelFn = std::function<torch::Tensor(const torch::Tensor& x, const torch::Tensor& t)>;
// (x_t, t) -> prediction; samplers take this, guided or not.
using Denoiser = std::function<Prediction(const torch::Tensor& x, const torch::Tensor& t)>;

// schedule[t] broadcast to `like`'s shape, as float32 on its device (_extract_into_tensor).
torch::Tensor extract(const torch::Tensor& schedule_values, const torch::Tensor& t,
                      const torch::Tensor& like);

torch::Tensor predict_xstart_from_eps(const DiffusionSchedule& s, const torch::Tensor& x,
                                      const torch::Tensor& t, const torch::Tensor& eps);
torch::Tensor predict_eps_from_xstart(const DiffusionSchedule& s, const torch::Tensor& x,
                                      const torch::Tensor& t, const torch::Tensor& pred_xstart);
torch::Tensor q_posterior_mean(const DiffusionSchedule& s, const torch::Tensor& x_start,
                               const torch::Tensor& x, const torch::Tensor& t);
// x_0 noised to step t: sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) noise.
torch::Tensor q_sample(const DiffusionSchedule& s, const torch::Tensor& x_start, const torch::Tensor& t,
                       const torch::Tensor& noise);

// p_mean_variance from a raw model output (learned-range variance when it has 2C channels, else the fixed
// posterior variance); pred_xstart clamped to [-1, 1] when clip_denoised.
Prediction p_mean_variance(const DiffusionSchedule& s, const torch::Tensor& model_output,
                           const torch::Tensor& x, const torch::Tensor& t, bool clip_denoised);
// The denoiser that runs `model` and applies p_mean_variance.
Denoiser plain_denoiser(const DiffusionSchedule& s, ModelFn model, bool clip_denoised = true);

// Guidance by a gradient of log p(y | x_t) (guided-diffusion's cond_fn output):
// condition_mean (DDPM): mean + variance * grad; condition_score (DDIM): eps - sqrt(1 - alpha_bar) * grad.
Prediction condition_mean(const Prediction& p, const torch::Tensor& grad);
Prediction condition_score(const DiffusionSchedule& s, const Prediction& p, const torch::Tensor& x,
                           const torch::Tensor& t, const torch::Tensor& grad);

// One step from x_t at respaced index t (a [B] tensor) with the given standard-normal noise.
torch::Tensor p_sample(const Denoiser& denoiser, const torch::Tensor& x, const torch::Tensor& t,
                       const torch::Tensor& noise);
torch::Tensor ddim_sample(const DiffusionSchedule& s, const Denoiser& denoiser, const torch::Tensor& x,
                          const torch::Tensor& t, double eta, const torch::Tensor& noise);
// k-diffusion's Euler ancestral step between the schedule's discrete sigmas, sigma = sqrt((1 - alpha_bar) /
// alpha_bar), with x in the VP (x_t) parameterisation so the same denoiser and the same loop state serve
// every sampler.
torch::Tensor euler_ancestral_sample(const DiffusionSchedule& s, const Denoiser& denoiser,
                                     const torch::Tensor& x, const torch::Tensor& t,
                                     const torch::Tensor& noise);

// The samplers by name: "ddpm", "ddim", "euler_a"; anything else is an Error listing them.
enum class Sampler { Ddpm, Ddim, EulerAncestral };
inline constexpr Named<Sampler> kSamplers[] = {
    {Sampler::Ddpm, "ddpm"}, {Sampler::Ddim, "ddim"}, {Sampler::EulerAncestral, "euler_a"}};
inline Sampler parse_sampler(const std::string& name) { return parse_name(kSamplers, name, "sampler"); }
inline const char* sampler_name(Sampler sampler) { return name_of(kSamplers, sampler); }
// One step of the named sampler (eta for DDIM).
torch::Tensor sample_step(Sampler sampler, const DiffusionSchedule& s, const Denoiser& denoiser,
                          const torch::Tensor& x, const torch::Tensor& t, double eta,
                          const torch::Tensor& noise);

}  // namespace clipguide
