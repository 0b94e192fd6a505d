// Image-prompt scores with one explicit definition each, prompt ensembles, and a streaming image pipeline
// that decodes and preprocesses on worker threads while the model runs. Shared by `clipguide score` and
// `rerank`.
#pragma once

#include <torch/types.h>

#include <functional>
#include <string>
#include <vector>

#include "clip/load.h"
#include "core/names.h"
#include "io/embedding_cache.h"

namespace clipguide {

enum class Metric { Cosine, Logit, ClipScore, Probs, Sigmoid };
// Parsing ("cosine", ...; anything else is an Error listing the choices) and naming, from one table.
inline constexpr Named<Metric> kMetrics[] = {{Metric::Cosine, "cosine"},
                                             {Metric::Logit, "logit"},
                                             {Metric::ClipScore, "clipscore"},
                                             {Metric::Probs, "probs"},
                                             {Metric::Sigmoid, "sigmoid"}};
inline Metric parse_metric(const std::string& name) { return parse_name(kMetrics, name, "metric"); }
inline const char* metric_name(Metric metric) { return name_of(kMetrics, metric); }

// The formula, as written into every output.
const char* metric_definition(Metric metric);

// Scores [I, P] from L2-normalized image [I, E] and text [P, E] embeddings; `logit_scale` is
// exp(logit_scale), `logit_bias` SigLIP's (0 for CLIP).
torch::Tensor apply_metric(const torch::Tensor& image, const torch::Tensor& text, Metric metric,
                           double logit_scale, double logit_bias = 0.0);
// The same with exp(logit_scale) and the bias as 0-d tensors on the embeddings' device (ClipModel's
// logit_scale_exp() and logit_bias_tensor()), so nothing is read back to the host.
torch::Tensor apply_metric(const torch::Tensor& image, const torch::Tensor& text, Metric metric,
                           const torch::Tensor& logit_scale, const torch::Tensor& logit_bias);

// Normalized text embeddings [P, E]. With templates ("a photo of {}"), each prompt's embedding is the
// renormalized mean of its normalized template embeddings (CLIP's prompt-engineering notebook).
torch::Tensor embed_prompts(LoadedClip& clip, const std::vector<std::string>& prompts,
                            const std::vector<std::string>& templates, bool truncate);

// Image files under the given files and folders: a file as given, a folder's PNG/JPEG files by extension,
// recursively and through symlinked folders, sorted. A folder with none is an Error naming it.
std::vector<std::string> collect_image_files(const std::vector<std::string>& inputs);

struct ImageBatch {
  std::vector<std::string> paths;  // images that decoded, in input order
  std::vector<size_t> positions;   // each of those images' index in the input list
  torch::Tensor features;          // [paths.size(), E], float32 on the CPU, L2-normalized if asked
  std::vector<std::pair<std::string, std::string>> errors;  // (path, message) for images that did not decode
};

// Streams `paths` through the model in batches: batch k + 1 is decoded and preprocessed on `workers` threads
// while batch k runs, so memory stays at two batches whatever the number of files. `on_batch` is called in
// input order. With a cache, images whose content was embedded before are not decoded or encoded again.
void stream_image_features(LoadedClip& clip, const std::vector<std::string>& paths, int64_t batch_size,
                           int workers, bool normalize,
                           const std::function<void(const ImageBatch&)>& on_batch,
                           const EmbeddingCache* cache = nullptr);

}  // namespace clipguide
