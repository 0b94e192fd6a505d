// Adam, AdamW and SGD with momentum, written out so that their whole state is a TensorMap a run can save and
// resume bit-identically. Same update rules as torch.optim (Ref: torch/optim/adam.py, adamw.py, sgd.py).
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "core/tensor_map.h"

namespace clipguide {

struct OptimizerOptions {
  std::string kind = "adam";  // adam, adamw, sgd
  double lr = 0.1;
  double lr_decay = 1.0;  // lr is multiplied by this after every step (1: constant)
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double weight_decay = 0.0;  // AdamW's decoupled decay; SGD's L2 term
  double momentum = 0.9;      // SGD

  void validate() const;  // Error naming the bad option
};

class Optimizer {
 public:
  Optimizer(std::vector<torch::Tensor> params, OptimizerOptions options);
  // One update from the parameters' .grad(); parameters without a gradient are left alone.
  void step();
  void zero_grad();
  int64_t steps() const { return steps_; }
  double current_lr() const;
  // Replaces the base learning rate (a schedule computed by the caller; lr_decay still applies).
  void set_lr(double lr) { options_.lr = lr; }

  TensorMap state() const;
  void load_state(const TensorMap& state);

 private:
  std::vector<torch::Tensor> params_;
  OptimizerOptions options_;
  std::vector<torch::Tensor> m_, v_;  // Adam moments; SGD keeps its momentum buffer in m_
  int64_t steps_ = 0;
};

}  // namespace clipguide
