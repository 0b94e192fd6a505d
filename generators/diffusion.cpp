#include "generators/diffusion.h"

#include <cmath>
#include <set>
#include <sstream>

#include "core/error.h"

namespace clipguide {

std::vector<int64_t> space_timesteps(int64_t num_timesteps, const std::string& respacing) {
  if (respacing.empty()) {
    std::vector<int64_t> all(num_timesteps);
    for (int64_t i = 0; i < num_timesteps; ++i) all[i] = i;
    return all;
  }
  std::set<int64_t> steps;
  if (respacing.rfind("ddim", 0) == 0) {
    int64_t desired = 0;
    try {
      desired = std::stoll(respacing.substr(4));
    } catch (const std::exception&) {
      fail("timestep respacing '", respacing, "': ddim needs a count, like ddim50");
    }
    for (int64_t stride = 1; stride < num_timesteps; ++stride) {
      if ((num_timesteps + stride - 1) / stride == desired) {
        for (int64_t i = 0; i < num_timesteps; i += stride) steps.insert(i);
        return {steps.begin(), steps.end()};
      }
    }
    fail("timestep respacing '", respacing, "': no stride of ", num_timesteps, " steps gives exactly ",
         desired);
  }
  std::vector<int64_t> counts;
  std::stringstream in(respacing);
  for (std::string part; std::getline(in, part, ',');) {
    try {
      size_t used = 0;
      counts.push_back(std::stoll(part, &used));
      if (used != part.size() || counts.back() < 1) throw std::invalid_argument(part);
    } catch (const std::exception&) {
      fail("timestep respacing '", respacing, "' is not a count, comma-separated counts, or ddimN");
    }
  }
  const int64_t size_per = num_timesteps / static_cast<int64_t>(counts.size());
  const int64_t extra = num_timesteps % static_cast<int64_t>(counts.size());
  int64_t start = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const int64_t size = size_per + (static_cast<int64_t>(i) < extra ? 1 : 0);
    if (size < counts[i])
      fail("timestep respacing '", respacing, "': a section of ", size, " steps cannot hold ", counts[i]);
    const double stride =
        counts[i] <= 1 ? 1.0 : static_cast<double>(size - 1) / static_cast<double>(counts[i] - 1);
    double cur = 0.0;
    for (int64_t j = 0; j < counts[i]; ++j) {
      steps.insert(start + static_cast<int64_t>(std::nearbyint(cur)));  // Python's round: half to even
      cur += stride;
    }
    start += size;
  }
  return {steps.begin(), steps.end()};
}

DiffusionSchedule DiffusionSchedule::make(const std::string& noise_schedule, int64_t steps,
                                          const std::string& respacing) {
  if (steps < 1 || steps > 100000) fail("diffusion steps must be between 1 and 100000 (got ", steps, ")");
  const auto f64 = torch::TensorOptions().dtype(torch::kDouble);
  torch::Tensor base;
  if (noise_schedule == "linear") {
    const double scale = 1000.0 / static_cast<double>(steps);
    base = torch::linspace(scale * 0.0001, scale * 0.02, steps, f64);
  } else if (noise_schedule == "cosine") {
    auto alpha_bar = [](double t) { return std::pow(std::cos((t + 0.008) / 1.008 * M_PI / 2), 2); };
    base = torch::empty({steps}, f64);
    for (int64_t i = 0; i < steps; ++i) {
      const double t1 = static_cast<double>(i) / steps, t2 = static_cast<double>(i + 1) / steps;
      base[i] = std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999);
    }
  } else {
    fail("noise schedule '", noise_schedule, "' is not one of linear, cosine");
  }
  // Respacing (respace.py SpacedDiffusion): betas from the kept steps' alphas_cumprod.
  const torch::Tensor base_cumprod = torch::cumprod(1 - base, 0);
  const auto* ac = base_cumprod.data_ptr<double>();
  std::vector<double> betas;
  std::vector<int64_t> map;
  double last = 1.0;
  for (int64_t i : space_timesteps(steps, respacing)) {
    betas.push_back(1 - ac[i] / last);
    last = ac[i];
    map.push_back(i);
  }
  DiffusionSchedule s;
  s.original_steps = steps;
  s.timestep_map = torch::tensor(map, torch::kLong);
  s.betas = torch::tensor(betas, f64);
  const torch::Tensor alphas = 1 - s.betas;
  s.alphas_cumprod = torch::cumprod(alphas, 0);
  s.alphas_cumprod_prev = torch::cat({torch::ones({1}, f64), s.alphas_cumprod.narrow(0, 0, s.size() - 1)});
  s.sqrt_recip_alphas_cumprod = torch::sqrt(1.0 / s.alphas_cumprod);
  s.sqrt_recipm1_alphas_cumprod = torch::sqrt(1.0 / s.alphas_cumprod - 1);
  s.sqrt_one_minus_alphas_cumprod = torch::sqrt(1.0 - s.alphas_cumprod);
  s.posterior_variance = s.betas * (1.0 - s.alphas_cumprod_prev) / (1.0 - s.alphas_cumprod);
  const torch::Tensor pv_head = s.size() > 1 ? s.posterior_variance.narrow(0, 1, 1) : s.betas.narrow(0, 0, 1);
  s.posterior_log_variance_clipped =
      torch::log(torch::cat({pv_head, s.posterior_variance.narrow(0, 1, s.size() - 1)}));
  s.posterior_mean_coef1 = s.betas * torch::sqrt(s.alphas_cumprod_prev) / (1.0 - s.alphas_cumprod);
  s.posterior_mean_coef2 = (1.0 - s.alphas_cumprod_prev) * torch::sqrt(alphas) / (1.0 - s.alphas_cumprod);
  s.log_betas = torch::log(s.betas);
  return s;
}

