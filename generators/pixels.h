// An image optimised directly, with no generator weights: raw pixels, a Fourier spectrum (scaled by
// 1/frequency, as Lucid's fft_image) or a Laplacian pyramid (each level a coarser band), the last two
// favouring smooth images.
#pragma once

#include <optional>

#include "core/names.h"
#include "generators/generator.h"

namespace clipguide {

enum class PixelParam { Raw, Fourier, Laplacian };
// "raw", "fourier", "laplacian"; anything else is an Error listing them.
inline constexpr Named<PixelParam> kPixelParams[] = {
    {PixelParam::Raw, "raw"}, {PixelParam::Fourier, "fourier"}, {PixelParam::Laplacian, "laplacian"}};
inline PixelParam parse_pixel_param(const std::string& name) {
  return parse_name(kPixelParams, name, "pixel_param");
}
inline const char* pixel_param_name(PixelParam param) { return name_of(kPixelParams, param); }

class PixelGenerator : public Generator {
 public:
  // `init`: [1, 3, H, W] in [0, 1], or random (seeded) when absent.
  PixelGenerator(int64_t width, int64_t height, PixelParam param, const std::optional<torch::Tensor>& init,
                 uint64_t seed, torch::Device device);
  std::string describe() const override;
  torch::Tensor image() override;
  std::vector<torch::Tensor> parameters() override { return params_; }
  TensorMap state() const override;
  void load_state(const TensorMap& state) override;

 private:
  int64_t width_, height_;
  PixelParam param_;
  std::vector<torch::Tensor> params_;
  torch::Tensor spectrum_scale_;  // [H, W/2+1, 1], the Fourier parameterisation's 1/frequency scale
};

}  // namespace clipguide
