// One run of a generator toward its prompts, step by step: an optimisation (GuidedRun) or a sampling loop
// (DiffusionRun). The CLI drives both through this interface; each run's whole state is a TensorMap, so a run
// saved after step k and resumed gives the same image as one never stopped.
#pragma once

#include <torch/torch.h>

#include "core/tensor_map.h"
#include "guidance/clip_guide.h"

namespace clipguide {

class Run {
 public:
  virtual ~Run() = default;
  // One step; returns the loss that guided it, per sample (parts by name; empty when unguided).
  virtual GuideResult step() = 0;
  virtual int64_t steps_done() const = 0;
  // The current images [B, 3, H, W] in [0, 1], B = 1 but for a batched DiffusionRun (a sampler's are its
  // current predictions of the final images).
  virtual torch::Tensor image() = 0;
  virtual std::string describe() const = 0;
  virtual TensorMap state() const = 0;
  virtual void load_state(const TensorMap& state) = 0;
};

}  // namespace clipguide