torch::Tensor extract(const torch::Tensor& values, const torch::Tensor& t, const torch::Tensor& like) {
  torch::Tensor v = values.to(like.device()).index_select(0, t.to(like.device())).to(torch::kFloat);  // [B]
  std::vector<int64_t> shape(like.dim(), 1);
  shape[0] = v.size(0);
  return v.view(shape).expand(like.sizes());
}

torch::Tensor predict_xstart_from_eps(const DiffusionSchedule& s, const torch::Tensor& x,
                                      const torch::Tensor& t, const torch::Tensor& eps) {
  return extract(s.sqrt_recip_alphas_cumprod, t, x) * x - extract(s.sqrt_recipm1_alphas_cumprod, t, x) * eps;
}

torch::Tensor predict_eps_from_xstart(const DiffusionSchedule& s, const torch::Tensor& x,
                                      const torch::Tensor& t, const torch::Tensor& pred_xstart) {
  return (extract(s.sqrt_recip_alphas_cumprod, t, x) * x - pred_xstart) /
         extract(s.sqrt_recipm1_alphas_cumprod, t, x);
}

torch::Tensor q_posterior_mean(const DiffusionSchedule& s, const torch::Tensor& x_start,
                               const torch::Tensor& x, const torch::Tensor& t) {
  return extract(s.posterior_mean_coef1, t, x) * x_start + extract(s.posterior_mean_coef2, t, x) * x;
}

torch::Tensor q_sample(const DiffusionSchedule& s, const torch::Tensor& x_start, const torch::Tensor& t,
                       const torch::Tensor& noise) {
  return extract(s.alphas_cumprod.sqrt(), t, x_start) * x_start +
         extract(s.sqrt_one_minus_alphas_cumprod, t, x_start) * noise;
}

Prediction p_mean_variance(const DiffusionSchedule& s, const torch::Tensor& model_output,
                           const torch::Tensor& x, const torch::Tensor& t, bool clip_denoised) {
  const int64_t C = x.size(1);
  Prediction p;
  torch::Tensor eps = model_output;
  if (model_output.size(1) == 2 * C) {
    // Learned range: interpolate log variance between the clipped posterior's and beta's.
    auto parts = model_output.split(C, 1);
    eps = parts[0];
    const torch::Tensor frac = (parts[1] + 1) / 2;
    p.log_variance =
        frac * extract(s.log_betas, t, x) + (1 - frac) * extract(s.posterior_log_variance_clipped, t, x);
    p.variance = torch::exp(p.log_variance);
  } else {
    TORCH_CHECK(model_output.size(1) == C, "model output has ", model_output.size(1), " channels for ", C,
                " input channels");
    // Fixed large variance: betas, with the posterior's at step 0.
    const torch::Tensor var =
        torch::cat({s.posterior_variance.narrow(0, 1, 1), s.betas.narrow(0, 1, s.size() - 1)});
    p.variance = extract(var, t, x);
    p.log_variance = extract(torch::log(var), t, x);
  }
  p.pred_xstart = predict_xstart_from_eps(s, x, t, eps);
  if (clip_denoised) p.pred_xstart = p.pred_xstart.clamp(-1, 1);
  p.mean = q_posterior_mean(s, p.pred_xstart, x, t);
  return p;
}

Denoiser plain_denoiser(const DiffusionSchedule& s, ModelFn model, bool clip_denoised) {
  return [s, model = std::move(model), clip_denoised](const torch::Tensor& x, const torch::Tensor& t) {
    return p_mean_variance(s, model(x, t), x, t, clip_denoised);
  };
}

