#include "clip/embed.h"

#include "clip/score.h"
#include "core/error.h"

namespace clipguide {
namespace {

torch::Tensor finish(torch::Tensor features, const EmbedOptions& options) {
  features = features.to(torch::kCPU, torch::kFloat);
  if (options.normalize) features = features / features.norm(2, -1, true);
  return features;
}

}  // namespace

torch::Tensor embed_image_files(LoadedClip& clip, const std::vector<std::string>& paths,
                                const EmbedOptions& options) {
  std::vector<torch::Tensor> out{torch::empty({0, clip.model->config().embed_dim})};
  stream_image_features(clip, paths, options.batch_size, options.workers, options.normalize,
                        [&](const ImageBatch& batch) {
                          if (!batch.errors.empty()) throw Error(batch.errors.front().second);
                          out.push_back(batch.features);
                        });
  return torch::cat(out);
}

torch::Tensor embed_texts(LoadedClip& clip, const std::vector<std::string>& texts,
                          const EmbedOptions& options) {
  if (texts.empty()) return torch::empty({0, clip.model->config().embed_dim});
  torch::NoGradGuard no_grad;
  const Tokenizer& tokenizer = clip.require_tokenizer();
  const auto device = clip.model->parameters().front().device();
  std::vector<torch::Tensor> out;
  for (size_t start = 0; start < texts.size(); start += options.batch_size) {
    const size_t end = std::min(texts.size(), start + options.batch_size);
    const std::vector<std::string> batch(texts.begin() + start, texts.begin() + end);
    const torch::Tensor tokens =
        tokenizer.tokenize(batch, clip.model->config().context_length, options.truncate);
    out.push_back(finish(clip.model->encode_text(tokens.to(device)), options));
  }
  return torch::cat(out);
}

}  // namespace clipguide
