// Where the bundled toy-world models are: the CLIP and VQGAN that clipguide uses when no model is given.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace clipguide::toyworld {

// The folder holding toyworld/{clip,vqgan}: $CLIPGUIDE_MODELS if set, else the installed share/clipguide/models
// beside the running program, else the source tree's models/ (a build that was not installed).
std::string bundled_models_dir();
// The toy CLIP's folder (model.safetensors, vocab.json, merges.txt).
std::string bundled_clip();
// The toy VQGAN's weights (.safetensors) and taming .yaml.
std::string bundled_vqgan();
std::string bundled_vqgan_config();

// `clipguide generate` settings for the bundled models, as (flag, value) pairs (a flag may repeat); used where a run
// names neither model and does not set the flag itself. Measured by bench/toyworld.
std::vector<std::pair<std::string, std::string>> bundled_generate_defaults();

}  // namespace clipguide::toyworld
