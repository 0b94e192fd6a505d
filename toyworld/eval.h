// Measuring a CLIP in the toy world: zero-shot classification of fresh renders and reranking of one render per
// colour+shape class. Both score images rendered from seeds that training never uses.
#pragma once

#include <cstdint>

#include "clip/load.h"
#include "generators/vqgan.h"

namespace clipguide::toyworld {

struct ZeroShot {
  int64_t images = 0, held_out_images = 0;
  double colour = 0, shape = 0, background = 0;  // fraction right
  double held_out_joint = 0;                     // colour and shape both right, on held-out pairs only
};
// `images` single-object renders (every colour+shape pair, held-out ones included) classified against every
// "a {colour} {shape} on a {background} background" prompt; each attribute is read from the prompt probabilities
// summed over the others.
ZeroShot zero_shot(LoadedClip& clip, int64_t images, uint64_t seed);

struct RerankResult {
  int64_t classes = 0, top1 = 0;
};
// One render of each of the 48 colour+shape classes; each class's prompt "a {colour} {shape}" ranks all of them,
// and counts as right when its own render comes first.
RerankResult rerank_classes(LoadedClip& clip, uint64_t seed);

struct Reconstruction {
  int64_t images = 0;
  double l1 = 0;            // mean absolute pixel error, [0, 1] units
  double judged_same = 0;   // fraction whose background, object colour and shape the pixel judge reads alike
};
// `images` fresh scenes through encode -> quantize -> decode.
Reconstruction reconstruction(Vqgan& model, int64_t images, uint64_t seed);

}  // namespace clipguide::toyworld
