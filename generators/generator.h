// What the optimisation loop needs from a generator: an image in [0, 1] that is differentiable in some
// parameters. VQGAN and pixels are interchangeable behind it.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "core/tensor_map.h"

namespace clipguide {

class Generator {
 public:
  virtual ~Generator() = default;
  virtual std::string describe() const = 0;
  // [1, 3, H, W] in [0, 1], differentiable in parameters().
  virtual torch::Tensor image() = 0;
  // The tensors the optimizer updates (leaves with requires_grad).
  virtual std::vector<torch::Tensor> parameters() = 0;
  // A loss in the generator's own space (VQGAN: latent MSE to the init image's z), or an undefined tensor.
  virtual torch::Tensor regularizer() { return {}; }
  // After each optimizer step (VQGAN: z clamped to the codebook's range).
  virtual void after_step() {}
  // Everything needed to continue the run (parameters and any fixed targets), by name.
  virtual TensorMap state() const = 0;
  virtual void load_state(const TensorMap& state) = 0;
};

// Clamp to [0, 1] whose gradient still flows where it moves the value back into range (Crowson's
// ClampWithGrad).
torch::Tensor clamp_with_grad(const torch::Tensor& x);

}  // namespace clipguide
