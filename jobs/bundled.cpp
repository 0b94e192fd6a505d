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

std::string bundled_vqgan() { return bundled_weights("vqgan", "VQGAN", "a VQGAN checkpoint"); }

std::string bundled_vqgan_config() {
  return (fs::path(bundled_vqgan()).parent_path() / "model.yaml").string();
}

std::string bundled_diffusion() {
  return bundled_weights("diffusion", "diffusion model", "a diffusion checkpoint");
}

std::string bundled_diffusion_flags() {
  return (fs::path(bundled_diffusion()).parent_path() / "model.json").string();
}

// bench/toyworld: the CLIP-conditioned diffusion model gets every background, colour and shape right, the
// VQGAN a fifth of the shapes (MODEL_CARD).
std::string bundled_generator() { return "diffusion"; }

BundledSettings bundled_generate_settings(const std::string& generator) {
  BundledSettings out;
  // One plain background per colour of the world, in name order: the run starts from whichever CLIP scores
  // best for the prompt.
  const fs::path starts = fs::path(bundled_models_dir()) / "toyworld" / "starts";
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(starts, ec)) {
    if (entry.path().extension() == ".png") out.starts.push_back(entry.path().string());
  }
  if (out.starts.empty()) fail("the bundled toy start images are missing (looked in ", starts.string(), ")");
  std::sort(out.starts.begin(), out.starts.end());
  out.cutn = 16;
  if (generator == "diffusion") {
    // The model's own 32 px; guidance scales for 32 px images (the 256 px notebooks' 1000 / 150 / 50 for
    // CLIP, TV and range overshoot into speckle here); the sampler starts 8 of 25 steps in, from the noised
    // plain background CLIP scores best for the prompt (from pure noise the object's colour often became the
    // background). The model is conditioned on the prompt's CLIP embedding (classifier-free guidance at the
    // default cond_scale); gentle CLIP guidance on top, and best of 4 by CLIP score (best of 16 judged no
    // better, MODEL_CARD).
    out.size = 32;
    out.clip_guidance_scale = 100;
    out.tv_scale = 2;
    out.range_scale = 1;
    out.skip_timesteps = 8;
    out.n = 4;
    return out;
  }
  out.size = 64;  // the world's size, which the toy CLIP sees without resampling
  out.steps = 100;
  out.augments =
      "flip,affine,jitter,noise";  // affine: small rotations and shifts keep adversarial speckle down
  return out;
}

}  // namespace clipguide
