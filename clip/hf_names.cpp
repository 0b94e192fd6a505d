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

// Looks `name` up in `table`; when it is there, stores `tensor` in `out` under `prefix` + its OpenAI name
// (transposed where the table says) and returns true.
template <size_t N>
bool rename_by(const Rename (&table)[N], const std::string& name, const torch::Tensor& tensor,
               const std::string& prefix, TensorMap& out) {
  for (const auto& r : table) {
    if (name == r.hf) {
      out[prefix + r.openai] = r.transpose ? tensor.t().contiguous() : tensor;
      return true;
    }
  }
  return false;
}

// SiglipModel (and some open_clip files) keep the logit scale and bias as [1]; ours are scalars.
void scalar_logit_parameters(TensorMap& sd) {
  for (const char* scalar : {"logit_scale", "logit_bias"}) {
    auto it = sd.find(scalar);
    if (it != sd.end() && it->second.dim() == 1 && it->second.numel() == 1)
      it->second = it->second.reshape({});
  }
}

// open_clip with a timm trunk: whole-key renames, then per-block ones after "visual.trunk.blocks.N." ->
// "visual.transformer.resblocks.N.". transpose as above (open_clip's text projection is an nn.Linear there).
constexpr Rename kTimmTopLevel[] = {
    {"logit_scale", "logit_scale", false},
    {"logit_bias", "logit_bias", false},
    {"visual.trunk.patch_embed.proj.weight", "visual.conv1.weight", false},
    {"visual.trunk.patch_embed.proj.bias", "visual.conv1.bias", false},
    {"visual.trunk.norm.weight", "visual.ln_post.weight", false},
    {"visual.trunk.norm.bias", "visual.ln_post.bias", false},
    {"visual.trunk.attn_pool.latent", "visual.attn_pool.probe", false},
    {"visual.trunk.attn_pool.proj.weight", "visual.attn_pool.attn.out_proj.weight", false},
    {"visual.trunk.attn_pool.proj.bias", "visual.attn_pool.attn.out_proj.bias", false},
    {"visual.trunk.attn_pool.norm.weight", "visual.attn_pool.ln.weight", false},
    {"visual.trunk.attn_pool.norm.bias", "visual.attn_pool.ln.bias", false},
    {"visual.trunk.attn_pool.mlp.fc1.weight", "visual.attn_pool.mlp.c_fc.weight", false},
    {"visual.trunk.attn_pool.mlp.fc1.bias", "visual.attn_pool.mlp.c_fc.bias", false},
    {"visual.trunk.attn_pool.mlp.fc2.weight", "visual.attn_pool.mlp.c_proj.weight", false},
    {"visual.trunk.attn_pool.mlp.fc2.bias", "visual.attn_pool.mlp.c_proj.bias", false},
    {"text.text_projection.weight", "text_projection", true},
    {"text.text_projection.bias", "text_projection_bias", false},
};
constexpr Rename kTimmBlock[] = {
    {"norm1.weight", "ln_1.weight", false},
    {"norm1.bias", "ln_1.bias", false},
    {"norm2.weight", "ln_2.weight", false},
    {"norm2.bias", "ln_2.bias", false},
    {"attn.qkv.weight", "attn.in_proj_weight", false},
    {"attn.qkv.bias", "attn.in_proj_bias", false},
    {"attn.proj.weight", "attn.out_proj.weight", false},
    {"attn.proj.bias", "attn.out_proj.bias", false},
    {"mlp.fc1.weight", "mlp.c_fc.weight", false},
    {"mlp.fc1.bias", "mlp.c_fc.bias", false},
    {"mlp.fc2.weight", "mlp.c_proj.weight", false},
    {"mlp.fc2.bias", "mlp.c_proj.bias", false},
};

}  // namespace

namespace {

// transformers 5 saves a CLIPTextModel's weights without the text_model. prefix (embeddings.*, encoder.*,
// final_layer_norm.*), as a Stable Diffusion text_encoder/ folder it wrote holds them.
bool bare_text_model_names(const TensorMap& sd) { return sd.count("embeddings.token_embedding.weight") != 0; }

}  // namespace

