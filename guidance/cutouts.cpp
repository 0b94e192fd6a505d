#include "guidance/cutouts.h"

#include <cmath>

#include "core/error.h"

namespace clipguide {

namespace F = torch::nn::functional;

namespace {

// Uniform draws in [lo, hi), shape [n], from the CPU generator, then moved to `device`.
torch::Tensor uniform(int64_t n, double lo, double hi, torch::Generator& rng, const torch::Device& device) {
  return (torch::rand({n}, rng, torch::kDouble) * (hi - lo) + lo).to(device, torch::kFloat);
}

// Per-sample choice between the augmented and the original batch, each with probability p.
torch::Tensor apply_with_p(const torch::Tensor& augmented, const torch::Tensor& original, double p,
                           torch::Generator& rng) {
  const torch::Tensor take =
      (torch::rand({original.size(0)}, rng) < p).to(original.device()).view({-1, 1, 1, 1});
  return torch::where(take, augmented, original);
}

torch::Tensor flip(const torch::Tensor& x, torch::Generator& rng) {
  return apply_with_p(x.flip({3}), x, 0.5, rng);
}

// Rotation up to 15 degrees, scale 0.9-1.1, shift up to 10%, border padding; bilinear.
torch::Tensor affine(const torch::Tensor& x, torch::Generator& rng) {
  const int64_t n = x.size(0);
  const auto dev = x.device();
  const torch::Tensor angle = uniform(n, -M_PI / 12, M_PI / 12, rng, dev);
  const torch::Tensor scale = uniform(n, 0.9, 1.1, rng, dev);
  const torch::Tensor tx = uniform(n, -0.2, 0.2, rng, dev),
                      ty = uniform(n, -0.2, 0.2, rng, dev);  // in [-1, 1] units
  const torch::Tensor c = torch::cos(angle) / scale, s = torch::sin(angle) / scale;
  const torch::Tensor theta =
      torch::stack({torch::stack({c, -s, tx}, 1), torch::stack({s, c, ty}, 1)}, 1);  // [n, 2, 3]
  const torch::Tensor grid = F::affine_grid(theta.to(x.scalar_type()), x.sizes().vec(), false);
  const torch::Tensor out = F::grid_sample(
      x, grid,
      F::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kBorder).align_corners(false));
  return apply_with_p(out, x, 0.8, rng);
}

// Each corner moves inward/outward by up to `distortion` of the half-size; the homography mapping output
// corners to input corners is solved per sample (8x8 linear system) and applied with grid_sample.
torch::Tensor perspective(const torch::Tensor& x, torch::Generator& rng) {
  const int64_t n = x.size(0), S = x.size(2);
  const double distortion = 0.25;
  const torch::Tensor dst =
      torch::tensor({-1.0, -1.0, 1.0, -1.0, 1.0, 1.0, -1.0, 1.0}, torch::kDouble).view({1, 4, 2});
  const torch::Tensor src =
      dst + (torch::rand({n, 4, 2}, rng, torch::kDouble) * 2 - 1) * distortion;  // [n, 4, 2]
  // For each corner: [x y 1 0 0 0 -x*u -y*u] h = u and [0 0 0 x y 1 -x*v -y*v] h = v, (x, y) output, (u, v)
  // input.
  const torch::Tensor X = dst.expand({n, 4, 2}).select(2, 0), Y = dst.expand({n, 4, 2}).select(2, 1);
  const torch::Tensor U = src.select(2, 0), V = src.select(2, 1);
  const torch::Tensor one = torch::ones_like(X), zero = torch::zeros_like(X);
  const torch::Tensor rows_u = torch::stack({X, Y, one, zero, zero, zero, -X * U, -Y * U}, 2);  // [n, 4, 8]
  const torch::Tensor rows_v = torch::stack({zero, zero, zero, X, Y, one, -X * V, -Y * V}, 2);  // [n, 4, 8]
  const torch::Tensor A = torch::cat({rows_u, rows_v}, 1);                                      // [n, 8, 8]
  const torch::Tensor b = torch::cat({U, V}, 1).unsqueeze(2);                                   // [n, 8, 1]
  const torch::Tensor h =
      torch::cat({torch::linalg_solve(A, b, true).squeeze(2), torch::ones({n, 1}, torch::kDouble)}, 1)
          .view({n, 3, 3});
  const torch::Tensor coords =
      torch::linspace(-1.0 + 1.0 / S, 1.0 - 1.0 / S, S, torch::kDouble);  // pixel centres
  const auto mesh = torch::meshgrid({coords, coords}, "ij");              // (y, x), [S, S]
  const torch::Tensor pts =
      torch::stack({mesh[1], mesh[0], torch::ones({S, S}, torch::kDouble)}, -1).view({1, S * S, 3});
  const torch::Tensor mapped = torch::matmul(pts, h.transpose(1, 2));  // [n, S*S, 3]
  const torch::Tensor grid = (mapped.narrow(2, 0, 2) / mapped.narrow(2, 2, 1)).view({n, S, S, 2});
  const torch::Tensor out = F::grid_sample(
      x, grid.to(x.device(), x.scalar_type()),
      F::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kBorder).align_corners(false));
  return apply_with_p(out, x, 0.5, rng);
}

