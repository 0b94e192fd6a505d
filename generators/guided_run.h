// One guided optimisation: a generator, the CLIP guide, an optimizer and the run's own cutout stream. Each step:
// image -> guide loss (+ the generator's regulariser) -> backward -> optional gradient RMS clamp -> optimizer step.
// Its whole state is a TensorMap, so a run saved after step k and resumed gives the same image as one never stopped.
#pragma once

#include <memory>

#include "generators/generator.h"
#include "generators/optimizer.h"
#include "guidance/clip_guide.h"

namespace clipguide {

class GuidedRun {
 public:
  GuidedRun(std::shared_ptr<Generator> generator, std::shared_ptr<const ClipGuide> guide, OptimizerOptions optimizer,
            double grad_clamp_rms, uint64_t seed);

  // One step; returns the loss it followed (parts by name; the generator's regulariser as "init latent").
  GuideResult step();
  int64_t steps_done() const { return optimizer_.steps(); }
  // The current image [1, 3, H, W] in [0, 1], without gradients.
  torch::Tensor image();
  Generator& generator() { return *generator_; }

  TensorMap state() const;
  void load_state(const TensorMap& state);

 private:
  std::shared_ptr<Generator> generator_;
  std::shared_ptr<const ClipGuide> guide_;
  Optimizer optimizer_;
  double grad_clamp_rms_;
  torch::Generator rng_;
};

}  // namespace clipguide
