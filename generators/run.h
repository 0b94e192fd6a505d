// One run of a generator toward its prompts, step by step: an optimisation (GuidedRun) or a sampling loop
// (DiffusionRun). The CLI drives both through this interface; each run's whole state is a TensorMap, so a run
// saved after step k and resumed gives the same image as one never stopped.
#pragma once

#include <torch/torch.h>

#include "clip/tensor_map.h"
#include "guidance/clip_guide.h"

namespace clipguide {

class Run {
 public:
  virtual ~Run() = default;
  // One step; returns the loss that guided it (parts by name; empty when unguided).
  virtual GuideResult step() = 0;
  virtual int64_t steps_done() const = 0;
  // The current image [1, 3, H, W] in [0, 1] (a sampler's is its current prediction of the final image).
  virtual torch::Tensor image() = 0;
  virtual std::string describe() const = 0;
  virtual TensorMap state() const = 0;
  virtual void load_state(const TensorMap& state) = 0;
};

}  // namespace clipguide
