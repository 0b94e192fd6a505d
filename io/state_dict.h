// The one strict loader: copies a checkpoint's tensors into a module's parameters and buffers by name.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>

#include "core/random.h"
#include "core/tensor_map.h"

namespace clipguide {

struct StrictLoad {
  std::string source;  // the file, for the error
  std::string what;    // "a ViT-B/32 CLIP", "a VQGAN (ch 128, ch_mult 1,1,2,2,4)"
  // Checkpoint keys skipped on purpose (optimizer state, loss.*, counters): one visible list per model.
  std::function<bool(const std::string&)> is_known_extra = [](const std::string&) { return false; };
  std::set<std::string> derived_buffers;  // module buffers computed, not loaded (CLIP's causal mask)
};

// BatchNorm's "*.num_batches_tracked" counters: kept by torch.save, never used by inference.
bool is_batchnorm_counter(const std::string& key);

// Missing, unexpected and mis-shaped keys are all reported by name, then it throws Error. On success every
// parameter is frozen (requires_grad false): models are inputs to guidance, never trained by it.
void load_strict(torch::nn::Module& module, const TensorMap& sd, const StrictLoad& how);

// What building a model from `sd` may allocate: twice its weights in fp32 plus 64 MiB (binding real
// checkpoints takes about 1x: the parameters, filled in place).
uint64_t model_memory_budget(const TensorMap& sd);

// An Error naming `source` when a model of `elements` parameters and buffers (in fp32) would not fit
// model_memory_budget(sd): a file whose names and shapes describe a far larger model than the tensors it
// holds is refused before that memory is taken, however its config was inferred.
void check_model_size(double elements, const TensorMap& sd, const std::string& source);

// Element counts of the usual layers, for each model's parameter_elements(config): what constructing it
// allocates, computed without allocating (in doubles, so no hostile size overflows).
namespace elements {
inline double linear(double in, double out, bool bias = true) { return in * out + (bias ? out : 0); }
inline double conv(double in, double out, double kernel, bool bias = true) {
  return in * out * kernel * kernel + (bias ? out : 0);
}
inline double norm(double channels) { return 2 * channels; }            // LayerNorm, GroupNorm: affine
inline double batch_norm(double channels) { return 4 * channels + 1; }  // + running stats and their counter
}  // namespace elements

// Checks Model::parameter_elements(config) against the weights, then constructs Model(config) and binds `sd`
// to it with its strict load_weights. Nothing process-wide changes: no allocator, no seed.
template <typename Model, typename Config>
std::shared_ptr<Model> build_strict(const Config& config, const TensorMap& sd, const std::string& source) {
  check_model_size(Model::parameter_elements(config), sd, source);
  std::shared_ptr<Model> model;
  {
    const GlobalGeneratorScope kept;  // the constructors' initial weights, overwritten by the file's
    model = std::make_shared<Model>(config);
  }
  model->load_weights(sd, source);
  return model;
}

}  // namespace clipguide
