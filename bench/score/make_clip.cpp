// Writes a full-size CLIP (ViT-B/32, ViT-L/14 or RN50 shapes) with random weights to safetensors, in OpenAI
// names, for bench/score: real shapes and real file format, no download.
//
//   bench_make_clip ViT-B/32|ViT-L/14|RN50 OUT.safetensors [SEED]
#include <cstdio>
#include <string>

#include "clip/model.h"
#include "core/file_io.h"
#include "io/safetensors.h"

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: bench_make_clip ViT-B/32|ViT-L/14|RN50 OUT.safetensors [SEED]\n");
    return 2;
  }
  const std::string arch = argv[1];
  torch::manual_seed(argc > 3 ? std::stoll(argv[3]) : 0);
  clipguide::ClipConfig c;
  c.context_length = 77;
  c.vocab_size = 49408;
  c.transformer_width = 512;
  c.transformer_heads = 8;
  c.transformer_layers = 12;
  c.image_resolution = 224;
  if (arch == "ViT-B/32") {
    c.embed_dim = 512;
    c.vision_layers = {12};
    c.vision_width = 768;
    c.vision_patch_size = 32;
    c.vision_heads = 12;
  } else if (arch == "ViT-L/14") {
    c.embed_dim = 768;
    c.transformer_width = 768;
    c.transformer_heads = 12;
    c.vision_layers = {24};
    c.vision_width = 1024;
    c.vision_patch_size = 14;
    c.vision_heads = 16;
  } else if (arch == "RN50") {
    c.embed_dim = 1024;
    c.vision_resnet = true;
    c.vision_layers = {3, 4, 6, 3};
    c.vision_width = 64;
    c.vision_heads = 32;
  } else {
    std::fprintf(stderr, "bench_make_clip: unknown architecture %s (ViT-B/32, ViT-L/14 or RN50)\n",
                 arch.c_str());
    return 2;
  }
  clipguide::ClipModel model(c);
  clipguide::TensorMap sd;
  torch::NoGradGuard no_grad;
  for (auto& p : model.named_parameters()) {
    // Small random weights; LayerNorm/BatchNorm scales near 1 so activations stay in range through 12+
    // layers.
    const bool scale = p.key().find("ln_") != std::string::npos || p.key().find("bn") != std::string::npos ||
                       p.key().find("downsample.1") != std::string::npos;
    torch::Tensor t = scale && p.key().find("weight") != std::string::npos
                          ? 1 + 0.02 * torch::randn(p.value().sizes())
                          : 0.02 * torch::randn(p.value().sizes());
    if (p.key() == "logit_scale") t = torch::full({}, std::log(100.0));
    // OpenAI's released checkpoints store most weights in fp16 (LayerNorm, embeddings and BatchNorm in fp32).
    sd[p.key()] =
        p.value().dim() >= 2 && p.key().find("embedding") == std::string::npos ? t.to(torch::kHalf) : t;
  }
  for (auto& b : model.named_buffers()) {
    if (b.key() == "causal_mask") continue;
    sd[b.key()] =
        b.key().find("running_var") != std::string::npos ? torch::ones(b.value().sizes()) : b.value().clone();
  }
  clipguide::write_file_atomic(
      argv[2],
      clipguide::serialize_safetensors(sd, {{"format", "pt"}, {"note", "random weights for bench/score"}}));
  std::printf("%s: %s, %zu tensors\n", argv[2], c.architecture().c_str(), sd.size());
  return 0;
}
