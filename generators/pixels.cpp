#include "generators/pixels.h"

#include <cmath>

#include "core/error.h"

namespace clipguide {

namespace F = torch::nn::functional;

namespace {

constexpr int64_t kPyramidLevels = 4;

torch::Tensor upsample(const torch::Tensor& x, int64_t height, int64_t width) {
  if (x.size(2) == height && x.size(3) == width) return x;
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{height, width})
                               .mode(torch::kBilinear)
                               .align_corners(false));
}

// Lucid's fft_image scale, 1 / max(frequency, 1 / max(W, H)) normalised to the image size: [H, W/2+1, 1].
torch::Tensor fourier_scale(int64_t height, int64_t width) {
  const torch::Tensor fy = torch::fft::fftfreq(height, torch::kDouble).view({height, 1});
  const torch::Tensor fx = torch::fft::rfftfreq(width, torch::kDouble).view({1, width / 2 + 1});
  const torch::Tensor freq = torch::sqrt(fx * fx + fy * fy);  // [H, W/2+1]
  const double floor = 1.0 / static_cast<double>(std::max(width, height));
  return (1.0 / torch::clamp_min(freq, floor)).mul(floor).view({height, width / 2 + 1, 1}).to(torch::kFloat);
}

}  // namespace

PixelGenerator::PixelGenerator(int64_t width, int64_t height, PixelParam param,
                               const std::optional<torch::Tensor>& init, uint64_t seed, torch::Device device)
    : width_(width), height_(height), param_(param) {
  torch::NoGradGuard no_grad;
  auto rng = at::detail::createCPUGenerator(seed);
  const torch::Tensor start =
      init ? init->to(torch::kCPU, torch::kFloat) - 0.5
           : (torch::rand({1, 3, height, width}, rng) - 0.5) * 0.5;  // [1, 3, H, W], centred
  switch (param) {
    case PixelParam::Raw:
      params_ = {start.clone()};
      break;
    case PixelParam::Fourier: {
      // image - 0.5 = irfft2(spectrum * scale); the inverse gives the spectrum of the start image.
      const torch::Tensor spec = torch::view_as_real(
          torch::fft::rfft2(start, c10::nullopt, {-2, -1}, "ortho"));  // [1, 3, H, W/2+1, 2]
      spectrum_scale_ = fourier_scale(height, width);
      params_ = {spec / spectrum_scale_};
      break;
    }
    case PixelParam::Laplacian: {
      // Level 0 is the finest; the start image goes in whole at level 0, the coarser levels begin at zero.
      params_ = {start.clone()};
      for (int64_t i = 1; i < kPyramidLevels; ++i) {
        params_.push_back(
            torch::zeros({1, 3, std::max<int64_t>(1, height >> i), std::max<int64_t>(1, width >> i)}));
      }
      break;
    }
  }
  for (auto& p : params_) p = p.to(device).requires_grad_(true);
  if (spectrum_scale_.defined()) spectrum_scale_ = spectrum_scale_.to(device);
}

std::string PixelGenerator::describe() const {
  return cat("pixels ", width_, "x", height_, " (", pixel_param_name(param_), ")");
}

torch::Tensor PixelGenerator::image() {
  torch::Tensor centred;
  switch (param_) {
    case PixelParam::Raw:
      centred = params_[0];
      break;
    case PixelParam::Fourier: {
      const torch::Tensor scaled = params_[0] * spectrum_scale_;
      centred = torch::fft::irfft2(torch::view_as_complex(scaled.contiguous()),
                                   c10::IntArrayRef{height_, width_}, {-2, -1}, "ortho");
      break;
    }
    case PixelParam::Laplacian:
      centred = params_[0];
      for (size_t i = 1; i < params_.size(); ++i) centred = centred + upsample(params_[i], height_, width_);
      break;
  }
  return clamp_with_grad(centred + 0.5);
}

TensorMap PixelGenerator::state() const {
  TensorMap out;
  for (size_t i = 0; i < params_.size(); ++i)
    out[cat("pixels.", i)] = params_[i].detach().to(torch::kCPU).clone();
  return out;
}

void PixelGenerator::load_state(const TensorMap& state) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params_.size(); ++i) {
    auto it = state.find(cat("pixels.", i));
    if (it == state.end() || it->second.sizes() != params_[i].sizes())
      fail("resume state does not fit ", describe());
    params_[i].copy_(it->second);
  }
}

}  // namespace clipguide
