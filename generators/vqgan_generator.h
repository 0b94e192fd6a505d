// VQGAN as a generator: the optimised latent is z [1, embed_dim, H/f, W/f]; image = decode(quantize(z))
// mapped to [0, 1], with z clamped to the codebook's range after each step (Crowson's notebook).
#pragma once

#include <memory>
#include <optional>

#include "generators/generator.h"
#include "generators/vqgan.h"

namespace clipguide {

class VqganGenerator : public Generator {
 public:
  // `init`: [1, 3, H, W] in [0, 1] (H, W multiples of the factor) encoded as the start; else random codebook
  // entries drawn with `seed`. `init_weight` > 0 adds init_weight * MSE(z, z_init) (toward the init image's
  // latent, not 0).
  VqganGenerator(std::shared_ptr<Vqgan> vqgan, int64_t width, int64_t height,
                 const std::optional<torch::Tensor>& init, double init_weight, uint64_t seed);
  std::string describe() const override;
  torch::Tensor image() override;
  std::vector<torch::Tensor> parameters() override { return {z_}; }
  torch::Tensor regularizer() override;
  void after_step() override;
  TensorMap state() const override;
  void load_state(const TensorMap& state) override;

 private:
  std::shared_ptr<Vqgan> vqgan_;
  torch::Tensor z_, z_init_, z_min_, z_max_;
  double init_weight_;
};

}  // namespace clipguide
