// Batched embedding of image files and texts with a loaded CLIP: what `clipguide embed` and library users
// call.
#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

#include "clip/load.h"

namespace clipguide {

struct EmbedOptions {
  int64_t batch_size = 32;
  bool normalize = false;  // L2-normalize each embedding
  bool truncate = false;   // texts longer than the context: truncate instead of failing
  int workers = 2;         // image decoding threads
};

// Image files -> [N, E] float32 on the CPU (decoded and preprocessed as OpenAI's preprocess); the first image
// that does not decode is an Error.
torch::Tensor embed_image_files(LoadedClip& clip, const std::vector<std::string>& paths,
                                const EmbedOptions& options);
// Texts -> [N, E] float32 on the CPU.
torch::Tensor embed_texts(LoadedClip& clip, const std::vector<std::string>& texts,
                          const EmbedOptions& options);

}  // namespace clipguide
