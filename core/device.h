// --device cpu|cuda|cuda:N|auto, shared by every command.
#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

#include "core/names.h"

namespace clipguide {

// "auto" picks CUDA when this build and machine have it; asking for CUDA without it is an Error.
torch::Device parse_device(const std::string& spec);

// A comma-separated list of devices ("cuda:0,cuda:1"; one device as parse_device takes it): the devices a
// command spreads its batches over, one model replica each, in this order. A device may repeat (two replicas
// on one GPU).
std::vector<torch::Device> parse_devices(const std::string& spec);

// --precision: the dtype a model computes in (fp16 only on CUDA: the caller checks the device).
inline constexpr Named<torch::ScalarType> kPrecisions[] = {
    {torch::kFloat, "fp32"}, {torch::kBFloat16, "bf16"}, {torch::kHalf, "fp16"}};
inline torch::ScalarType parse_precision(const std::string& name) {
  return parse_name(kPrecisions, name, "precision");
}

// Whether this build has the CUDA code paths (libtorch with CUDA, such as the PyPI wheel's): CUDA graphs,
// pinned transfers, CUDA autocast. Without them those options are an Error, whatever the machine has.
bool built_with_cuda();

// Whether this CPU does bf16 arithmetic in hardware (x86 AVX512-BF16, which AMX machines also have). Without
// it libtorch emulates bf16 through fp32 and conversions: correct, but much slower than fp32 (a ViT-B/32
// guidance step about 13x on an AVX2-only EPYC; bench/README.md).
bool cpu_has_native_bf16();

// One line on stderr when a command asked for bf16 on a CPU without it (see cpu_has_native_bf16).
void warn_if_bf16_is_emulated(torch::Device device, torch::ScalarType dtype);

// Runs libtorch's CPU work on `threads` threads (its OpenMP pool); 0: $OMP_NUM_THREADS if set, else every CPU
// (libtorch as Debian builds it starts with one). Where libtorch's BLAS is OpenBLAS with a thread pool of its
// own (Debian's libopenblas0-pthread), that pool is cut to one thread: two pools busy-waiting on the same
// cores starve each other (on 2 cores, toy-world guidance ran about 2x and ViT-B/32 scoring up to 1.3x
// slower; bench/README.md).
void set_cpu_threads(int threads);

// Keeps the memory a process frees for its next allocations (glibc's malloc; a no-op under other allocators).
// glibc gives blocks above its mmap threshold (128 KiB at first, at most 32 MiB) back to the OS on free, so
// a model's activations, allocated and freed at every step, fault their pages in again each time: a CLIP-
// guided Stable Diffusion step at 256x256 spent about a fifth of its time in page faults (bench/README.md).
// Afterwards every block comes from the heap and its top is not trimmed below 2 GiB of free space; the
// process's resident size then stays near its peak. Left as it is where the user set glibc's own malloc
// tunables (GLIBC_TUNABLES, MALLOC_*_). The CLI calls it at start; a program that links the library chooses.
void keep_freed_memory();

// The thread count of the OpenBLAS in this process (set_cpu_threads makes it 1), or 0 when libtorch's BLAS is
// not OpenBLAS (MKL, as in the PyPI wheel, threads through libtorch's own OpenMP pool).
int openblas_threads();

// While alive (and `enabled`), libtorch's autocast for `device`'s type runs matmuls, linear layers and
// convolutions in `dtype` (bf16 on CPUs with bf16 matmul units; fp16 or bf16 on CUDA); weights, their
// gradients and the numerically delicate ops (softmax, norms, losses) stay fp32: mixed precision. Scope it
// around a forward pass and its loss; leaving the outermost guard drops the cached low-precision copies of
// the weights, so the next step casts the updated ones.
class Autocast {
 public:
  Autocast(torch::Device device, torch::ScalarType dtype, bool enabled = true);
  ~Autocast();
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  bool enabled_;
  at::DeviceType type_;
  bool was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kBFloat16;
};

}  // namespace clipguide
