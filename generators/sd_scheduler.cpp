#include "generators/sd_scheduler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/json_fields.h"

namespace clipguide {

namespace {

bool is_euler(SdSchedulerKind k) {
  return k == SdSchedulerKind::Euler || k == SdSchedulerKind::EulerAncestral;
}
bool is_dpm(SdSchedulerKind k) {
  return k == SdSchedulerKind::DpmSolver2M || k == SdSchedulerKind::DpmSolver2MKarras;
}

// numpy's round (half to even), which diffusers' timesteps go through.
double round_half_even(double x) { return std::nearbyint(x); }

// numpy's arange(start, stop, step) for a negative float step.
std::vector<double> arange_down(double start, double stop, double step) {
  const auto n = static_cast<int64_t>(std::ceil((stop - start) / step));
  std::vector<double> out;
  for (int64_t i = 0; i < n; ++i) out.push_back(start + static_cast<double>(i) * step);
  return out;
}

// numpy's linspace(a, b, n).
std::vector<double> linspace(double a, double b, int64_t n) {
  std::vector<double> out;
  if (n == 1) return {a};
  const double step = (b - a) / static_cast<double>(n - 1);
  for (int64_t i = 0; i < n; ++i) out.push_back(i == n - 1 ? b : a + static_cast<double>(i) * step);
  return out;
}

// The training betas, in float32 as diffusers makes them.
torch::Tensor training_betas(const SdSchedulerConfig& c) {
  const int64_t n = c.num_train_timesteps;
  if (!c.trained_betas.empty()) return torch::tensor(c.trained_betas, torch::kDouble).to(torch::kFloat);
  if (c.beta_schedule == "linear") return torch::linspace(c.beta_start, c.beta_end, n, torch::kFloat);
  if (c.beta_schedule == "scaled_linear")
    return torch::linspace(std::sqrt(c.beta_start), std::sqrt(c.beta_end), n, torch::kFloat).pow(2);
  // squaredcos_cap_v2: Nichol & Dhariwal's cosine alpha_bar, betas capped at 0.999.
  const auto alpha_bar = [](double t) {
    const double v = std::cos((t + 0.008) / 1.008 * M_PI / 2);
    return v * v;
  };
  std::vector<double> betas;
  for (int64_t i = 0; i < n; ++i) {
    const double t1 = static_cast<double>(i) / n, t2 = static_cast<double>(i + 1) / n;
    betas.push_back(std::min(1 - alpha_bar(t2) / alpha_bar(t1), 0.999));
  }
  return torch::tensor(betas, torch::kDouble).to(torch::kFloat);
}

// Lin et al.'s rescaling to zero terminal SNR (diffusers' rescale_zero_terminal_snr), in float32.
torch::Tensor rescale_zero_terminal_snr(const torch::Tensor& betas) {
  torch::Tensor sqrt_ab = torch::cumprod(1 - betas, 0).sqrt();
  const torch::Tensor first = sqrt_ab[0].clone(), last = sqrt_ab[-1].clone();
  sqrt_ab = (sqrt_ab - last) * (first / (first - last));
  const torch::Tensor ab = sqrt_ab.pow(2);
  const torch::Tensor alphas =
      torch::cat({ab.narrow(0, 0, 1), ab.narrow(0, 1, ab.size(0) - 1) / ab.narrow(0, 0, ab.size(0) - 1)});
  return 1 - alphas;
}

// diffusers' _sigma_to_t: the fractional training timestep of `sigma`, interpolated in log sigma.
double sigma_to_t(double sigma, const std::vector<double>& log_sigmas) {
  const double log_sigma = std::log(std::max(sigma, 1e-10));
  const auto n = static_cast<int64_t>(log_sigmas.size());
  int64_t low = 0;
  for (int64_t i = 0; i < n; ++i)
    if (log_sigma - log_sigmas[i] >= 0) low = i;
  low = std::min(low, n - 2);
  const double lo = log_sigmas[low], hi = log_sigmas[low + 1];
  const double w = std::clamp((lo - log_sigma) / (lo - hi), 0.0, 1.0);
  return (1 - w) * static_cast<double>(low) + w * static_cast<double>(low + 1);
}

// Karras et al.'s sigmas (rho 7) from sigma_max to sigma_min.
std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int64_t steps) {
  const double rho = 7.0, min_inv = std::pow(sigma_min, 1 / rho), max_inv = std::pow(sigma_max, 1 / rho);
  std::vector<double> out;
  for (double r : linspace(0, 1, steps)) out.push_back(std::pow(max_inv + r * (min_inv - max_inv), rho));
  return out;
}

// np.interp(x, [0, 1, ...], table)
double interp(double x, const std::vector<double>& table) {
  if (x <= 0) return table.front();
  const auto last = static_cast<double>(table.size() - 1);
  if (x >= last) return table.back();
  const auto i = static_cast<size_t>(std::floor(x));
  const double f = x - static_cast<double>(i);
  return table[i] + f * (table[i + 1] - table[i]);
}

float f32(double v) { return static_cast<float>(v); }

// The training timesteps of `steps` calls, highest first, as diffusers spaces them for c.timestep_spacing.
// linspace's points are rounded to integers where `round_linspace` (Euler keeps them as float32). `dpm`:
// DPM++ spaces linspace and leading over steps + 1 points and drops the last.
std::vector<double> spaced_timesteps(const SdSchedulerConfig& c, int64_t steps, bool round_linspace,
                                     bool dpm) {
  const int64_t N = c.num_train_timesteps, points = dpm ? steps + 1 : steps;
  std::vector<double> t;
  if (c.timestep_spacing == "trailing") {
    for (double v :
         arange_down(static_cast<double>(N), 0, -static_cast<double>(N) / static_cast<double>(steps)))
      t.push_back(round_half_even(v) - 1);
    return t;
  }
  if (c.timestep_spacing == "linspace") {
    for (double v : linspace(0, static_cast<double>(N - 1), points))
      t.push_back(round_linspace ? round_half_even(v) : f32(v));
    std::reverse(t.begin(), t.end());
  } else {  // leading
    for (int64_t i = points - 1; i >= 0; --i)
      t.push_back(static_cast<double>(i * (N / points) + c.steps_offset));
  }
  if (dpm) t.pop_back();
  return t;
}

}  // namespace

