// Hugging Face CLIPModel names -> OpenAI names: one table plus the q/k/v merge (Ref: transformers
// models/clip/convert_clip_original_pytorch_to_hf.py, read in reverse).
#pragma once

#include "core/tensor_map.h"

namespace clipguide {

// True when the weights use Hugging Face CLIPModel naming (text_model.*, vision_model.*).
bool has_hf_clip_names(const TensorMap& sd);

// Renames HF weights to OpenAI names, concatenates q/k/v projections into in_proj_{weight,bias} and
// transposes the two projections. Keys it does not know are passed through unchanged, so the strict loader
// reports them.
TensorMap hf_to_openai_names(const TensorMap& hf);

}  // namespace clipguide
