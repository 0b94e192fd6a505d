#include "clip/safety_checker.h"

#include <torch/torch.h>

#include <cmath>
#include <filesystem>

#include "clip/hf_names.h"
#include "core/error.h"
#include "core/file_io.h"
#include "io/checkpoint.h"

namespace clipguide {

namespace fs = std::filesystem;

namespace {

// Removes `key` from the weights and checks its shape against `rows` (and `cols` if given); 0 takes any.
torch::Tensor take(TensorMap& sd, const std::string& key, const std::string& source, int64_t cols) {
  auto it = sd.find(key);
  if (it == sd.end()) fail(source, ": no ", key, " (a diffusers StableDiffusionSafetyChecker has one)");
  torch::Tensor t = it->second.to(torch::kFloat);
  sd.erase(it);
  if ((cols > 0 && (t.dim() != 2 || t.size(1) != cols)) || (cols == 0 && t.dim() != 1))
    fail(source, ": ", key, " has shape ", t.sizes(), ", expected ",
         cols > 0 ? cat("[N, ", cols, "]") : "[N]");
  return t;
}

// numpy's round(x, 3) of a float32, as diffusers applies it to the float32 scores: x * 1000 in float32,
// rounded half to even, divided back.
float round3(float x) { return std::nearbyint(x * 1000.0f) / 1000.0f; }

// F.normalize over rows: x / max(|x|, 1e-12).
torch::Tensor unit_rows(const torch::Tensor& x) {
  namespace F = torch::nn::functional;
  return F::normalize(x, F::NormalizeFuncOptions().dim(1));
}

}  // namespace

SafetyChecker load_safety_checker(const std::string& path, const LoadOptions& options) {
  Checkpoint ckpt = read_checkpoint(path);
  // StableDiffusionSafetyChecker holds a CLIPVisionModel as `vision_model`, which holds its own
  // `vision_model`.
  TensorMap sd;
  const std::string nested = "vision_model.vision_model.";
  for (auto& [key, value] : ckpt.tensors)
    sd[key.rfind(nested, 0) == 0 ? key.substr(std::string("vision_model.").size()) : key] = value;
  SafetyChecker out;
  if (sd.count("visual_projection.weight") == 0)
    fail(ckpt.path, ": no visual_projection.weight; not a diffusers StableDiffusionSafetyChecker");
  const int64_t dim = sd.at("visual_projection.weight").size(0);
  out.concept_embeds = take(sd, "concept_embeds", ckpt.path, dim);
  out.concept_thresholds = take(sd, "concept_embeds_weights", ckpt.path, 0);
  out.special_embeds = take(sd, "special_care_embeds", ckpt.path, dim);
  out.special_thresholds = take(sd, "special_care_embeds_weights", ckpt.path, 0);
  if (out.concept_thresholds.size(0) != out.concept_embeds.size(0) ||
      out.special_thresholds.size(0) != out.special_embeds.size(0))
    fail(ckpt.path, ": ", out.concept_embeds.size(0), " concepts with ", out.concept_thresholds.size(0),
         " thresholds, ", out.special_embeds.size(0), " special-care concepts with ",
         out.special_thresholds.size(0));
  if (sd.count("vision_model.embeddings.class_embedding") == 0)
    fail(ckpt.path,
         ": no vision_model.vision_model.* image tower; not a diffusers StableDiffusionSafetyChecker");
  if (ckpt.configs.preprocessor_json.empty()) {
    const fs::path pipeline = fs::path(ckpt.path).parent_path().parent_path() / "feature_extractor";
    std::error_code ec;
    if (fs::is_regular_file(pipeline / "preprocessor_config.json", ec))
      ckpt.configs.preprocessor_json =
          read_small_file((pipeline / "preprocessor_config.json").string(), kMaxConfigBytes);
  }
  out.clip.path = ckpt.path;
  out.clip.format = ckpt.format + " (diffusers StableDiffusionSafetyChecker)";
  for (const auto& kv : sd) ++out.clip.checkpoint_dtypes[std::string(c10::toString(kv.second.scalar_type()))];
  out.clip.model = clip_model_from_tensors(hf_to_openai_names(sd), ckpt.configs, ckpt.path, options);
  for (const auto& p : out.clip.model->parameters()) out.clip.parameter_count += p.numel();
  for (const torch::Device& device : options.more_devices)
    out.clip.replicas.push_back(replicate(*out.clip.model, device));
  return out;
}

std::vector<SafetyVerdict> safety_verdicts(const SafetyChecker& checker, const torch::Tensor& image_embeds) {
  // diffusers' cosine_distance: both sides through F.normalize (eps 1e-12), then one matrix product, in
  // float32.
  const torch::Tensor image = unit_rows(image_embeds.to(torch::kCPU, torch::kFloat));
  const torch::Tensor special =
      torch::mm(image, unit_rows(checker.special_embeds).t()).contiguous();  // [B, S]
  const torch::Tensor concepts =
      torch::mm(image, unit_rows(checker.concept_embeds).t()).contiguous();  // [B, C]
  const int64_t S = special.size(1), C = concepts.size(1);
  std::vector<SafetyVerdict> out(image.size(0));
  for (int64_t b = 0; b < image.size(0); ++b) {
    SafetyVerdict& v = out[b];
    // The adjustment becomes 0.01 after the first special-care hit and applies to the special-care concepts
    // after it as well as to every concept: diffusers' loop order, kept exactly.
    float adjustment = 0.0f;
    for (int64_t s = 0; s < S; ++s) {
      const float raw =
          (special[b][s].item<float>() - checker.special_thresholds[s].item<float>()) + adjustment;
      v.raw_special_scores.push_back(raw);
      v.special_scores.push_back(round3(raw));
      if (v.special_scores.back() > 0) {
        v.special_care = true;
        adjustment = 0.01f;
      }
    }
    for (int64_t c = 0; c < C; ++c) {
      const float raw =
          (concepts[b][c].item<float>() - checker.concept_thresholds[c].item<float>()) + adjustment;
      v.raw_concept_scores.push_back(raw);
      v.concept_scores.push_back(round3(raw));
      if (v.concept_scores.back() > 0) v.flagged = true;
      if (raw > v.raw_concept_scores[v.nearest]) v.nearest = c;
    }
  }
  return out;
}

}  // namespace clipguide
