// Cutouts: the random crops of the image that CLIP sees each step, resampled to its input size and augmented,
// all in one batch. Ref: Crowson's VQGAN+CLIP notebook MakeCutouts (sizes rand^cut_pow * (max - min) + min);
// the augmentations are written with libtorch ops (no kornia) and draw from the caller's generator only.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "core/names.h"

namespace clipguide {

enum class Augment { Flip, Affine, Perspective, Jitter, Noise, Erase };
inline constexpr Named<Augment> kAugments[] = {
    {Augment::Flip, "flip"},     {Augment::Affine, "affine"}, {Augment::Perspective, "perspective"},
    {Augment::Jitter, "jitter"}, {Augment::Noise, "noise"},   {Augment::Erase, "erase"}};

// "flip,affine,perspective,jitter,noise,erase" (any subset, any order) or "none"; an unknown name is an Error
// listing the choices.
std::vector<Augment> parse_augments(const std::string& list);
std::string augments_name(const std::vector<Augment>& augments);

struct CutoutOptions {
  int64_t cutn = 32;
  double cut_pow = 1.0;   // > 1 favours small crops, < 1 large ones
  bool overview = false;  // the first cutout is the whole image padded to a square
  std::vector<Augment> augments = {Augment::Flip, Augment::Jitter, Augment::Noise};
  double noise_fac = 0.1;  // gaussian noise std up to this, drawn per cutout

  void validate() const;  // Error naming the bad option
};

// The one range check of a cutout count, the run's (--cutn) or one model's (--clip-model FILE:weight:cutn):
// an Error naming `what` unless 1 <= cutn <= 4096.
void check_cutn(int64_t cutn, const std::string& what);

// Resamples [N, C, h, w] to [N, C, size, size]: area averaging when shrinking (no aliasing), bicubic when
// growing.
torch::Tensor resample(const torch::Tensor& x, int64_t size);

// image [1, 3, H, W] in [0, 1] -> [cutn, 3, size, size] in [0, 1], differentiable in `image`. All randomness
// comes from `rng` (a CPU generator), so a seed gives the same cutouts on every device.
torch::Tensor make_cutouts(const torch::Tensor& image, int64_t size, const CutoutOptions& options,
                           torch::Generator& rng);

}  // namespace clipguide