void SdSchedulerConfig::validate(SdSchedulerKind kind) const {
  if (num_train_timesteps < 2 || num_train_timesteps > 100000)
    fail("num_train_timesteps ", num_train_timesteps, " is out of range (2 to 100000)");
  if (trained_betas.empty()) {
    if (beta_schedule != "linear" && beta_schedule != "scaled_linear" && beta_schedule != "squaredcos_cap_v2")
      fail("beta_schedule ", beta_schedule, ": choose linear, scaled_linear or squaredcos_cap_v2");
    if (!(beta_start > 0 && beta_end >= beta_start && beta_end < 1))
      fail("betas from ", beta_start, " to ", beta_end, " are not a noise schedule (0 < start <= end < 1)");
  } else if (static_cast<int64_t>(trained_betas.size()) != num_train_timesteps) {
    fail(trained_betas.size(), " trained_betas for ", num_train_timesteps, " training timesteps");
  }
  if (prediction_type != "epsilon" && prediction_type != "v_prediction")
    fail("prediction_type ", prediction_type, ": choose epsilon or v_prediction");
  if (timestep_spacing != "linspace" && timestep_spacing != "leading" && timestep_spacing != "trailing")
    fail("timestep_spacing ", timestep_spacing, ": choose linspace, leading or trailing");
  if (steps_offset < 0 || steps_offset >= num_train_timesteps)
    fail("steps_offset ", steps_offset, " is out of range");
  if (rescale_betas_zero_snr && kind == SdSchedulerKind::Pndm)
    fail("rescale_betas_zero_snr: PNDM has no zero-terminal-SNR schedule (diffusers' has none either)");
  if (rescale_betas_zero_snr && kind == SdSchedulerKind::Ddim && prediction_type == "epsilon")
    fail("rescale_betas_zero_snr with epsilon prediction: x_0 is undefined at zero SNR (use v_prediction)");
  if (!(clip_sample_range > 0)) fail("clip_sample_range must be positive");
  if (use_karras_sigmas && kind != SdSchedulerKind::Euler && kind != SdSchedulerKind::DpmSolver2M &&
      kind != SdSchedulerKind::DpmSolver2MKarras)
    fail("use_karras_sigmas: only the euler and dpmpp_2m schedulers take Karras sigmas");
}