bool has_hf_clip_names(const TensorMap& sd) {
  if (bare_text_model_names(sd)) return true;
  for (const auto& kv : sd) {
    if (kv.first.rfind("text_model.", 0) == 0 || kv.first.rfind("vision_model.", 0) == 0) return true;
  }
  return false;
}

bool has_open_clip_timm_names(const TensorMap& sd) {
  for (const auto& kv : sd) {
    if (kv.first.rfind("visual.trunk.", 0) == 0) return true;
  }
  return false;
}

TensorMap open_clip_timm_to_openai_names(const TensorMap& sd) {
  static const std::regex block_re(R"(^visual\.trunk\.blocks\.(\d+)\.(.+)$)");
  TensorMap out;
  torch::Tensor pool_q[2], pool_kv[2];  // the attention pool's q and kv projections: weight, bias
  for (const auto& [name, tensor] : sd) {
    std::smatch m;
    if (rename_by(kTimmTopLevel, name, tensor, "", out) ||
        (std::regex_match(name, m, block_re) &&
         rename_by(kTimmBlock, m[2].str(), tensor, cat("visual.transformer.resblocks.", m[1].str(), "."),
                   out)))
      continue;
    if (name == "visual.trunk.pos_embed" && tensor.dim() == 3 && tensor.size(0) == 1) {
      out["visual.positional_embedding"] = tensor[0];  // [1, N, D] -> [N, D]
    } else if (name == "visual.trunk.attn_pool.q.weight" || name == "visual.trunk.attn_pool.q.bias") {
      pool_q[name.back() == 't' ? 0 : 1] = tensor;
    } else if (name == "visual.trunk.attn_pool.kv.weight" || name == "visual.trunk.attn_pool.kv.bias") {
      pool_kv[name.back() == 't' ? 0 : 1] = tensor;
    } else if (name.rfind("text.", 0) == 0) {
      out[name.substr(5)] = tensor;  // open_clip's TextTransformer already uses OpenAI's names
    } else {
      out[name] = tensor;
    }
  }
  const char* const parts[] = {"weight", "bias"};
  for (int i = 0; i < 2; ++i) {
    if (pool_q[i].defined() != pool_kv[i].defined())
      fail("open_clip weights: visual.trunk.attn_pool has only one of q.", parts[i], " and kv.", parts[i]);
    if (!pool_q[i].defined()) continue;
    if (pool_q[i].dim() < 1 || pool_kv[i].dim() != pool_q[i].dim() ||
        pool_kv[i].size(0) != 2 * pool_q[i].size(0))
      fail("open_clip weights: visual.trunk.attn_pool.kv.", parts[i], " is ", pool_kv[i].sizes(),
           ", not twice q.", parts[i], " ", pool_q[i].sizes());
    // [D, ...] and [2D, ...] -> [3D, ...]: MultiheadAttention's in_proj order, q then k then v
    out[cat("visual.attn_pool.attn.in_proj_", parts[i])] = torch::cat({pool_q[i], pool_kv[i]}, 0);
  }
  scalar_logit_parameters(out);
  return out;
}

TensorMap hf_to_openai_names(const TensorMap& hf_given) {
  static const std::regex layer_re(R"(^(text|vision)_model\.encoder\.layers\.(\d+)\.(.+)$)");
  TensorMap prefixed;
  if (bare_text_model_names(hf_given)) {
    for (const auto& [name, tensor] : hf_given) prefixed["text_model." + name] = tensor;
  }
  const TensorMap& hf = prefixed.empty() ? hf_given : prefixed;
  TensorMap out;
  // q/k/v pieces per (layer prefix, weight|bias), merged once all three are present.
  std::map<std::string, std::array<torch::Tensor, 3>> qkv;
  for (const auto& [name, tensor] : hf) {
    bool done = rename_by(kTopLevel, name, tensor, "", out);
    std::smatch m;
    if (!done && std::regex_match(name, m, layer_re)) {
      const std::string prefix =
          cat(m[1] == "vision" ? "visual." : "", "transformer.resblocks.", m[2].str(), ".");
      const std::string rest = m[3];
      done = rename_by(kLayer, rest, tensor, prefix, out);
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
  scalar_logit_parameters(out);
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
