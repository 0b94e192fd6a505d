// One guided optimisation: a generator, the CLIP guide, an optimizer and the run's own cutout stream. Each
// step: image -> guide loss (+ the generator's regulariser) -> backward -> optional gradient RMS clamp ->
// optimizer step.
#pragma once

#include <memory>

#include "generators/generator.h"
#include "generators/optimizer.h"
#include "generators/run.h"

namespace clipguide {

class GuidedRun : public Run {
 public:
  GuidedRun(std::shared_ptr<Generator> generator, std::shared_ptr<const ClipGuide> guide,
            OptimizerOptions optimizer, double grad_clamp_rms, uint64_t seed);

  // One step; returns the loss it followed (parts by name; the generator's regulariser as "init latent").
  GuideResult step() override;
  int64_t steps_done() const override { return optimizer_.steps(); }
  torch::Tensor image() override;
  std::string describe() const override { return generator_->describe(); }
  Generator& generator() { return *generator_; }

  TensorMap state() const override;
  void load_state(const TensorMap& state) override;

 private:
  std::shared_ptr<Generator> generator_;
  std::shared_ptr<const ClipGuide> guide_;
  Optimizer optimizer_;
  double grad_clamp_rms_;
  torch::Generator rng_;
};

}  // namespace clipguide
