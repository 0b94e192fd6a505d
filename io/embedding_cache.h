// An on-disk cache of image embeddings keyed by the image file's content hash and the model's identity, so
// scoring the same images against new prompts does not re-encode them. Entries are written atomically; an
// entry that does not read back as written is reported and recomputed.
#pragma once

#include <torch/types.h>

#include <optional>
#include <string>

namespace clipguide {

class EmbeddingCache {
 public:
  // `model_key` identifies the weights and how they are computed (see model_cache_key).
  EmbeddingCache(std::string dir, const std::string& model_key);

  // The cached unnormalized embedding for the image with this content hash, if present and intact.
  std::optional<torch::Tensor> lookup(const std::string& image_sha256, int64_t dim) const;
  void store(const std::string& image_sha256, const torch::Tensor& embedding) const;

 private:
  std::string entry_path(const std::string& image_sha256) const;
  std::string dir_;
};

// SHA-256 of the weights file (remembered in `cache_dir` per path, size and mtime, so a multi-gigabyte file
// is hashed once) combined with the compute dtype.
std::string model_cache_key(const std::string& cache_dir, const std::string& weights_path,
                            const std::string& dtype);

}  // namespace clipguide
