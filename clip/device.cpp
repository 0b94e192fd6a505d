#include "clip/device.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <thread>

#include <ATen/autocast_mode.h>
#include <torch/cuda.h>
#include <torch/utils.h>
#include <torch/version.h>

#include "clip/error.h"

namespace clipguide {

torch::Device parse_device(const std::string& spec) {
  if (spec == "cpu") return torch::kCPU;
  if (spec == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  if (spec == "cuda" || spec.rfind("cuda:", 0) == 0) {
    if (!torch::cuda::is_available()) {
      fail("--device ", spec, ": CUDA is not available (this libtorch has no CUDA or no GPU is visible); use --device cpu");
    }
    int index = 0;
    if (spec.size() > 5) {
      try {
        size_t used = 0;
        index = std::stoi(spec.substr(5), &used);
        if (used != spec.size() - 5) throw std::invalid_argument(spec);
      } catch (const std::logic_error&) {
        fail("--device ", spec, ": bad GPU index");
      }
    }
    if (index < 0 || index >= static_cast<int>(torch::cuda::device_count())) {
      fail("--device ", spec, ": no such GPU (", torch::cuda::device_count(), " visible)");
    }
    return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  }
  fail("--device ", spec, ": unknown device; choose cpu, cuda, cuda:N or auto");
}

void set_cpu_threads(int threads) {
  TORCH_CHECK(threads >= 0, "set_cpu_threads: threads must be positive (or 0: the default), got ", threads);
  if (threads == 0) {
    const char* omp = std::getenv("OMP_NUM_THREADS");
    threads = omp != nullptr && std::atoi(omp) > 0 ? std::atoi(omp) : static_cast<int>(std::thread::hardware_concurrency());
  }
  torch::set_num_threads(std::max(threads, 1));
  // OpenBLAS's own setter, when the process has OpenBLAS (looked up, so other BLAS libraries are left alone).
  using SetThreads = void (*)(int);
  if (auto set_blas_threads = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set_blas_threads(1);
}

namespace {

// libtorch 2.4 replaced the CPU-only autocast setters with ones taking the device type (deprecating the old ones).
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
bool cpu_autocast_enabled() { return at::autocast::is_autocast_enabled(at::kCPU); }
at::ScalarType cpu_autocast_dtype() { return at::autocast::get_autocast_dtype(at::kCPU); }
void set_cpu_autocast(bool enabled, at::ScalarType dtype) {
  at::autocast::set_autocast_enabled(at::kCPU, enabled);
  at::autocast::set_autocast_dtype(at::kCPU, dtype);
}
#else
bool cpu_autocast_enabled() { return at::autocast::is_cpu_enabled(); }
at::ScalarType cpu_autocast_dtype() { return at::autocast::get_autocast_cpu_dtype(); }
void set_cpu_autocast(bool enabled, at::ScalarType dtype) {
  at::autocast::set_cpu_enabled(enabled);
  at::autocast::set_autocast_cpu_dtype(dtype);
}
#endif

}  // namespace

CpuBf16Autocast::CpuBf16Autocast(bool enabled) : enabled_(enabled) {
  if (!enabled_) return;
  was_enabled_ = cpu_autocast_enabled();
  was_dtype_ = cpu_autocast_dtype();
  set_cpu_autocast(true, at::kBFloat16);
  at::autocast::increment_nesting();
}

CpuBf16Autocast::~CpuBf16Autocast() {
  if (!enabled_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_cpu_autocast(was_enabled_, was_dtype_);
}

}  // namespace clipguide
