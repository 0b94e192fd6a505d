// Shared test helpers: where the fixtures are, reading their manifests and references, comparing tensors.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "clip/load.h"
#include "core/file_io.h"
#include "io/safetensors.h"

namespace clipguide::test {

// CLIPGUIDE_FIXTURES, else ../shared/fixtures beside the repository.
inline std::filesystem::path fixtures() {
  if (const char* dir = std::getenv("CLIPGUIDE_FIXTURES")) return dir;
  return std::filesystem::path(CLIPGUIDE_SOURCE_DIR) / ".." / "shared" / "fixtures";
}

inline nlohmann::json read_json(const std::filesystem::path& path) {
  return nlohmann::json::parse(read_small_file(path.string(), 64u << 20));
}

inline TensorMap reference(const std::filesystem::path& path) {
  return read_safetensors(path.string()).tensors;
}

// ||out - ref|| / ||ref||
inline double rel_error(const torch::Tensor& out, const torch::Tensor& ref) {
  const auto a = out.detach().to(torch::kCPU, torch::kDouble),
             b = ref.detach().to(torch::kCPU, torch::kDouble);
  EXPECT_EQ(a.sizes(), b.sizes());
  if (a.sizes() != b.sizes()) return 1e9;
  return (a - b).norm().item<double>() / std::max(b.norm().item<double>(), 1e-30);
}

inline std::string read_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void write_bytes(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary);
  out << bytes;
}

// A gtest parameter name from any text: alphanumerics kept, everything else '_'.
inline std::string param_name(std::string text) {
  for (char& ch : text) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return text;
}

// Every CLIP weights file the manifest lists (references excluded), with its model's name.
struct ModelFile {
  std::string model, file;
};
inline void PrintTo(const ModelFile& f, std::ostream* os) { *os << f.file; }

inline std::vector<ModelFile> clip_model_files() {
  std::vector<ModelFile> out;
  const auto manifest = read_json(fixtures() / "clip" / "clip-manifest.json");
  for (const auto& [name, entry] : manifest["models"].items()) {
    for (const auto& f : entry["files"]) {
      const std::string file = f.get<std::string>();
      if (file.find(".reference.") == std::string::npos) out.push_back({name, file});
    }
  }
  return out;
}

// The first ViT CLIP of the fixture manifest, loaded once (text heads from the manifest, as a user's flag
// would give them; a ViT because it is the faster tower).
inline std::shared_ptr<LoadedClip> fixture_vit_clip() {
  static const std::shared_ptr<LoadedClip> clip = [] {
    const auto manifest = read_json(fixtures() / "clip" / "clip-manifest.json");
    for (const auto& f : clip_model_files()) {
      if (manifest["models"][f.model]["config"]["vision_layers"].is_array()) continue;  // a ResNet
      LoadOptions options;
      options.vocab = (fixtures() / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz").string();
      options.text_heads = manifest["models"][f.model]["config"]["transformer_heads"].get<int64_t>();
      return std::make_shared<LoadedClip>(load_clip((fixtures() / "clip" / f.file).string(), options));
    }
    throw std::runtime_error("no ViT CLIP in the fixture manifest");
  }();
  return clip;
}

// A fresh folder under the system temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::temp_directory_path() / (std::string("clipguide-") + info->test_suite_name() +
                                                      "-" + info->name() + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

}  // namespace clipguide::test
