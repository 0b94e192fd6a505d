// Image decoding and CLIP preprocessing, identical to the peers' PIL + torchvision pipelines: OpenAI's
// Resize(n_px, BICUBIC) -> CenterCrop(n_px) -> convert("RGB") -> ToTensor -> Normalize (clip/clip.py
// _transform), open_clip's resize modes (open_clip/transform.py image_transform) and Hugging Face's PIL image
// processors.
#pragma once

#include <torch/types.h>

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/names.h"

namespace clipguide {

// Decoded 8-bit pixels, interleaved, in the PIL mode the file opens as.
struct Image {
  enum class Mode { L, LA, RGB, RGBA, P };  // P: a palette image, stored expanded to RGB(A) colours
  Mode mode = Mode::RGB;
  int width = 0, height = 0, channels = 0;
  std::vector<uint8_t> pixels;  // height * width * channels
};

struct ImageLimits {
  int64_t max_pixels = 89478485;  // PIL's Image.MAX_IMAGE_PIXELS
};

// OpenAI CLIP's normalization constants.
constexpr std::array<float, 3> kClipMean = {0.48145466f, 0.4578275f, 0.40821073f};
constexpr std::array<float, 3> kClipStd = {0.26862954f, 0.26130258f, 0.27577711f};

// PNG (via stb_image) or JPEG (via libjpeg-turbo, as PIL); anything else, a truncated file, or more pixels
// than the limit is an Error naming `name`.
Image decode_image(const uint8_t* data, size_t size, const std::string& name, const ImageLimits& limits = {});
Image read_image(const std::string& path, const ImageLimits& limits = {});

enum class Interpolation { Bicubic, Bilinear };
inline constexpr Named<Interpolation> kInterpolations[] = {{Interpolation::Bicubic, "bicubic"},
                                                           {Interpolation::Bilinear, "bilinear"}};

// How an image becomes a square model input (open_clip's resize_mode):
// - shortest: the short side to n_px, then a centre crop (OpenAI's, open_clip's default);
// - longest: the long side to n_px, then centre padding with `fill` (open_clip's "longest");
// - squash: both sides to n_px, the aspect ratio not kept (SigLIP's, Hugging Face's image processors).
enum class ResizeMode { Shortest, Longest, Squash };
inline constexpr Named<ResizeMode> kResizeModes[] = {
    {ResizeMode::Shortest, "shortest"}, {ResizeMode::Longest, "longest"}, {ResizeMode::Squash, "squash"}};

// A model's preprocessing; the defaults are OpenAI CLIP's.
struct Preprocessing {
  std::array<float, 3> mean = kClipMean, std = kClipStd;
  ResizeMode resize = ResizeMode::Shortest;
  Interpolation interpolation = Interpolation::Bicubic;
  uint8_t fill = 0;  // the padding level of ResizeMode::Longest
};

// PIL's Image.resize with BICUBIC or BILINEAR (NEAREST for palette images, premultiplied alpha for LA/RGBA),
// 8-bit fixed point exactly as Pillow's Resample.c (13.0, the pinned peers' Pillow).
Image resize_like_pil(const Image& image, int width, int height,
                      Interpolation interpolation = Interpolation::Bicubic);

// CLIP's normalization of pixels in [0, 1], channels at dim -3 ([3, H, W] or [N, 3, H, W]): the one place
// mean/std are applied, for preprocess() and for guidance's cutouts alike. Differentiable, keeps dtype and
// device.
torch::Tensor normalize_pixels(const torch::Tensor& x01, const std::array<float, 3>& mean = kClipMean,
                               const std::array<float, 3>& std = kClipStd);

// The whole preprocess: resize as `how` says, convert to RGB, [3, n_px, n_px] float32 normalized with its
// mean/std.
torch::Tensor preprocess(const Image& image, int64_t n_px, const Preprocessing& how = {});

// The RGB bytes [H, W, 3] uint8 that PIL's convert("RGB") gives for the decoded image.
torch::Tensor to_rgb_tensor(const Image& image);

// A PNG of RGB bytes [H, W, 3] uint8, with UTF-8 text chunks (iTXt) after the header: keyword -> text.
std::string encode_png(const torch::Tensor& rgb,
                       const std::vector<std::pair<std::string, std::string>>& text = {});
// The tEXt/iTXt chunks of a PNG file (uncompressed ones), in file order; Error if it is not a well-formed
// PNG.
std::vector<std::pair<std::string, std::string>> read_png_text(const std::string& png,
                                                               const std::string& name);
// A float image [1, 3, H, W] (or [3, H, W]) in [0, 1] -> RGB bytes [H, W, 3] uint8, rounded to nearest.
torch::Tensor to_rgb_bytes(const torch::Tensor& image01);

// A PNG of the image in RGB, scaled down (bicubic, as PIL) so its longer side is at most `max_side`.
std::string thumbnail_png(const Image& image, int max_side);

}  // namespace clipguide
