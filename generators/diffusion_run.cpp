#include "generators/diffusion_run.h"

#include <cmath>

#include "core/device.h"
#include "core/error.h"

namespace clipguide {

void DiffusionGuideOptions::validate() const {
  for (double v : {clip_guidance_scale, tv_scale, range_scale, init_scale, grad_clamp}) {
    if (!std::isfinite(v)) fail("diffusion guidance scales must be finite numbers");
  }
  if (cutn_batches < 1 || cutn_batches > 1024)
    fail("cutn_batches must be between 1 and 1024 (got ", cutn_batches, ")");
  if (grad_clamp < 0) fail("grad_clamp must be zero (off) or positive");
}

namespace {

// The sampler's step at respaced index t (on the CPU) of `respaced` steps, for a run that skips
// `skip_timesteps`: the prompt schedule's step, counted as DiffusionRun counts its steps.
int64_t sampler_step(int64_t respaced, int64_t skip_timesteps, const torch::Tensor& t) {
  return respaced - 1 - skip_timesteps - t[0].item<int64_t>();
}

}  // namespace

ModelFn unet_model_fn(std::shared_ptr<UNetModel> unet, const DiffusionSchedule& s, torch::Tensor class_labels,
                      std::function<torch::Tensor(const torch::Tensor& t)> condition, double cond_scale) {
  return [unet = std::move(unet), map = s.timestep_map, labels = std::move(class_labels),
          condition = std::move(condition), cond_scale](const torch::Tensor& x, const torch::Tensor& t) {
    const torch::Tensor raw =
        map.to(x.device()).index_select(0, t.to(x.device()));  // respaced index -> original timestep
    const int64_t B = x.size(0), C = x.size(1);
    const torch::Tensor y = labels.defined() ? labels.to(x.device()).expand({B}) : labels;
    if (!condition) return unet->forward(x, raw, y);
    const torch::Tensor c = condition(t).to(x.device()).expand({B, -1});
    if (cond_scale == 1) return unet->forward(x, raw, y, c);
    // Conditional and unconditional halves of one batch.
    const torch::Tensor both =
        unet->forward(torch::cat({x, x}), torch::cat({raw, raw}), y.defined() ? torch::cat({y, y}) : y,
                      torch::cat({c, torch::zeros_like(c)}));
    const torch::Tensor cond = both.narrow(0, 0, B), uncond = both.narrow(0, B, B);
    const torch::Tensor eps =
        uncond.narrow(1, 0, C) + cond_scale * (cond.narrow(1, 0, C) - uncond.narrow(1, 0, C));
    return cond.size(1) == C ? eps
                             : torch::cat({eps, cond.narrow(1, C, cond.size(1) - C)},
                                          1);  // learned variances: the conditional's
  };
}

ModelFn unet_model_fn(std::shared_ptr<UNetModel> unet, const DiffusionSchedule& s, torch::Tensor class_labels,
                      std::function<torch::Tensor()> condition, double cond_scale) {
  std::function<torch::Tensor(const torch::Tensor&)> at_any_step;
  if (condition)
    at_any_step = [condition = std::move(condition)](const torch::Tensor&) { return condition(); };
  return unet_model_fn(std::move(unet), s, std::move(class_labels), std::move(at_any_step), cond_scale);
}

Denoiser clip_guided_denoiser(const DiffusionSchedule& s, ModelFn model,
                              std::shared_ptr<const ClipGuide> guide, DiffusionGuideOptions options,
                              torch::Generator rng, torch::Tensor init_image,
                              std::shared_ptr<GuideResult> last, int64_t skip_timesteps) {
  options.validate();
  return [s, model = std::move(model), guide = std::move(guide), options, rng, init_image,
          last = std::move(last), skip_timesteps](const torch::Tensor& x, const torch::Tensor& t) mutable {
    // The one place gradients are turned on: for x, through the model and the CLIP loss.
    torch::AutoGradMode enable(true);
    const torch::Tensor x_req = x.detach().requires_grad_(true);
    const torch::Tensor output = model(x_req, t);
    const Prediction raw = p_mean_variance(s, output, x_req, t, false);
    const torch::Tensor fac = extract(s.sqrt_one_minus_alphas_cumprod, t, x);
    const torch::Tensor x_in = raw.pred_xstart * fac + x_req * (1 - fac);  // [B, 3, H, W] in about [-1, 1]
    const int64_t step = sampler_step(s.size(), skip_timesteps, t);
    const int64_t B = x.size(0);
    // The CLIP loss's gradient on the images x_in shows (in [0, 1]), one cutout batch at a time.
    const torch::Tensor images = x_in.add(1).div(2);
    auto guided = guide->gradient(images, rng, step, options.clip_guidance_scale, options.cutn_batches);
    const torch::Tensor images_grad = guided.first;
    GuideResult& summary = guided.second;  // named, not bound: the lambda below captures it (Clang 14)
    // Regularisers in Crowson's units, per sample.
    torch::Tensor reg = torch::zeros({B}, x.options().dtype(torch::kFloat));
    auto add = [&](const char* name, double scale, const torch::Tensor& per_sample) {
      if (scale == 0) return;
      const torch::Tensor v = per_sample * scale;
      reg = reg + v;
      summary.parts.add(name, v);
    };
    add("tv", options.tv_scale, tv_loss_per_sample(x_in));
    add("range", options.range_scale,
        (raw.pred_xstart - raw.pred_xstart.clamp(-1, 1)).pow(2).mean({1, 2, 3}));
    if (init_image.defined())
      add("init", options.init_scale, (x_in - init_image.to(x.device())).pow(2).mean({1, 2, 3}));
    summary.total = summary.total + reg.detach().to(summary.total.device());
    // d loss / d x through x_in (and pred_xstart) and the model; guidance follows -grad.
    const torch::Tensor reg_total = reg.sum();
    torch::Tensor grad =
        reg_total.requires_grad()
            ? torch::autograd::grad({images, reg_total}, {x_req},
                                    {images_grad.to(images.scalar_type()), torch::ones_like(reg_total)})[0]
            : torch::autograd::grad({images}, {x_req}, {images_grad.to(images.scalar_type())})[0];
    grad = -clamp_grad_rms(grad, options.grad_clamp);
    if (last) *last = summary;
    torch::NoGradGuard no_grad;
    const Prediction p = p_mean_variance(s, output.detach(), x, t, true);
    return options.condition_score ? condition_score(s, p, x, t, grad) : condition_mean(p, grad);
  };
}

DiffusionRun::DiffusionRun(std::shared_ptr<UNetModel> unet, DiffusionSchedule schedule,
                           std::shared_ptr<const ClipGuide> guide, DiffusionRunOptions options,
                           const std::optional<torch::Tensor>& init, uint64_t seed)
    : unet_(std::move(unet)),
      schedule_(std::move(schedule)),
      options_(options),
      rng_(make_generator(seed)),
      cut_rng_(make_generator(seed ^ 0x9e3779b97f4a7c15ULL)) {
  if (options_.skip_timesteps < 0 || options_.skip_timesteps >= schedule_.size()) {
    fail("skip_timesteps must be between 0 and ", schedule_.size() - 1, " (the respaced steps)");
  }
  if (options_.skip_timesteps > 0 && !init)
    fail("skip_timesteps needs an init image (the steps skipped start from it)");
  const auto& c = unet_->config();
  if (c.num_classes > 0 && (options_.class_label < 0 || options_.class_label >= c.num_classes)) {
    fail("this UNet is class-conditional (", c.num_classes, " classes): give a class_label 0..",
         c.num_classes - 1);
  }
  const int64_t f = int64_t{1} << (c.channel_mult.size() - 1);
  if (options_.width % f != 0 || options_.height % f != 0) {
    fail("diffusion image size ", options_.width, "x", options_.height,
         " is not a multiple of the UNet's factor ", f);
  }
  if (!std::isfinite(options_.cond_scale)) fail("cond_scale must be a finite number");
  if (options_.batch < 1 || options_.batch > 1024)
    fail("a diffusion batch must hold 1 to 1024 samples (got ", options_.batch, ")");
  std::function<torch::Tensor(const torch::Tensor&)> condition;
  if (c.clip_dim > 0) {
    if (!guide) fail("this UNet is conditioned on CLIP embeddings: it needs a prompt and a CLIP model");
    const int64_t dim = guide->models().front().clip->model->config().embed_dim;
    if (dim != c.clip_dim) {
      fail("this UNet is conditioned on ", c.clip_dim, "-d CLIP embeddings; the first CLIP model gives ", dim,
           "-d ones (", guide->models().front().name, ")");
    }
    // The prompt schedule's step from the sampler's index, as the guided denoiser counts it.
    condition = [guide, respaced = schedule_.size(), skip = options_.skip_timesteps](const torch::Tensor& t) {
      return guide->condition(0, sampler_step(respaced, skip, t));
    };
  }
  const torch::Device device = unet_->parameters().front().device();
  torch::Tensor labels =
      c.num_classes > 0 ? torch::tensor({options_.class_label}, torch::kLong) : torch::Tensor();
  ModelFn model = unet_model_fn(unet_, schedule_, labels, std::move(condition), options_.cond_scale);
  if (options_.unet_dtype != torch::kFloat) {
    model = [model, dtype = options_.unet_dtype](const torch::Tensor& x, const torch::Tensor& t) {
      const Autocast mixed(x.device(), dtype);
      return model(x, t).to(torch::kFloat);  // the sampler's arithmetic stays fp32
    };
  }
  torch::Tensor init_pm =
      init ? (init->to(device, torch::kFloat) * 2 - 1) : torch::Tensor();  // [0, 1] -> [-1, 1]
  const Denoiser inner = guide ? clip_guided_denoiser(schedule_, model, std::move(guide), options_.guidance,
                                                      cut_rng_, init_pm, last_, options_.skip_timesteps)
                               : plain_denoiser(schedule_, model);
  // Keep the latest prediction of the final image for previews and snapshots.
  denoiser_ = [preview = preview_, inner](const torch::Tensor& x, const torch::Tensor& t) {
    Prediction p = inner(x, t);
    *preview = p.pred_xstart.detach();
    return p;
  };
  const torch::Tensor noise =
      torch::randn({options_.batch, c.in_channels, options_.height, options_.width}, rng_).to(device);
  if (init && options_.skip_timesteps > 0) {
    // q_sample at the first index used.
    const torch::Tensor t = torch::full({1}, schedule_.size() - 1 - options_.skip_timesteps, torch::kLong);
    x_ = q_sample(schedule_, init_pm.expand_as(noise), t, noise);
  } else {
    x_ = noise;
  }
}

GuideResult DiffusionRun::step() {
  if (steps_done_ >= total_steps()) fail("the sampler has finished");
  torch::NoGradGuard no_grad;
  const int64_t index = schedule_.size() - 1 - options_.skip_timesteps - steps_done_;
  const torch::Tensor t = torch::full({x_.size(0)}, index, torch::kLong);
  const torch::Tensor noise = torch::randn(x_.sizes(), rng_).to(x_.device());
  *last_ = GuideResult{torch::zeros({x_.size(0)}), {}};
  x_ = sample_step(options_.sampler, schedule_, denoiser_, x_, t, options_.eta, noise);
  ++steps_done_;
  if (!torch::isfinite(x_).all().item<bool>()) {
    fail("the sample diverged (not finite) at step ", steps_done_,
         "; lower the guidance scales or set grad_clamp");
  }
  return *last_;
}

torch::Tensor DiffusionRun::image() {
  const torch::Tensor source = steps_done_ >= total_steps() || !preview_->defined() ? x_ : *preview_;
  return source.add(1).div(2).clamp(0, 1);
}

std::string DiffusionRun::describe() const {
  return cat(unet_->config().describe(), ", ", sampler_name(options_.sampler), " over ", schedule_.size(),
             " respaced steps",
             unet_->config().clip_dim > 0 ? cat(", classifier-free guidance ", options_.cond_scale) : "");
}

TensorMap DiffusionRun::state() const {
  TensorMap out{{"diffusion.x", x_.detach().to(torch::kCPU).clone()},
                {"diffusion.steps_done", torch::tensor({steps_done_})},
                {"rng.noise", rng_.get_state()},
                {"rng.cutouts", cut_rng_.get_state()}};
  if (preview_->defined()) out["diffusion.preview"] = preview_->to(torch::kCPU).clone();
  return out;
}

void DiffusionRun::load_state(const TensorMap& state) {
  auto get = [&](const std::string& key) -> const torch::Tensor& {
    return require(state, key, "resume state");
  };
  if (get("diffusion.x").sizes() != x_.sizes()) fail("resume state does not fit ", describe());
  x_ = get("diffusion.x").to(x_.device());
  steps_done_ = get("diffusion.steps_done").item<int64_t>();
  if (steps_done_ < 0 || steps_done_ > total_steps()) fail("resume state's step count is out of range");
  rng_.set_state(get("rng.noise").to(torch::kUInt8));
  cut_rng_.set_state(get("rng.cutouts").to(torch::kUInt8));
  if (auto it = state.find("diffusion.preview"); it != state.end()) *preview_ = it->second.to(x_.device());
}

}  // namespace clipguide
