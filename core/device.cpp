#include "core/device.h"

#include <ATen/Context.h>
#include <dlfcn.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <torch/cuda.h>
#include <torch/utils.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <thread>

#include "core/dense.h"
#include "core/error.h"
#include "core/torch_compat.h"

namespace clipguide {

torch::Device parse_device(const std::string& spec) {
  if (spec == "cpu") return torch::kCPU;
  if (spec == "auto")
    return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  if (spec == "cuda" || spec.rfind("cuda:", 0) == 0) {
    if (!torch::cuda::is_available()) {
      fail("device ", spec,
           ": CUDA is not available (this libtorch has no CUDA or no GPU is visible); use the CPU");
    }
    int index = 0;
    if (spec.size() > 5) {
      try {
        size_t used = 0;
        index = std::stoi(spec.substr(5), &used);
        if (used != spec.size() - 5) throw std::invalid_argument(spec);
      } catch (const std::logic_error&) {
        fail("device ", spec, ": bad GPU index");
      }
    }
    if (index < 0 || index >= static_cast<int>(torch::cuda::device_count())) {
      fail("device ", spec, ": no such GPU (", torch::cuda::device_count(), " visible)");
    }
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  fail("device ", spec, ": unknown device; choose cpu, cuda, cuda:N or auto");
}

std::vector<torch::Device> parse_devices(const std::string& spec) {
  std::vector<torch::Device> devices;
  for (const std::string& one : split(spec, ',')) devices.push_back(parse_device(one));
  return devices;
}

bool built_with_cuda() {
#ifdef CLIPGUIDE_CUDA
  return true;
#else
  return false;
#endif
}

bool cpu_has_native_bf16() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  return __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

void warn_if_bf16_is_emulated(torch::Device device, torch::ScalarType dtype) {
  if (device.is_cpu() && dtype == torch::kBFloat16 && !cpu_has_native_bf16()) {
    warn("bf16 on this CPU is emulated (no AVX512-BF16): expect it to run several times slower than fp32");
  }
}

void set_cpu_threads(int threads) {
  TORCH_CHECK(threads >= 0, "set_cpu_threads: threads must be positive (or 0: the default), got ", threads);
  if (threads == 0) {
    const char* omp = std::getenv("OMP_NUM_THREADS");
    threads = omp != nullptr && std::atoi(omp) > 0 ? std::atoi(omp)
                                                   : static_cast<int>(std::thread::hardware_concurrency());
  }
  torch::set_num_threads(std::max(threads, 1));
  // OpenBLAS's own setter, when the process has OpenBLAS (looked up, so other BLAS libraries are left alone).
  using SetThreads = void (*)(int);
  if (auto set_blas_threads = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads")))
    set_blas_threads(1);
}

void keep_freed_memory() {
#ifdef __GLIBC__
  for (const char* tunable : {"GLIBC_TUNABLES", "MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_",
                              "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_ARENA_MAX"}) {
    if (std::getenv(tunable) != nullptr) return;
  }
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, INT_MAX);
#endif
}

int openblas_threads() {
  // libtorch with MKL (the PyPI wheel) does not use an OpenBLAS that another library brought into the process
  // (Debian's faiss links one).
  if (at::hasMKL()) return 0;
  using GetThreads = int (*)();
  static const auto get_blas_threads =
      reinterpret_cast<GetThreads>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return get_blas_threads != nullptr ? get_blas_threads() : 0;
}

Autocast::Autocast(torch::Device device, torch::ScalarType dtype, bool enabled)
    : enabled_(enabled), type_(device.type()) {
  if (!enabled_) return;
  was_enabled_ = compat::autocast_enabled(type_);
  was_dtype_ = compat::autocast_dtype(type_);
  compat::set_autocast(type_, true, dtype);
  at::autocast::increment_nesting();
}

Autocast::~Autocast() {
  if (!enabled_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  compat::set_autocast(type_, was_enabled_, was_dtype_);
}

torch::Tensor dense(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias) {
  if (!x.is_cpu() || x.scalar_type() != torch::kFloat || x.dim() != 3 || weight.requires_grad() ||
      (bias.defined() && bias.requires_grad()) || compat::autocast_enabled(at::kCPU) ||
      openblas_threads() != 1) {
    return torch::linear(x, weight, bias);
  }
  // [B, L, D] seen as [B, D, L, 1] with channels-last strides: no copy, and view ops' cheap backward.
  const torch::Tensor view = x.contiguous().permute({0, 2, 1}).unsqueeze(3);
  const torch::Tensor y = torch::conv2d(view, weight.view({weight.size(0), weight.size(1), 1, 1}), bias);
  return y.squeeze(3).permute({0, 2, 1}).contiguous();  // [B, O, L, 1] channels-last -> [B, L, O], no copy
}

}  // namespace clipguide