SdSchedulerConfig read_sd_scheduler_config(const std::string& json_text, const std::string& path,
                                           SdSchedulerKind kind) {
  const nlohmann::json j = parse_json_object(json_text, "scheduler config", path);
  SdSchedulerConfig c;
  // Each class's own defaults for what the file leaves out.
  if (kind == SdSchedulerKind::Pndm) c.set_alpha_to_one = false;
  if (kind == SdSchedulerKind::Ddim) c.clip_sample = true;
  if (is_euler(kind) || is_dpm(kind)) c.timestep_spacing = "linspace";
  read_field(j, "num_train_timesteps", c.num_train_timesteps, path);
  read_field(j, "beta_start", c.beta_start, path);
  read_field(j, "beta_end", c.beta_end, path);
  read_field(j, "beta_schedule", c.beta_schedule, path);
  read_field(j, "prediction_type", c.prediction_type, path);
  read_field(j, "timestep_spacing", c.timestep_spacing, path);
  read_field(j, "steps_offset", c.steps_offset, path);
  if (kind != SdSchedulerKind::Pndm) read_field(j, "rescale_betas_zero_snr", c.rescale_betas_zero_snr, path);
  if (kind == SdSchedulerKind::Ddim || kind == SdSchedulerKind::Pndm)
    read_field(j, "set_alpha_to_one", c.set_alpha_to_one, path);
  if (kind == SdSchedulerKind::Ddim) {
    read_field(j, "clip_sample", c.clip_sample, path);
    read_field(j, "clip_sample_range", c.clip_sample_range, path);
  }
  if (kind == SdSchedulerKind::Euler || kind == SdSchedulerKind::DpmSolver2M)
    read_field(j, "use_karras_sigmas", c.use_karras_sigmas, path);
  if (kind == SdSchedulerKind::DpmSolver2MKarras) c.use_karras_sigmas = true;
  if (j.contains("trained_betas") && !j["trained_betas"].is_null()) {
    if (!j["trained_betas"].is_array()) fail(path, ".trained_betas is not a list of numbers");
    for (const auto& b : j["trained_betas"]) {
      if (!b.is_number() || !(b.get<double>() > 0 && b.get<double>() < 1))
        fail(path, ".trained_betas holds ", b.dump(), ", not a beta in (0, 1)");
      c.trained_betas.push_back(b.get<double>());
    }
  }
  // What diffusers' classes can also be asked for and these are not.
  require_supported(j, "thresholding", false, path);
  if (kind == SdSchedulerKind::Pndm) {
    bool skip_prk = false;
    read_field(j, "skip_prk_steps", skip_prk, path);
    if (!skip_prk)
      fail(path, ": PNDM's Runge-Kutta warm-up (skip_prk_steps false) is not supported; Stable Diffusion's ",
           "configs skip it (skip_prk_steps true)");
  }
  if (is_euler(kind) || is_dpm(kind)) {
    for (const char* key : {"use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas", "use_flow_sigmas"})
      require_supported(j, key, false, path);
    require_supported(j, "final_sigmas_type", "zero", path);
    require_supported(j, "interpolation_type", "linear", path);
    require_supported(j, "timestep_type", "discrete", path);
    for (const char* key : {"sigma_min", "sigma_max", "lambda_min_clipped"})
      if (j.contains(key) && !j[key].is_null()) {
        double v = 0;
        read_field(j, key, v, path);
        if (std::isfinite(v)) fail(path, ": ", key, " is not supported");
      }
  }
  try {
    c.validate(kind);
  } catch (const Error& e) {
    fail(path, ": ", std::string(e.what()));
  }
  return c;
}

SdScheduler::SdScheduler(SdSchedulerKind kind, const SdSchedulerConfig& config)
    : kind_(kind), config_(config) {
  config_.validate(kind);
  if (kind == SdSchedulerKind::DpmSolver2MKarras) config_.use_karras_sigmas = true;
  torch::Tensor betas = training_betas(config_);
  if (config_.rescale_betas_zero_snr) betas = rescale_zero_terminal_snr(betas);
  torch::Tensor ac = torch::cumprod(1 - betas, 0);
  // Zero terminal SNR would make the last sigma infinite: the sigma-based classes nudge alpha_bar off zero.
  if (config_.rescale_betas_zero_snr && kind != SdSchedulerKind::Ddim) ac[-1] = std::pow(2.0, -24);
  const torch::Tensor a = ac.to(torch::kDouble).contiguous();
  alphas_cumprod_.assign(a.data_ptr<double>(), a.data_ptr<double>() + a.numel());
}

