// The differences between the libtorch versions clipguide builds against — Debian's 1.13 (CPU) and
// today's 2.x (the PyPI wheel's, with CUDA) — in one place. Code elsewhere uses what this header names, never
// the version macros.
#pragma once

#include <ATen/autocast_mode.h>
#include <torch/types.h>
#include <torch/version.h>

#include <optional>

#define CLIPGUIDE_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

// at::scaled_dot_product_attention (2.0+): fused attention kernels (flash and memory-efficient on CUDA, a
// flash kernel on CPU) with the same math as softmax(q k^T / sqrt(d) + mask) v.
#define CLIPGUIDE_HAS_SDPA CLIPGUIDE_TORCH_AT_LEAST(2, 0)

namespace clipguide::compat {

// libtorch's optional arguments: c10::optional until 2.4, an alias of std::optional since.
#if CLIPGUIDE_TORCH_AT_LEAST(2, 4)
template <typename T>
using optional = std::optional<T>;
#else
template <typename T>
using optional = c10::optional<T>;
#endif

// Autocast state per device type. 2.4 replaced the per-device setters (set_cpu_enabled,
// set_autocast_gpu_dtype, ...) with ones taking the device type.
inline bool autocast_enabled(at::DeviceType type) {
#if CLIPGUIDE_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(type);
#else
  return type == at::kCPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
#endif
}

inline at::ScalarType autocast_dtype(at::DeviceType type) {
#if CLIPGUIDE_TORCH_AT_LEAST(2, 4)
  return at::autocast::get_autocast_dtype(type);
#else
  return type == at::kCPU ? at::autocast::get_autocast_cpu_dtype() : at::autocast::get_autocast_gpu_dtype();
#endif
}

inline void set_autocast(at::DeviceType type, bool enabled, at::ScalarType dtype) {
#if CLIPGUIDE_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(type, enabled);
  at::autocast::set_autocast_dtype(type, dtype);
#else
  if (type == at::kCPU) {
    at::autocast::set_cpu_enabled(enabled);
    at::autocast::set_autocast_cpu_dtype(dtype);
  } else {
    at::autocast::set_enabled(enabled);
    at::autocast::set_autocast_gpu_dtype(dtype);
  }
#endif
}

}  // namespace clipguide::compat
