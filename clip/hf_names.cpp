#include "clip/hf_names.h"

#include <array>
#include <map>
#include <regex>

#include "core/error.h"

namespace clipguide {
namespace {

// Whole-key renames. transpose: HF stores nn.Linear weights [out, in]; OpenAI stores projections [in, out].
struct Rename {
  const char* hf;
  const char* openai;
  bool transpose;
};
constexpr Rename kTopLevel[] = {
    {"logit_scale", "logit_scale", false},
    {"text_projection.weight", "text_projection", true},
    {"visual_projection.weight", "visual.proj", true},
    {"text_model.embeddings.token_embedding.weight", "token_embedding.weight", false},
    {"text_model.embeddings.position_embedding.weight", "positional_embedding", false},
    {"text_model.final_layer_norm.weight", "ln_final.weight", false},
    {"text_model.final_layer_norm.bias", "ln_final.bias", false},
    {"vision_model.embeddings.class_embedding", "visual.class_embedding", false},
    {"vision_model.embeddings.patch_embedding.weight", "visual.conv1.weight", false},
    {"vision_model.embeddings.position_embedding.weight", "visual.positional_embedding", false},
    {"vision_model.pre_layrnorm.weight", "visual.ln_pre.weight", false},
    {"vision_model.pre_layrnorm.bias", "visual.ln_pre.bias", false},
    {"vision_model.post_layernorm.weight", "visual.ln_post.weight", false},
    {"vision_model.post_layernorm.bias", "visual.ln_post.bias", false},
    // SiglipModel's: the patch bias, the text head (a biased projection) and the vision attention-pool head.
    {"vision_model.embeddings.patch_embedding.bias", "visual.conv1.bias", false},
    {"text_model.head.weight", "text_projection", true},
    {"text_model.head.bias", "text_projection_bias", false},
    {"vision_model.head.probe", "visual.attn_pool.probe", false},
    {"vision_model.head.attention.in_proj_weight", "visual.attn_pool.attn.in_proj_weight", false},
    {"vision_model.head.attention.in_proj_bias", "visual.attn_pool.attn.in_proj_bias", false},
    {"vision_model.head.attention.out_proj.weight", "visual.attn_pool.attn.out_proj.weight", false},
    {"vision_model.head.attention.out_proj.bias", "visual.attn_pool.attn.out_proj.bias", false},
    {"vision_model.head.layernorm.weight", "visual.attn_pool.ln.weight", false},
    {"vision_model.head.layernorm.bias", "visual.attn_pool.ln.bias", false},
    {"vision_model.head.mlp.fc1.weight", "visual.attn_pool.mlp.c_fc.weight", false},
    {"vision_model.head.mlp.fc1.bias", "visual.attn_pool.mlp.c_fc.bias", false},
    {"vision_model.head.mlp.fc2.weight", "visual.attn_pool.mlp.c_proj.weight", false},
    {"vision_model.head.mlp.fc2.bias", "visual.attn_pool.mlp.c_proj.bias", false},
};

// Per-layer renames, after "{text,vision}_model.encoder.layers.N." -> "[visual.]transformer.resblocks.N.".
constexpr Rename kLayer[] = {
    {"self_attn.out_proj.weight", "attn.out_proj.weight", false},
    {"self_attn.out_proj.bias", "attn.out_proj.bias", false},
    {"layer_norm1.weight", "ln_1.weight", false},
    {"layer_norm1.bias", "ln_1.bias", false},
    {"layer_norm2.weight", "ln_2.weight", false},
    {"layer_norm2.bias", "ln_2.bias", false},
    {"mlp.fc1.weight", "mlp.c_fc.weight", false},
    {"mlp.fc1.bias", "mlp.c_fc.bias", false},
    {"mlp.fc2.weight", "mlp.c_proj.weight", false},
    {"mlp.fc2.bias", "mlp.c_proj.bias", false},
};

const char* const kQkv[] = {"q_proj", "k_proj", "v_proj"};

}  // namespace

bool has_hf_clip_names(const TensorMap& sd) {
  for (const auto& kv : sd) {
    if (kv.first.rfind("text_model.", 0) == 0 || kv.first.rfind("vision_model.", 0) == 0) return true;
  }
  return false;
}

TensorMap hf_to_openai_names(const TensorMap& hf) {
  static const std::regex layer_re(R"(^(text|vision)_model\.encoder\.layers\.(\d+)\.(.+)$)");
  TensorMap out;
  // q/k/v pieces per (layer prefix, weight|bias), merged once all three are present.
  std::map<std::string, std::array<torch::Tensor, 3>> qkv;
  for (const auto& [name, tensor] : hf) {
    bool done = false;
    for (const auto& r : kTopLevel) {
      if (name == r.hf) {
        out[r.openai] = r.transpose ? tensor.t().contiguous() : tensor;
        done = true;
      }
    }
    std::smatch m;
    if (!done && std::regex_match(name, m, layer_re)) {
      const std::string prefix =
          cat(m[1] == "vision" ? "visual." : "", "transformer.resblocks.", m[2].str(), ".");
      const std::string rest = m[3];
      for (const auto& r : kLayer) {
        if (rest == r.hf) {
          out[prefix + r.openai] = tensor;
          done = true;
        }
      }
      for (int i = 0; i < 3 && !done; ++i) {
        for (const char* part : {"weight", "bias"}) {
          if (rest == cat("self_attn.", kQkv[i], ".", part)) {
            qkv[cat(prefix, "attn.in_proj_", part)][i] = tensor;
            done = true;
          }
        }
      }
    }
    if (!done) out[name] = tensor;
  }
  // SiglipModel keeps its logit scale and bias as [1]; ours are scalars.
  for (const char* scalar : {"logit_scale", "logit_bias"}) {
    auto it = out.find(scalar);
    if (it != out.end() && it->second.dim() == 1 && it->second.numel() == 1)
      it->second = it->second.reshape({});
  }
  for (auto& [name, parts] : qkv) {
    for (int i = 0; i < 3; ++i) {
      if (!parts[i].defined()) fail("Hugging Face weights for '", name, "' lack ", kQkv[i]);
      if (parts[i].sizes() != parts[0].sizes()) {
        fail("Hugging Face weights for '", name, "': ", kQkv[i], " is ", parts[i].sizes(), " but ", kQkv[0],
             " is ", parts[0].sizes());
      }
    }
    out[name] = torch::cat({parts[0], parts[1], parts[2]}, 0);  // 3 x [D, D] -> [3D, D]
  }
  return out;
}

}  // namespace clipguide