double SdScheduler::alpha_bar(int64_t t) const {
  if (t >= 0) return alphas_cumprod_.at(static_cast<size_t>(t));
  return config_.set_alpha_to_one ? 1.0 : alphas_cumprod_[0];
}

double SdScheduler::sigma(int64_t i) const {
  if (sigmas_.empty()) fail("the ", name_of(kSdSchedulers, kind_), " scheduler has no sigmas");
  return sigmas_.at(static_cast<size_t>(std::min<int64_t>(i, static_cast<int64_t>(sigmas_.size()) - 1)));
}

bool SdScheduler::sigma_space() const { return is_euler(kind_); }

double SdScheduler::alpha_bar_at(int64_t i) const {
  if (!sigmas_.empty()) {
    const double s = sigma(i);
    return 1 / (1 + s * s);
  }
  return alpha_bar(static_cast<int64_t>(timesteps_.at(static_cast<size_t>(i))));
}

torch::Tensor SdScheduler::predict_original(const torch::Tensor& out, int64_t i,
                                            const torch::Tensor& sample) const {
  const bool v = config_.prediction_type == "v_prediction";
  if (sigma_space()) {
    const double s = sigma(i);
    return v ? out * (-s / std::sqrt(s * s + 1)) + sample / (s * s + 1) : sample - s * out;
  }
  const double a = alpha_bar_at(i);
  return v ? std::sqrt(a) * sample - std::sqrt(1 - a) * out
           : (sample - std::sqrt(1 - a) * out) / std::sqrt(a);
}

void SdScheduler::set_timesteps(int64_t steps) {
  const int64_t N = config_.num_train_timesteps;
  if (steps < 1 || steps > N)
    fail("steps ", steps, " is out of range (1 to ", N, ", the training timesteps)");
  steps_ = steps;
  timesteps_.clear();
  sigmas_.clear();
  ets_.clear();
  pndm_sample_ = torch::Tensor();
  counter_ = 0;
  previous_x0_ = torch::Tensor();
  lower_order_steps_ = 0;
  init_noise_sigma_ = 1;
  if (kind_ == SdSchedulerKind::Ddim) {
    timesteps_ = spaced_timesteps(config_, steps, true, false);
    return;
  }
  if (kind_ == SdSchedulerKind::Pndm) {
    // PLMS: the second-highest timestep twice (its first step is a two-evaluation warm-up).
    timesteps_ = spaced_timesteps(config_, steps, true, false);
    if (timesteps_.size() >= 2) {
      const double second = timesteps_[1];
      timesteps_.insert(timesteps_.begin() + 1, second);
    }
    return;
  }
  // The training sigmas, from float32 alpha_bar in float32, as diffusers computes them.
  std::vector<double> train_sigmas, log_sigmas;
  for (double ab : alphas_cumprod_) {
    const float s = std::sqrt((1.0f - f32(ab)) / f32(ab));
    train_sigmas.push_back(s);
    log_sigmas.push_back(std::log(s));
  }
  if (is_euler(kind_)) {
    std::vector<double> t = spaced_timesteps(config_, steps, false, false);
    std::vector<double> sig;
    for (double v : t) sig.push_back(interp(v, train_sigmas));
    if (config_.use_karras_sigmas) {
      sig = karras_sigmas(sig.back(), sig.front(), steps);
      t.clear();
      for (double s : sig) t.push_back(f32(sigma_to_t(s, log_sigmas)));
    }
    timesteps_ = t;
    for (double s : sig) sigmas_.push_back(f32(s));
    sigmas_.push_back(0);
    const double max_sigma = *std::max_element(sigmas_.begin(), sigmas_.end());
    init_noise_sigma_ =
        config_.timestep_spacing == "leading" ? f32(std::sqrt(max_sigma * max_sigma + 1)) : max_sigma;
    return;
  }
  std::vector<double> t = spaced_timesteps(config_, steps, true, true);
  std::vector<double> sig;
  if (config_.use_karras_sigmas) {
    sig = karras_sigmas(train_sigmas.front(), train_sigmas.back(), steps);
    t.clear();
    for (double s : sig) t.push_back(round_half_even(sigma_to_t(s, log_sigmas)));
  } else {
    for (double v : t) sig.push_back(interp(v, train_sigmas));
  }
  timesteps_ = t;
  for (double s : sig) sigmas_.push_back(f32(s));
  sigmas_.push_back(0);
}

