// Randomness: clipguide draws only from generators its caller passes in, never from libtorch's global one.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <optional>

namespace clipguide {

// A CPU generator for a run's stream (cutouts, noise, a generator's random start).
torch::Generator make_generator(uint64_t seed);

// While alive, libtorch's global CPU generator is seeded with `seed` (when given); on leaving, its state is
// put back. For what can only draw from the global generator, such as the weight initialisation in the module
// constructors: the host program's random stream is the same after a model is built as before. (Another
// thread drawing from the global generator meanwhile would see the interruption.)
class GlobalGeneratorScope {
 public:
  explicit GlobalGeneratorScope(std::optional<uint64_t> seed = std::nullopt);
  ~GlobalGeneratorScope();
  GlobalGeneratorScope(const GlobalGeneratorScope&) = delete;
  GlobalGeneratorScope& operator=(const GlobalGeneratorScope&) = delete;

 private:
  torch::Tensor saved_;
};

}  // namespace clipguide
