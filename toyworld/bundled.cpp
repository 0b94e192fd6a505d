#include "toyworld/bundled.h"

#include <cstdlib>
#include <filesystem>

#include "clip/error.h"
#include "toyworld/world.h"

namespace clipguide::toyworld {

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

std::string bundled_clip() {
  const fs::path dir = fs::path(bundled_models_dir()) / "toyworld" / "clip";
  std::error_code ec;
  if (!fs::exists(dir / "model.safetensors", ec)) {
    fail("the bundled toy CLIP is missing (looked for ", (dir / "model.safetensors").string(),
         "; set CLIPGUIDE_MODELS to the folder holding toyworld/, or pass a model)");
  }
  return dir.string();
}

std::string bundled_vqgan() {
  const fs::path file = fs::path(bundled_models_dir()) / "toyworld" / "vqgan" / "model.safetensors";
  std::error_code ec;
  if (!fs::exists(file, ec)) {
    fail("the bundled toy VQGAN is missing (looked for ", file.string(),
         "; set CLIPGUIDE_MODELS to the folder holding toyworld/, or pass --vqgan-checkpoint)");
  }
  return file.string();
}

std::string bundled_vqgan_config() {
  return (fs::path(bundled_vqgan()).parent_path() / "model.yaml").string();
}

std::vector<std::pair<std::string, std::string>> bundled_generate_defaults() {
  std::vector<std::pair<std::string, std::string>> out = {
      {"size", "64x64"},  // the world's size, which the toy CLIP sees without resampling
      {"steps", "100"},
      {"cutn", "16"},
      {"augments", "flip,affine,jitter,noise"},  // affine: small rotations and shifts keep adversarial speckle down
  };
  // The run starts from whichever plain background CLIP scores best for the prompt.
  const fs::path starts = fs::path(bundled_models_dir()) / "toyworld" / "starts";
  for (int c = 0; c < kColours; ++c) out.emplace_back("init-image", (starts / (name(static_cast<Colour>(c)) + ".png")).string());
  return out;
}

}  // namespace clipguide::toyworld
