// Checkpoint names -> OpenAI names, one table per layout: Hugging Face CLIPModel and SiglipModel (plus the
// q/k/v merge; Ref: transformers models/clip/convert_clip_original_pytorch_to_hf.py, read in reverse), and
// open_clip's timm towers (Ref: timm models/vision_transformer.py, layers/attention_pool.py).
#pragma once

#include "core/tensor_map.h"

namespace clipguide {

// True when the weights use Hugging Face CLIPModel naming (text_model.*, vision_model.*).
bool has_hf_clip_names(const TensorMap& sd);

// Renames HF weights to OpenAI names, concatenates q/k/v projections into in_proj_{weight,bias} and
// transposes the two projections. Keys it does not know are passed through unchanged, so the strict loader
// reports them.
TensorMap hf_to_openai_names(const TensorMap& hf);

// True when the weights are open_clip's with a timm image tower (visual.trunk.*), as its SigLIP models are.
bool has_open_clip_timm_names(const TensorMap& sd);

// Renames open_clip's timm SigLIP layout to the same OpenAI-style names as SiglipModel's: the timm ViT trunk
// (patch_embed, pos_embed, blocks.N with a fused qkv, norm, the attn_pool head whose q and kv projections are
// concatenated into one in_proj) and open_clip's text tower (text.*, its Linear projection transposed). Keys
// it does not know pass through unchanged, so the strict loader reports them.
TensorMap open_clip_timm_to_openai_names(const TensorMap& sd);

}  // namespace clipguide
