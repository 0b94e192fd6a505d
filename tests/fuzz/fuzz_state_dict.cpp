// The state-dict -> model binding: architecture inference from names and shapes, construction, strict
// loading, for CLIP (OpenAI and Hugging Face names), the taming VQGAN and the guided-diffusion UNet. The
// input is what a checkpoint says about its tensors, a safetensors-style header {"name": {"dtype": "F32",
// "shape": [..]}}; the tensors are made as zeros (inputs describing over 8M elements are skipped: the
// weights' bytes are not what the binding reads, their names and shapes are).
#include <nlohmann/json.hpp>

#include "clip/load.h"
#include "generators/unet.h"
#include "generators/vqgan.h"
#include "io/state_dict.h"
#include "tests/fuzz/fuzz.h"

namespace {

constexpr int64_t kMaxElements = 8 << 20;

bool tensors_from_header(const uint8_t* data, size_t size, clipguide::TensorMap& out) {
  const nlohmann::json header = nlohmann::json::parse(data, data + size, nullptr, false);
  if (!header.is_object() || header.size() > 4096) return false;
  int64_t total = 0;
  for (const auto& [name, v] : header.items()) {
    if (!v.is_object() || !v.contains("shape") || !v["shape"].is_array() || v["shape"].size() > 6)
      return false;
    std::vector<int64_t> shape;
    int64_t numel = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > uint64_t{kMaxElements}) return false;
      shape.push_back(d.get<int64_t>());
      numel *= shape.back();
      if (numel > kMaxElements) return false;
    }
    total += numel;
    if (total > kMaxElements) return false;
    const bool half = v.contains("dtype") && v["dtype"] == "F16";
    out.emplace(name, torch::zeros(shape, half ? torch::kHalf : torch::kFloat));
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  clipguide::TensorMap sd;
  if (!tensors_from_header(data, size, sd)) return 0;
  clipguide::fuzz::run_input([&] { clipguide::clip_model_from_tensors(sd, {}, "input"); });
  clipguide::fuzz::run_input([&] {
    const clipguide::VqganConfig config = clipguide::VqganConfig::from_state_dict(sd);
    clipguide::build_strict<clipguide::Vqgan>(config, sd, "input");
  });
  return clipguide::fuzz::run_input([&] {
    clipguide::UNetConfig config;
    config.infer_from_state_dict(sd);
    clipguide::build_strict<clipguide::UNetModel>(config, sd, "input");
  });
}
