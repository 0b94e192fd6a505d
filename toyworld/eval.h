// Measuring a CLIP in the toy world: zero-shot classification of fresh renders and reranking of one render
// per colour+shape class. Both score images rendered from seeds that training never uses.
#pragma once

#include <cstdint>

#include "clip/load.h"
#include "generators/vqgan.h"

namespace clipguide::toyworld {

// [B, 3, S, S] -> area-averaged to `size` px, then resampled back to S (guidance's resample): how an image
// made at `size` px looks to a CLIP of S px. `size` 0 or >= S returns the images unchanged.
torch::Tensor blur_images(const torch::Tensor& images, int64_t size);

struct ZeroShot {
  int64_t images = 0, held_out_images = 0;
  double colour = 0, shape = 0, background = 0;  // fraction right
  double held_out_joint = 0;                     // colour and shape both right, on held-out pairs only
};
// `images` single-object renders (every colour+shape pair, held-out ones included) classified against every
// "a {colour} {shape} on a {background} background" prompt; each attribute is read from the prompt
// probabilities summed over the others. `blur_size` > 0: the renders as if made at that size and resampled
// back (blur_images), as a smaller generator's images reach the CLIP.
ZeroShot zero_shot(LoadedClip& clip, int64_t images, uint64_t seed, int64_t blur_size = 0);

struct RerankResult {
  int64_t classes = 0, top1 = 0;
};
// One render of each of the 48 colour+shape classes; each class's prompt "a {colour} {shape}" ranks all of
// them, and counts as right when its own render comes first. `blur_size` as for zero_shot.
RerankResult rerank_classes(LoadedClip& clip, uint64_t seed, int64_t blur_size = 0);

struct Reconstruction {
  int64_t images = 0;
  double l1 = 0;           // mean absolute pixel error, [0, 1] units
  double judged_same = 0;  // fraction whose background, object colour and shape the pixel judge reads alike
};
// `images` fresh scenes through encode -> quantize -> decode.
Reconstruction reconstruction(Vqgan& model, int64_t images, uint64_t seed);

}  // namespace clipguide::toyworld
