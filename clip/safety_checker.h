// Stable Diffusion's safety checker, loaded as diffusers saves StableDiffusionSafetyChecker (config.json, a
// CLIPConfig, and its weights): a CLIP image tower with a projection, 17 concept embeddings and 3 "special
// care" embeddings, each with a threshold. Its decision is diffusers' exactly (Ref: diffusers
// pipelines/stable_diffusion/safety_checker.py, StableDiffusionSafetyChecker.forward).
#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

#include "clip/load.h"

namespace clipguide {

struct SafetyChecker {
  LoadedClip clip;  // the image tower alone (config().text_tower is false), with its preprocessing
  torch::Tensor concept_embeds, concept_thresholds;  // [C, E], [C]
  torch::Tensor special_embeds, special_thresholds;  // [S, E], [S]
};

// A diffusers safety_checker folder (or its weights file). Preprocessing comes from a
// preprocessor_config.json beside the weights, else from the pipeline's ../feature_extractor/, else CLIP's.
// Missing or mis-shaped concept tensors are an Error naming them.
SafetyChecker load_safety_checker(const std::string& path, const LoadOptions& options = {});

// One image's verdict.
struct SafetyVerdict {
  // Per concept: cos(image, concept) - threshold (+ 0.01 once a special-care concept was hit), rounded to 3
  // decimals as diffusers rounds them; raw_* are the same before rounding.
  std::vector<float> concept_scores, special_scores, raw_concept_scores, raw_special_scores;
  bool special_care = false;  // a special-care score above 0
  bool flagged = false;       // a concept score above 0: what diffusers reports as has_nsfw_concepts
  int64_t nearest = 0;        // the concept with the highest score
};

// The verdicts for image embeddings [B, E] (the tower's projected output, not normalized).
std::vector<SafetyVerdict> safety_verdicts(const SafetyChecker& checker, const torch::Tensor& image_embeds);

}  // namespace clipguide
