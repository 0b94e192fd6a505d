// --device cpu|cuda|cuda:N|auto, shared by every command.
#pragma once

#include <torch/types.h>

#include <string>

namespace clipguide {

// "auto" picks CUDA when this build and machine have it; asking for CUDA without it is an Error.
torch::Device parse_device(const std::string& spec);

// Runs libtorch's CPU work on `threads` threads (its OpenMP pool); 0: $OMP_NUM_THREADS if set, else every CPU
// (libtorch as Debian builds it starts with one). Where libtorch's BLAS is OpenBLAS with a thread pool of its own
// (Debian's libopenblas0-pthread), that pool is cut to one thread: two pools busy-waiting on the same cores starve
// each other (on 2 cores, toy-world guidance ran about 2x and ViT-B/32 scoring up to 1.3x slower; bench/README.md).
void set_cpu_threads(int threads);

// While alive (and `enabled`), libtorch's CPU autocast runs matmuls, linear layers and convolutions in bfloat16;
// weights, their gradients and the numerically delicate ops (softmax, norms, losses) stay fp32: mixed-precision
// training on CPUs with bf16 matmul units. Scope it around a forward pass and its loss; leaving the outermost guard
// drops the cached bf16 copies of the weights, so the next step casts the updated ones.
class CpuBf16Autocast {
 public:
  explicit CpuBf16Autocast(bool enabled);
  ~CpuBf16Autocast();
  CpuBf16Autocast(const CpuBf16Autocast&) = delete;
  CpuBf16Autocast& operator=(const CpuBf16Autocast&) = delete;

 private:
  bool enabled_, was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kBFloat16;
};

}  // namespace clipguide
