#include "core/random.h"

#include <ATen/CPUGeneratorImpl.h>

namespace clipguide {

torch::Generator make_generator(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

GlobalGeneratorScope::GlobalGeneratorScope(std::optional<uint64_t> seed) {
  torch::Generator global = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(global.mutex());
  saved_ = global.get_state();
  if (seed) global.set_current_seed(*seed);
}

GlobalGeneratorScope::~GlobalGeneratorScope() {
  torch::Generator global = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(global.mutex());
  global.set_state(saved_);
}

}  // namespace clipguide