torch::Tensor SdScheduler::scale_model_input(const torch::Tensor& sample, int64_t i) const {
  if (!is_euler(kind_)) return sample;
  const double s = sigma(i);
  return sample / std::sqrt(s * s + 1);
}

bool SdScheduler::needs_noise(double eta) const {
  return kind_ == SdSchedulerKind::EulerAncestral || (kind_ == SdSchedulerKind::Ddim && eta > 0);
}

torch::Tensor SdScheduler::step(const torch::Tensor& model_output, int64_t i, const torch::Tensor& sample,
                                double eta, const torch::Tensor& noise) {
  if (timesteps_.empty()) fail("the scheduler's steps are not planned (set_timesteps)");
  if (i < 0 || i >= static_cast<int64_t>(timesteps_.size()))
    fail("step ", i, " is not one of the ", timesteps_.size(), " planned");
  if (eta < 0) fail("eta must be at least 0 (got ", eta, ")");
  if (needs_noise(eta) && (!noise.defined() || noise.sizes() != sample.sizes()))
    fail("the ", name_of(kSdSchedulers, kind_), " step needs standard-normal noise shaped as the sample");
  switch (kind_) {
    case SdSchedulerKind::Ddim:
      return step_ddim(model_output, i, sample, eta, noise);
    case SdSchedulerKind::Pndm:
      return step_pndm(model_output, i, sample);
    case SdSchedulerKind::Euler:
    case SdSchedulerKind::EulerAncestral: {
      const double s = sigma(i), next = sigma(i + 1);
      const torch::Tensor x0 = predict_original(model_output, i, sample);
      const torch::Tensor derivative = (sample - x0) / s;
      if (kind_ == SdSchedulerKind::Euler) return sample + derivative * (next - s);
      // Ancestral: down to sigma_down deterministically, then noise up to sigma_next.
      const double up = std::sqrt(next * next * (s * s - next * next) / (s * s));
      const double down = std::sqrt(next * next - up * up);
      return sample + derivative * (down - s) + noise * up;
    }
    default:
      return step_dpm(model_output, i, sample);
  }
}

torch::Tensor SdScheduler::step_ddim(const torch::Tensor& out, int64_t i, const torch::Tensor& sample,
                                     double eta, const torch::Tensor& noise) const {
  const auto t = static_cast<int64_t>(timesteps_[static_cast<size_t>(i)]);
  const int64_t prev = t - config_.num_train_timesteps / steps_;
  const double ab = alpha_bar(t), ab_prev = alpha_bar(prev), beta = 1 - ab;
  torch::Tensor x0 = predict_original(out, i, sample);
  const torch::Tensor eps =
      config_.prediction_type == "v_prediction" ? out * std::sqrt(ab) + sample * std::sqrt(beta) : out;
  if (config_.clip_sample) x0 = x0.clamp(-config_.clip_sample_range, config_.clip_sample_range);
  const double variance = (1 - ab_prev) / beta * (1 - ab / ab_prev);
  const double std_dev = eta * std::sqrt(variance);
  torch::Tensor prev_sample = x0 * std::sqrt(ab_prev) + eps * std::sqrt(1 - ab_prev - std_dev * std_dev);
  if (eta > 0) prev_sample = prev_sample + noise * std_dev;
  return prev_sample;
}

torch::Tensor SdScheduler::step_pndm(const torch::Tensor& out, int64_t i, const torch::Tensor& sample_in) {
  const int64_t stride = config_.num_train_timesteps / steps_;
  auto t = static_cast<int64_t>(timesteps_[static_cast<size_t>(i)]);
  int64_t prev = t - stride;
  torch::Tensor eps = out, sample = sample_in;
  // The second call repeats the first's timestep: it averages the two outputs and steps from the first's
  // sample (a second-order warm-up), so its step spans from t + stride.
  if (counter_ != 1) {
    if (ets_.size() > 3) ets_.erase(ets_.begin(), ets_.end() - 3);
    ets_.push_back(out);
  } else {
    prev = t;
    t = t + stride;
  }
  if (ets_.size() == 1 && counter_ == 0) {
    pndm_sample_ = sample;
  } else if (ets_.size() == 1 && counter_ == 1) {
    eps = (out + ets_.back()) / 2;
    sample = pndm_sample_;
    pndm_sample_ = torch::Tensor();
  } else if (ets_.size() == 2) {
    eps = (ets_[1] * 3 - ets_[0]) / 2;
  } else if (ets_.size() == 3) {
    eps = (ets_[2] * 23 - ets_[1] * 16 + ets_[0] * 5) / 12;
  } else {
    eps = (ets_[3] * 55 - ets_[2] * 59 + ets_[1] * 37 - ets_[0] * 9) / 24;
  }
  ++counter_;
  const double ab = alpha_bar(t), ab_prev = alpha_bar(prev), beta = 1 - ab, beta_prev = 1 - ab_prev;
  // v becomes epsilon after the multistep mix, as diffusers' _get_prev_sample converts it.
  if (config_.prediction_type == "v_prediction") eps = eps * std::sqrt(ab) + sample * std::sqrt(beta);
  const double sample_coeff = std::sqrt(ab_prev / ab);
  const double denom = ab * std::sqrt(beta_prev) + std::sqrt(ab * beta * ab_prev);
  return sample * sample_coeff - eps * ((ab_prev - ab) / denom);
}

