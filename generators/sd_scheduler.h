// Stable Diffusion's samplers as diffusers computes them (Ref: huggingface/diffusers schedulers/
// scheduling_ddim.py, scheduling_pndm.py, scheduling_euler_discrete.py,
// scheduling_euler_ancestral_discrete.py, scheduling_dpmsolver_multistep.py): the training noise schedule of
// a diffusers scheduler_config.json, the timesteps of N inference steps in its spacing, the scaling of the
// UNet's input, and one step from the UNet's output (epsilon or v). These work on latents in the scheduler's
// own parameterisation: DDIM, PNDM and DPM++ on x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) noise; Euler
// and Euler ancestral on x = x_0 + sigma noise. The noise a stochastic step needs (Euler ancestral, DDIM with
// eta > 0) is passed in, so a seeded stream on the CPU replays a run.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "core/names.h"
#include "core/tensor_map.h"

namespace clipguide {

enum class SdSchedulerKind { Ddim, Pndm, Euler, EulerAncestral, DpmSolver2M, DpmSolver2MKarras };
inline constexpr Named<SdSchedulerKind> kSdSchedulers[] = {
    {SdSchedulerKind::Ddim, "ddim"},
    {SdSchedulerKind::Pndm, "pndm"},
    {SdSchedulerKind::Euler, "euler"},
    {SdSchedulerKind::EulerAncestral, "euler_a"},
    {SdSchedulerKind::DpmSolver2M, "dpmpp_2m"},
    {SdSchedulerKind::DpmSolver2MKarras, "dpmpp_2m_karras"}};
inline SdSchedulerKind parse_sd_scheduler(const std::string& name) {
  return parse_name(kSdSchedulers, name, "scheduler");
}

// A scheduler_config.json as one scheduler class reads it (read_sd_scheduler_config): keys the file lacks
// take that class's defaults, as diffusers' from_config fills them.
struct SdSchedulerConfig {
  int64_t num_train_timesteps = 1000;
  double beta_start = 0.0001, beta_end = 0.02;
  std::string beta_schedule = "linear";      // linear, scaled_linear, squaredcos_cap_v2
  std::vector<double> trained_betas;         // when given, these instead
  std::string prediction_type = "epsilon";   // epsilon or v_prediction
  std::string timestep_spacing = "leading";  // linspace, leading or trailing
  int64_t steps_offset = 0;
  bool rescale_betas_zero_snr = false;
  bool set_alpha_to_one =
      true;                  // DDIM, PNDM: the step after the last lands on alpha_bar 1 (else alpha_bar[0])
  bool clip_sample = false;  // DDIM: x_0 clamped to +-clip_sample_range
  double clip_sample_range = 1.0;
  bool use_karras_sigmas = false;  // Euler, DPM++

  void validate(SdSchedulerKind kind) const;
};

// `json_text` (the file at `path`) as `kind` reads it; an Error names the file and the field that is wrong or
// that asks for what is not supported (thresholding, PNDM's Runge-Kutta warm-up, other solvers).
SdSchedulerConfig read_sd_scheduler_config(const std::string& json_text, const std::string& path,
                                           SdSchedulerKind kind);

class SdScheduler {
 public:
  SdScheduler(SdSchedulerKind kind, const SdSchedulerConfig& config);

  // Plans `steps` inference steps and resets the multistep state.
  void set_timesteps(int64_t steps);
  // What the UNet is given at each call, in order (PNDM calls it once more than `steps`; Euler's Karras
  // timesteps are fractional).
  const std::vector<double>& timesteps() const { return timesteps_; }
  // Standard-normal latents times this start the sampling.
  double init_noise_sigma() const { return init_noise_sigma_; }
  // The UNet's input at call i: the latents scaled for the Euler kinds, as they are for the others.
  torch::Tensor scale_model_input(const torch::Tensor& sample, int64_t i) const;
  // Whether step() needs noise (Euler ancestral; DDIM with eta > 0).
  bool needs_noise(double eta) const;
  // Call i's step: the latents for call i + 1 from the UNet's output at call i. Calls come in order (the
  // multistep kinds remember earlier outputs); `noise` is standard normal, shaped as the sample, where
  // needs_noise, else undefined.
  torch::Tensor step(const torch::Tensor& model_output, int64_t i, const torch::Tensor& sample,
                     double eta = 0, const torch::Tensor& noise = {});

  // The multistep state (PNDM's earlier outputs, DPM++'s previous x_0) by name, for a run saved between steps
  // and resumed; load_state puts it back on `device`.
  TensorMap state() const;
  void load_state(const TensorMap& state, const torch::Device& device);

  SdSchedulerKind kind() const { return kind_; }
  const SdSchedulerConfig& config() const { return config_; }
  // alpha_bar of the training schedule, per training timestep (float32 values, as diffusers keeps them).
  const std::vector<double>& alphas_cumprod() const { return alphas_cumprod_; }
  // The Euler and DPM++ kinds' sigma at call i (sqrt((1 - alpha_bar) / alpha_bar)); 0 past the last call.
  double sigma(int64_t i) const;
  // Whether the latents are x_0 + sigma noise (the Euler kinds) rather than sqrt(alpha_bar) x_0 +
  // sqrt(1 - alpha_bar) noise.
  bool sigma_space() const;
  // alpha_bar of call i's noise level.
  double alpha_bar_at(int64_t i) const;
  // x_0 as call i's model output (epsilon or v) predicts it from `sample`, in this scheduler's latents.
  torch::Tensor predict_original(const torch::Tensor& model_output, int64_t i,
                                 const torch::Tensor& sample) const;

 private:
  torch::Tensor step_ddim(const torch::Tensor& eps, int64_t i, const torch::Tensor& sample, double eta,
                          const torch::Tensor& noise) const;
  torch::Tensor step_pndm(const torch::Tensor& eps, int64_t i, const torch::Tensor& sample);
  torch::Tensor step_dpm(const torch::Tensor& out, int64_t i, const torch::Tensor& sample);
  // alpha_bar at a training timestep, or the final one for a timestep before 0.
  double alpha_bar(int64_t t) const;

  SdSchedulerKind kind_;
  SdSchedulerConfig config_;
  std::vector<double> alphas_cumprod_;  // [num_train_timesteps]
  int64_t steps_ = 0;
  std::vector<double> timesteps_, sigmas_;  // sigmas_: one per call, then the last's target
  double init_noise_sigma_ = 1;
  // PNDM's running state (its ets, counter and cur_sample).
  std::vector<torch::Tensor> ets_;
  torch::Tensor pndm_sample_;
  int64_t counter_ = 0;
  // DPM++'s previous x_0 prediction, and how many lower-order steps it has taken.
  torch::Tensor previous_x0_;
  int64_t lower_order_steps_ = 0;
};

}  // namespace clipguide
