// Where the bundled toy-world models are: the CLIP, VQGAN and diffusion model that clipguide uses when no
// model is given.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace clipguide {

// The folder holding toyworld/{clip,vqgan}: $CLIPGUIDE_MODELS if set, else the installed
// share/clipguide/models beside the running program, else the source tree's models/ (a build that was not
// installed).
std::string bundled_models_dir();
// The toy CLIP's folder (model.safetensors, vocab.json, merges.txt).
std::string bundled_clip();
// The toy VQGAN's weights (.safetensors) and taming .yaml.
std::string bundled_vqgan();
std::string bundled_vqgan_config();
// The toy diffusion model's weights (.safetensors, guided-diffusion names) and its flags (.json).
std::string bundled_diffusion();
std::string bundled_diffusion_flags();

// The generator `clipguide generate` uses when a run names none and gives no generator weights: "diffusion"
// or "vqgan", whichever bench/toyworld judges better.
std::string bundled_generator();

// The generate settings tuned for the bundled CLIP guiding the bundled `generator` ("vqgan", "pixels" or
// "diffusion"), measured by bench/toyworld; use_bundled_models (jobs/generate.h) fills a request with them.
struct BundledSettings {
  int64_t size = 0;                 // square side
  std::vector<std::string> starts;  // start images, one plain background per colour of the world
  int64_t steps = 0;                // 0: the request's
  int64_t cutn = 0;
  std::string augments;  // empty: the request's
  // diffusion only
  double clip_guidance_scale = 0, tv_scale = 0, range_scale = 0;
  int64_t skip_timesteps = 0, n = 1;
};
BundledSettings bundled_generate_settings(const std::string& generator);

}  // namespace clipguide
