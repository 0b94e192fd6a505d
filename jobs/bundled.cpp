#include "jobs/bundled.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>

#include "core/error.h"

namespace clipguide {

namespace fs = std::filesystem;

std::string bundled_models_dir() {
  if (const char* env = std::getenv("CLIPGUIDE_MODELS"); env != nullptr && *env != '\0') return env;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const fs::path installed = exe.parent_path().parent_path() / "share" / "clipguide" / "models";
    if (fs::is_directory(installed / "toyworld", ec)) return installed.string();
  }
  return CLIPGUIDE_SOURCE_MODELS;
}

namespace {

// toyworld/FOLDER/model.safetensors, or an Error naming where it looked and the flag that passes a model
// instead.
std::string bundled_weights(const std::string& folder, const std::string& what, const std::string& flag) {
  const fs::path file = fs::path(bundled_models_dir()) / "toyworld" / folder / "model.safetensors";
  std::error_code ec;
  if (!fs::exists(file, ec)) {
    fail("the bundled toy ", what, " is missing (looked for ", file.string(),
         "; set CLIPGUIDE_MODELS to the folder holding toyworld/, or pass ", flag, ")");
  }
  return file.string();
}

}  // namespace

std::string bundled_clip() {
  return fs::path(bundled_weights("clip", "CLIP", "a model")).parent_path().string();
}

std::string bundled_vqgan() { return bundled_weights("vqgan", "VQGAN", "--vqgan-checkpoint"); }

std::string bundled_vqgan_config() {
  return (fs::path(bundled_vqgan()).parent_path() / "model.yaml").string();
}

std::string bundled_diffusion() {
  return bundled_weights("diffusion", "diffusion model", "--diffusion-checkpoint");
}

std::string bundled_diffusion_flags() {
  return (fs::path(bundled_diffusion()).parent_path() / "model.json").string();
}

// bench/toyworld: the CLIP-conditioned diffusion model gets every background, colour and shape right, the
// VQGAN a fifth of the shapes (MODEL_CARD).
std::string bundled_generator() { return "diffusion"; }

std::vector<std::pair<std::string, std::string>> bundled_generate_defaults(const std::string& generator) {
  const fs::path starts = fs::path(bundled_models_dir()) / "toyworld" / "starts";
  // One plain background per colour of the world, in name order.
  auto add_starts = [&](std::vector<std::pair<std::string, std::string>>& out) {
    std::vector<std::string> files;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(starts, ec)) {
      if (entry.path().extension() == ".png") files.push_back(entry.path().string());
    }
    if (files.empty()) fail("the bundled toy start images are missing (looked in ", starts.string(), ")");
    std::sort(files.begin(), files.end());
    for (const auto& file : files) out.emplace_back("init-image", file);
  };
  if (generator == "diffusion") {
    // The model's own 32 px; guidance scales for 32 px images (the 256 px notebooks' 1000 / 150 / 50 for
    // CLIP, TV and range overshoot into speckle here); the sampler starts 8 of 25 steps in, from the noised
    // plain background CLIP scores best for the prompt (from pure noise the object's colour often became the
    // background). The model is conditioned on the prompt's CLIP embedding (classifier-free guidance at
    // generate's default
    // --cond-scale); gentle CLIP guidance on top, and best of 4 by CLIP score (best of 16 judged no better,
    // MODEL_CARD).
    std::vector<std::pair<std::string, std::string>> out = {
        {"size", "32x32"}, {"cutn", "16"},       {"clip-guidance-scale", "100"},
        {"tv-scale", "2"}, {"range-scale", "1"}, {"skip-timesteps", "8"},
        {"n", "4"},
    };
    add_starts(out);
    return out;
  }
  std::vector<std::pair<std::string, std::string>> out = {
      {"size", "64x64"},  // the world's size, which the toy CLIP sees without resampling
      {"steps", "100"},
      {"cutn", "16"},
      {"augments",
       "flip,affine,jitter,noise"},  // affine: small rotations and shifts keep adversarial speckle down
  };
  add_starts(out);  // the run starts from whichever plain background CLIP scores best for the prompt
  return out;
}

}  // namespace clipguide
