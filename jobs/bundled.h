// Where the bundled toy-world models are: the CLIP, VQGAN and diffusion model that clipguide uses when no
// model is given.
#pragma once

#include <string>
#include <utility>
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

// `clipguide generate` settings for the bundled CLIP guiding the bundled `generator` ("vqgan", "pixels" or
// "diffusion"), as (flag, value) pairs (a flag may repeat); used where a run names no model and does not set
// the flag itself. Measured by bench/toyworld.
std::vector<std::pair<std::string, std::string>> bundled_generate_defaults(const std::string& generator);

}  // namespace clipguide
