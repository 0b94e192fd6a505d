#include "generators/vqgan_generator.h"

#include "core/error.h"

namespace clipguide {

VqganGenerator::VqganGenerator(std::shared_ptr<Vqgan> vqgan, int64_t width, int64_t height,
                               const std::optional<torch::Tensor>& init, double init_weight, uint64_t seed)
    : vqgan_(std::move(vqgan)), init_weight_(init_weight) {
  const int64_t f = vqgan_->config().factor();
  if (width % f != 0 || height % f != 0)
    fail("VQGAN image size ", width, "x", height, " is not a multiple of its factor ", f);
  torch::NoGradGuard no_grad;
  const torch::Tensor codebook = vqgan_->codebook();  // [N, D]
  const auto device = codebook.device();
  z_min_ = std::get<0>(codebook.min(0)).view({1, -1, 1, 1});
  z_max_ = std::get<0>(codebook.max(0)).view({1, -1, 1, 1});
  if (init) {
    z_ = vqgan_->encode(init->to(device, torch::kFloat) * 2 - 1);
    z_init_ = z_.clone();
  } else {
    // Random codebook entries, as the notebook's one-hot @ codebook.
    auto rng = at::detail::createCPUGenerator(seed);
    const torch::Tensor idx = torch::randint(codebook.size(0), {(height / f) * (width / f)}, rng).to(device);
    z_ = codebook.index_select(0, idx)
             .view({1, height / f, width / f, -1})
             .permute({0, 3, 1, 2})
             .contiguous();  // [1, D, h, w]
  }
  z_.requires_grad_(true);
}

std::string VqganGenerator::describe() const { return vqgan_->config().describe(); }

torch::Tensor VqganGenerator::image() {
  const torch::Tensor decoded = vqgan_->decode(vqgan_->quantize(z_).z_q);  // [1, 3, H, W] in about [-1, 1]
  return clamp_with_grad(decoded.add(1).div(2));
}

torch::Tensor VqganGenerator::regularizer() {
  if (init_weight_ == 0 || !z_init_.defined()) return {};
  return init_weight_ * (z_ - z_init_).pow(2).mean() / 2;
}

void VqganGenerator::after_step() {
  torch::NoGradGuard no_grad;
  z_.copy_(torch::maximum(torch::minimum(z_, z_max_), z_min_));
}

TensorMap VqganGenerator::state() const {
  TensorMap out{{"vqgan.z", z_.detach().to(torch::kCPU).clone()}};
  if (z_init_.defined()) out["vqgan.z_init"] = z_init_.to(torch::kCPU).clone();
  return out;
}

void VqganGenerator::load_state(const TensorMap& state) {
  torch::NoGradGuard no_grad;
  auto it = state.find("vqgan.z");
  if (it == state.end() || it->second.sizes() != z_.sizes()) fail("resume state does not fit ", describe());
  z_.copy_(it->second);
  if (auto init = state.find("vqgan.z_init"); init != state.end()) z_init_ = init->second.to(z_.device());
}

}  // namespace clipguide