// Brightness, contrast and saturation each scaled by 0.9-1.1 per cutout (torchvision ColorJitter's
// definitions).
torch::Tensor jitter(const torch::Tensor& x, torch::Generator& rng) {
  const int64_t n = x.size(0);
  const auto dev = x.device();
  auto factor = [&] { return uniform(n, 0.9, 1.1, rng, dev).view({n, 1, 1, 1}).to(x.scalar_type()); };
  const torch::Tensor brightness = factor(), contrast = factor(), saturation = factor();
  torch::Tensor out = x * brightness;
  const torch::Tensor gray =
      (0.299 * out.select(1, 0) + 0.587 * out.select(1, 1) + 0.114 * out.select(1, 2)).unsqueeze(1);
  out = (out - gray.mean({2, 3}, true)) * contrast + gray.mean({2, 3}, true);
  const torch::Tensor gray2 =
      (0.299 * out.select(1, 0) + 0.587 * out.select(1, 1) + 0.114 * out.select(1, 2)).unsqueeze(1);
  return (out - gray2) * saturation + gray2;
}

// Gaussian noise with a std drawn per cutout from [0, noise_fac) (Crowson's notebook).
torch::Tensor noise(const torch::Tensor& x, double noise_fac, torch::Generator& rng) {
  const int64_t n = x.size(0);
  const torch::Tensor facs = uniform(n, 0, noise_fac, rng, x.device()).view({n, 1, 1, 1}).to(x.scalar_type());
  const torch::Tensor eps = torch::randn(x.sizes(), rng).to(x.device(), x.scalar_type());
  return x + facs * eps;
}

// Random erasing (p 0.5): a rectangle of 2-20% of the area, aspect 0.3-3.3, set to a random grey.
torch::Tensor erase(const torch::Tensor& x, torch::Generator& rng) {
  const int64_t n = x.size(0), S = x.size(2);
  const torch::Tensor area = torch::rand({n}, rng, torch::kDouble) * 0.18 + 0.02;
  const torch::Tensor log_ratio =
      torch::rand({n}, rng, torch::kDouble) * (std::log(10.0 / 3) - std::log(0.3)) + std::log(0.3);
  const torch::Tensor h = (torch::sqrt(area * torch::exp(log_ratio)) * S).clamp(1, S).floor();
  const torch::Tensor w = (torch::sqrt(area / torch::exp(log_ratio)) * S).clamp(1, S).floor();
  const torch::Tensor top = (torch::rand({n}, rng, torch::kDouble) * (S - h + 1)).floor();
  const torch::Tensor left = (torch::rand({n}, rng, torch::kDouble) * (S - w + 1)).floor();
  const torch::Tensor value = torch::rand({n}, rng).view({n, 1, 1, 1}).to(x.device(), x.scalar_type());
  const torch::Tensor idx = torch::arange(S, torch::kDouble);
  const torch::Tensor rows =
      (idx.view({1, S}) >= top.view({n, 1})) & (idx.view({1, S}) < (top + h).view({n, 1}));
  const torch::Tensor cols =
      (idx.view({1, S}) >= left.view({n, 1})) & (idx.view({1, S}) < (left + w).view({n, 1}));
  const torch::Tensor mask = (rows.view({n, 1, S, 1}) & cols.view({n, 1, 1, S})).to(x.device());
  return apply_with_p(torch::where(mask, value.expand_as(x), x), x, 0.5, rng);
}

}  // namespace

