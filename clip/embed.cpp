#include "clip/embed.h"

#include "clip/image.h"

namespace clipguide {
namespace {

torch::Tensor finish(torch::Tensor features, const EmbedOptions& options) {
  features = features.to(torch::kCPU, torch::kFloat);
  if (options.normalize) features = features / features.norm(2, -1, true);
  return features;
}

}  // namespace

torch::Tensor embed_image_files(LoadedClip& clip, const std::vector<std::string>& paths, const EmbedOptions& options) {
  torch::NoGradGuard no_grad;
  const int64_t n_px = clip.model->config().image_resolution;
  const auto param = clip.model->parameters().front();
  std::vector<torch::Tensor> out;
  for (size_t start = 0; start < paths.size(); start += options.batch_size) {
    std::vector<torch::Tensor> batch;
    for (size_t i = start; i < paths.size() && i < start + options.batch_size; ++i) {
      batch.push_back(preprocess(read_image(paths[i]), n_px));
    }
    const torch::Tensor pixels = torch::stack(batch).to(param.device(), param.scalar_type());
    out.push_back(finish(clip.model->encode_image(pixels), options));
  }
  if (out.empty()) return torch::empty({0, clip.model->config().embed_dim});
  return torch::cat(out);
}

torch::Tensor embed_texts(LoadedClip& clip, const std::vector<std::string>& texts, const EmbedOptions& options) {
  if (texts.empty()) return torch::empty({0, clip.model->config().embed_dim});
  torch::NoGradGuard no_grad;
  const Tokenizer& tokenizer = clip.require_tokenizer();
  const auto device = clip.model->parameters().front().device();
  std::vector<torch::Tensor> out;
  for (size_t start = 0; start < texts.size(); start += options.batch_size) {
    const size_t end = std::min(texts.size(), start + options.batch_size);
    const std::vector<std::string> batch(texts.begin() + start, texts.begin() + end);
    const torch::Tensor tokens = tokenizer.tokenize(batch, clip.model->config().context_length, options.truncate);
    out.push_back(finish(clip.model->encode_text(tokens.to(device)), options));
  }
  return torch::cat(out);
}

}  // namespace clipguide