torch::Tensor SdScheduler::step_dpm(const torch::Tensor& out, int64_t i, const torch::Tensor& sample) {
  const int64_t calls = static_cast<int64_t>(timesteps_.size());
  // alpha_t and sigma_t of the VP form for a sigma; lambda = log(alpha_t / sigma_t).
  struct Point {
    double alpha, sigma, lambda;
  };
  const auto point = [](double s) {
    const double alpha = 1 / std::sqrt(s * s + 1), sigma_t = s * alpha;
    return Point{alpha, sigma_t, std::log(alpha) - std::log(sigma_t)};
  };
  const Point now = point(sigma(i)), next = point(sigma(i + 1));
  const torch::Tensor x0 = predict_original(out, i, sample);
  // The last step is first order (the final sigma is zero); so is the first, with nothing before it.
  const bool first_order = lower_order_steps_ < 1 || i == calls - 1;
  const double h = next.lambda - now.lambda;
  const double ratio = next.sigma / now.sigma, coeff = next.alpha * (std::exp(-h) - 1);
  torch::Tensor prev_sample;
  if (first_order) {
    prev_sample = sample * ratio - x0 * coeff;
  } else {
    const Point before = point(sigma(i - 1));
    const double r0 = (now.lambda - before.lambda) / h;
    const torch::Tensor d1 = (x0 - previous_x0_) * (1 / r0);
    prev_sample = sample * ratio - x0 * coeff - d1 * (0.5 * coeff);
  }
  previous_x0_ = x0;
  if (lower_order_steps_ < 2) ++lower_order_steps_;
  return prev_sample;
}

TensorMap SdScheduler::state() const {
  TensorMap out{{"scheduler.counter", torch::tensor({counter_})},
                {"scheduler.lower_order_steps", torch::tensor({lower_order_steps_})},
                {"scheduler.ets", torch::tensor({static_cast<int64_t>(ets_.size())})}};
  for (size_t k = 0; k < ets_.size(); ++k) out[cat("scheduler.ets.", k)] = ets_[k].detach().cpu().clone();
  if (pndm_sample_.defined()) out["scheduler.pndm_sample"] = pndm_sample_.detach().cpu().clone();
  if (previous_x0_.defined()) out["scheduler.previous_x0"] = previous_x0_.detach().cpu().clone();
  return out;
}

void SdScheduler::load_state(const TensorMap& state, const torch::Device& device) {
  const auto get = [&](const std::string& key) -> const torch::Tensor& {
    return require(state, key, "resume state");
  };
  counter_ = get("scheduler.counter").item<int64_t>();
  lower_order_steps_ = get("scheduler.lower_order_steps").item<int64_t>();
  const int64_t ets = get("scheduler.ets").item<int64_t>();
  if (counter_ < 0 || lower_order_steps_ < 0 || ets < 0 || ets > 4)
    fail("resume state's scheduler state is out of range");
  ets_.clear();
  for (int64_t k = 0; k < ets; ++k) ets_.push_back(get(cat("scheduler.ets.", k)).to(device));
  const auto optional = [&](const char* key) {
    const auto it = state.find(key);
    return it == state.end() ? torch::Tensor() : it->second.to(device);
  };
  pndm_sample_ = optional("scheduler.pndm_sample");
  previous_x0_ = optional("scheduler.previous_x0");
}

}  // namespace clipguide