std::vector<Augment> parse_augments(const std::string& list) {
  std::vector<Augment> out;
  if (list == "none" || list.empty()) return out;
  for (const std::string& name : split(list, ',')) {
    bool found = false;
    for (const auto& entry : kAugments) {
      if (name == entry.name) {
        out.push_back(entry.value);
        found = true;
      }
    }
    if (!found)
      fail("augments: unknown augmentation '", name, "'; choose from ", SafeText{names_of(kAugments)},
           ", or none");
  }
  return out;
}

std::string augments_name(const std::vector<Augment>& augments) {
  std::string out;
  for (Augment a : augments) out += cat(out.empty() ? "" : ",", name_of(kAugments, a));
  return out.empty() ? "none" : out;
}

void check_cutn(int64_t cutn, const std::string& what) {
  if (cutn < 1 || cutn > 4096) fail(SafeText{what}, " must be between 1 and 4096 (got ", cutn, ")");
}

void CutoutOptions::validate() const {
  check_cutn(cutn, "cutn");
  if (!(cut_pow > 0) || !std::isfinite(cut_pow))
    fail("cut_pow must be a positive number (got ", cut_pow, ")");
  if (!(noise_fac >= 0) || !std::isfinite(noise_fac))
    fail("noise_fac must be zero or positive (got ", noise_fac, ")");
}

torch::Tensor resample(const torch::Tensor& x, int64_t size) {
  if (x.size(2) == size && x.size(3) == size) return x;
  if (x.size(2) >= size && x.size(3) >= size)
    return F::adaptive_avg_pool2d(x, F::AdaptiveAvgPool2dFuncOptions({size, size}));
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{size, size})
                               .mode(torch::kBicubic)
                               .align_corners(false));
}

torch::Tensor make_cutouts(const torch::Tensor& image, int64_t size, const CutoutOptions& options,
                           torch::Generator& rng) {
  TORCH_CHECK(image.dim() == 4 && image.size(0) == 1 && image.size(1) == 3,
              "make_cutouts takes one image [1, 3, H, W]");
  const int64_t H = image.size(2), W = image.size(3);
  const int64_t max_size = std::min(H, W), min_size = std::min({H, W, size});
  std::vector<torch::Tensor> cuts;
  cuts.reserve(options.cutn);
  if (options.overview) {
    // The whole image, padded with its edge to a square, then resampled.
    const int64_t side = std::max(H, W);
    const int64_t pw = side - W, ph = side - H;
    const torch::Tensor padded =
        F::pad(image, F::PadFuncOptions({pw / 2, pw - pw / 2, ph / 2, ph - ph / 2}).mode(torch::kReplicate));
    cuts.push_back(resample(padded, size));
  }
  const int64_t n = options.cutn - static_cast<int64_t>(cuts.size());
  const torch::Tensor r = torch::rand({n, 3}, rng, torch::kDouble);
  for (int64_t i = 0; i < n; ++i) {
    const auto* ri = r[i].data_ptr<double>();
    const auto s = static_cast<int64_t>(
        std::pow(ri[0], options.cut_pow) * static_cast<double>(max_size - min_size) + min_size);
    const auto x0 = static_cast<int64_t>(ri[1] * static_cast<double>(W - s + 1));
    const auto y0 = static_cast<int64_t>(ri[2] * static_cast<double>(H - s + 1));
    cuts.push_back(resample(image.narrow(2, y0, s).narrow(3, x0, s), size));
  }
  torch::Tensor x = torch::cat(cuts, 0);  // [cutn, 3, size, size]
  for (Augment a : options.augments) {
    switch (a) {
      case Augment::Flip:
        x = flip(x, rng);
        break;
      case Augment::Affine:
        x = affine(x, rng);
        break;
      case Augment::Perspective:
        x = perspective(x, rng);
        break;
      case Augment::Jitter:
        x = jitter(x, rng);
        break;
      case Augment::Noise:
        x = noise(x, options.noise_fac, rng);
        break;
      case Augment::Erase:
        x = erase(x, rng);
        break;
    }
  }
  return x;
}

}  // namespace clipguide