Prediction condition_mean(const Prediction& p, const torch::Tensor& grad) {
  Prediction out = p;
  out.mean = p.mean.to(torch::kFloat) + p.variance * grad.to(torch::kFloat);
  return out;
}

Prediction condition_score(const DiffusionSchedule& s, const Prediction& p, const torch::Tensor& x,
                           const torch::Tensor& t, const torch::Tensor& grad) {
  const torch::Tensor alpha_bar = extract(s.alphas_cumprod, t, x);
  torch::Tensor eps = predict_eps_from_xstart(s, x, t, p.pred_xstart);
  eps = eps - (1 - alpha_bar).sqrt() * grad;
  Prediction out = p;
  out.pred_xstart = predict_xstart_from_eps(s, x, t, eps);
  out.mean = q_posterior_mean(s, out.pred_xstart, x, t);
  return out;
}

namespace {

// 1 where t > 0, as [B, 1, 1, 1]: the last step adds no noise.
torch::Tensor nonzero_mask(const torch::Tensor& t, const torch::Tensor& x) {
  std::vector<int64_t> shape(x.dim(), 1);
  shape[0] = x.size(0);
  return (t != 0).to(x.device(), torch::kFloat).view(shape);
}

}  // namespace

torch::Tensor p_sample(const Denoiser& denoiser, const torch::Tensor& x, const torch::Tensor& t,
                       const torch::Tensor& noise) {
  const Prediction p = denoiser(x, t);
  return p.mean + nonzero_mask(t, x) * torch::exp(0.5 * p.log_variance) * noise;
}

torch::Tensor ddim_sample(const DiffusionSchedule& s, const Denoiser& denoiser, const torch::Tensor& x,
                          const torch::Tensor& t, double eta, const torch::Tensor& noise) {
  const Prediction p = denoiser(x, t);
  const torch::Tensor eps = predict_eps_from_xstart(s, x, t, p.pred_xstart);
  const torch::Tensor alpha_bar = extract(s.alphas_cumprod, t, x);
  const torch::Tensor alpha_bar_prev = extract(s.alphas_cumprod_prev, t, x);
  const torch::Tensor sigma =
      eta * torch::sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch::sqrt(1 - alpha_bar / alpha_bar_prev);
  const torch::Tensor mean_pred =
      p.pred_xstart * torch::sqrt(alpha_bar_prev) + torch::sqrt(1 - alpha_bar_prev - sigma.pow(2)) * eps;
  return mean_pred + nonzero_mask(t, x) * sigma * noise;
}

// Algorithm: k-diffusion sample_euler_ancestral (eta 1), one step from sigma_t to the next discrete sigma.
torch::Tensor euler_ancestral_sample(const DiffusionSchedule& s, const Denoiser& denoiser,
                                     const torch::Tensor& x, const torch::Tensor& t,
                                     const torch::Tensor& noise) {
  const Prediction p = denoiser(x, t);
  const torch::Tensor sigma = extract(s.sqrt_recipm1_alphas_cumprod, t, x);
  // sigma_next = sqrt(1 / alpha_bar_prev - 1): 0 after the last step.
  const torch::Tensor alpha_bar_prev = extract(s.alphas_cumprod_prev, t, x);
  const torch::Tensor sigma_next = torch::sqrt(1 / alpha_bar_prev - 1);
  const torch::Tensor x_sigma = x * extract(s.sqrt_recip_alphas_cumprod, t, x);  // x_t / sqrt(alpha_bar)
  const torch::Tensor sigma_up = torch::minimum(
      sigma_next, torch::sqrt(sigma_next.pow(2) * (sigma.pow(2) - sigma_next.pow(2)) / sigma.pow(2)));
  const torch::Tensor sigma_down = torch::sqrt(sigma_next.pow(2) - sigma_up.pow(2));
  const torch::Tensor d = (x_sigma - p.pred_xstart) / sigma;
  const torch::Tensor next = x_sigma + d * (sigma_down - sigma) + noise * sigma_up;
  return next * torch::sqrt(alpha_bar_prev);  // back to the VP parameterisation
}

torch::Tensor sample_step(Sampler sampler, const DiffusionSchedule& s, const Denoiser& denoiser,
                          const torch::Tensor& x, const torch::Tensor& t, double eta,
                          const torch::Tensor& noise) {
  switch (sampler) {
    case Sampler::Ddpm:
      return p_sample(denoiser, x, t, noise);
    case Sampler::Ddim:
      return ddim_sample(s, denoiser, x, t, eta, noise);
    case Sampler::EulerAncestral:
      return euler_ancestral_sample(s, denoiser, x, t, noise);
  }
  return x;
}

}  // namespace clipguide
