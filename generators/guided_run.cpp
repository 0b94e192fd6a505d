#include "generators/guided_run.h"

#include <cmath>

#include "core/error.h"

namespace clipguide {

GuidedRun::GuidedRun(std::shared_ptr<Generator> generator, std::shared_ptr<const ClipGuide> guide,
                     OptimizerOptions optimizer, double grad_clamp_rms, uint64_t seed)
    : generator_(std::move(generator)),
      guide_(std::move(guide)),
      optimizer_(generator_->parameters(), std::move(optimizer)),
      grad_clamp_rms_(grad_clamp_rms),
      // The cutout stream is its own, so the generator's random start and the cutouts never share draws.
      rng_(make_generator(seed ^ 0x9e3779b97f4a7c15ULL)) {
  if (!(grad_clamp_rms >= 0)) fail("grad_clamp must be zero (off) or positive");
}

GuideResult GuidedRun::step() {
  torch::AutoGradMode enable(true);
  optimizer_.zero_grad();
  GuideResult result = guide_->loss(generator_->image(), rng_, optimizer_.steps());
  if (const torch::Tensor reg = generator_->regularizer(); reg.defined()) {
    result.total = result.total + reg;
    result.parts.add("init latent", reg);
  }
  if (!torch::isfinite(result.total).all().item<bool>()) {  // the step's one read-back
    fail("the loss is not finite at step ", optimizer_.steps() + 1,
         "; lower lr or the regulariser weights, or set grad_clamp");
  }
  result.total.sum().backward();
  if (grad_clamp_rms_ > 0) {
    for (auto& p : generator_->parameters()) {
      if (p.grad().defined()) p.mutable_grad() = clamp_grad_rms(p.grad(), grad_clamp_rms_);
    }
  }
  optimizer_.step();
  generator_->after_step();
  result.total = result.total.detach();
  return result;
}

torch::Tensor GuidedRun::image() {
  torch::NoGradGuard no_grad;
  return generator_->image();
}

TensorMap GuidedRun::state() const {
  TensorMap out = generator_->state();
  for (auto& kv : optimizer_.state()) out.insert(kv);
  out["rng.cutouts"] = rng_.get_state();
  return out;
}

void GuidedRun::load_state(const TensorMap& state) {
  generator_->load_state(state);
  optimizer_.load_state(state);
  rng_.set_state(require(state, "rng.cutouts", "resume state").to(torch::kUInt8));
}

}  // namespace clipguide
