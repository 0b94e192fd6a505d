// The one strict loader: copies a checkpoint's tensors into a module's parameters and buffers by name.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>

#include "clip/tensor_map.h"

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

// While alive, the CPU memory libtorch allocates on this thread may not exceed `max_bytes` in all (freed memory is
// not given back to the budget); one allocation more throws Error naming `source`. Other threads are not affected.
class AllocationCap {
 public:
  AllocationCap(uint64_t max_bytes, std::string source);
  ~AllocationCap();
  AllocationCap(const AllocationCap&) = delete;
  AllocationCap& operator=(const AllocationCap&) = delete;

  // Called by the allocator hook on the capped thread.
  void charge(size_t bytes);
  uint64_t used() const { return used_; }

 private:
  uint64_t max_bytes_, used_ = 0;
  std::string source_;
  AllocationCap* outer_;
};

// What building a model from `sd` may allocate: twice its weights in fp32 plus 64 MiB (binding real checkpoints
// takes about 1x: the parameters, filled in place). A file whose names and shapes describe a far larger model than the
// tensors it holds is an Error before that memory is taken, however its config was inferred.
uint64_t model_memory_budget(const TensorMap& sd);

// Constructs Model(config) and binds `sd` to it with its strict load_weights, under model_memory_budget(sd).
template <typename Model, typename Config>
std::shared_ptr<Model> build_strict(const Config& config, const TensorMap& sd, const std::string& source) {
  AllocationCap cap(model_memory_budget(sd), source);
  auto model = std::make_shared<Model>(config);
  model->load_weights(sd, source);
  return model;
}

}  // namespace clipguide
