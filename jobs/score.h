// The score and rerank jobs as library calls, on the pattern of jobs/generate.h: a plain request, checked in
// its validate(), and one call that loads the model, streams the images through it in batches and reports
// rows through callbacks as they are ready (memory stays flat over any number of images). The command line
// (cli/score.cpp) reads files of prompts and pairs, fills the request and prints the rows.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "clip/load.h"
#include "clip/score.h"
#include "io/embedding_cache.h"

namespace clipguide {

// How images are read and encoded: shared by score and rerank.
struct ImageStream {
  int64_t batch_size = 32;       // images per forward pass
  int workers = 0;               // decoding threads; 0: one per CPU
  bool skip_unreadable = false;  // an image that does not decode: reported to on_skipped, else an Error
  std::string cache;             // a folder of image embeddings keyed by content and model; empty: none

  void validate() const;
};

// What score and rerank report while they run.
struct StreamCallbacks {
  std::function<void(const LoadedClip&)> on_loaded;            // the model, once loaded, before any image
  std::function<void(size_t done, size_t total)> on_progress;  // images done, after each batch
  std::function<void(const std::string& path, const std::string& message)> on_skipped;  // skip_unreadable
  std::function<bool()> should_stop;  // polled after each batch; true ends the job with JobStopped
};

// Thrown when should_stop asked: every row reported before it is complete.
struct JobStopped {};

// An Error for a prompt that is not valid UTF-8.
void check_prompts(const std::vector<std::string>& prompts);

// The model a streaming job loads once, and the embedding cache for it and its compute setup
// (ImageStream::cache).
struct StreamModel {
  LoadedClip clip;
  std::optional<EmbeddingCache> cache;
};
StreamModel load_stream_model(const std::string& model, const ModelSettings& settings,
                              const ImageStream& stream, const StreamCallbacks& callbacks);
// The same for a model already loaded (on_loaded is called here too).
StreamModel stream_model_for(LoadedClip clip, const ModelSettings& settings, const ImageStream& stream,
                             const StreamCallbacks& callbacks);

// The images of `paths` in batches through the model (features L2-normalized if asked): unreadable ones go to
// on_skipped (or fail the job), then progress (`done` of `total`) and should_stop after each batch.
void stream_images(StreamModel& model, const std::vector<std::string>& paths, const ImageStream& stream,
                   const StreamCallbacks& callbacks, size_t& done, size_t total, bool normalize,
                   const std::function<void(const ImageBatch&)>& on_batch);

struct ScoreRequest {
  std::string model;   // a checkpoint file or folder, a name, a hub id
  ModelSettings clip;  // device may list several: batches spread over them
  std::vector<std::string> prompts;
  std::vector<std::string> templates;  // each prompt's embedding is the mean over "... {} ..." templates
  bool truncate = false;
  Metric metric = Metric::Cosine;
  // Either images, each scored against every prompt, or (image, prompt) pairs, each image against its own.
  std::vector<std::string> images;
  std::vector<std::pair<std::string, std::string>> pairs;
  // The worker mode (as IndexRequest::next_task): when set, more images come from here after `images`, a set
  // at a time, each scored (every row reported) before the next is asked for, until it returns nullopt; the
  // model and the prompts' embeddings are made once. Not with pairs.
  std::function<std::optional<std::vector<std::string>>()> next_images;
  ImageStream stream;

  void validate() const;
};

struct ScoreRow {
  std::string image, prompt;
  double score = 0;
  size_t position =
      0;  // the image's place in `images` (in the worker's current set), or its pair's in `pairs`
};

struct ScoreSummary {
  size_t images = 0;       // scored (skipped ones not counted)
  double seconds = 0;      // the image pipeline: decode, preprocess, encode, score (loading excluded)
  double logit_scale = 0;  // exp(logit_scale) of the model
  double logit_bias = 0;   // SigLIP's logit bias; 0 for CLIP
  // Over the pairs: torchmetrics' CLIPScore, 100 * max(mean cos, 0), and Hessel et al.'s, mean 2.5 * max(cos,
  // 0).
  size_t pairs = 0;
  double mean_torchmetrics = 0, mean_clipscore = 0;
};

// Rows go to on_rows batch by batch, in input order.
ScoreSummary score(const ScoreRequest& request,
                   const std::function<void(const std::vector<ScoreRow>&)>& on_rows,
                   const StreamCallbacks& callbacks = {});

struct RerankRequest {
  std::string model;
  ModelSettings clip;
  std::vector<std::string> prompts, negatives, templates;  // score = mean cos(prompts) - mean cos(negatives)
  bool truncate = false;
  // Groups ranked apart, each against its own prompt (with an empty prompt: against `prompts`).
  struct Group {
    std::string prompt;
    std::vector<std::string> images;
  };
  std::vector<Group> groups;
  // The worker mode (as IndexRequest::next_task): when set, more groups come from here after `groups`, one at
  // a time, each ranked before the next is asked for, until it returns nullopt; the model loads once. Such a
  // group may be empty. No copies and no report in this mode.
  std::function<std::optional<Group>()> next_group;
  int64_t top = 0;  // keep the best `top` per group; 0: all
  // The kept images copied (or symlinked) into this folder as RANK-NAME (g001-RANK-NAME with several groups).
  std::string copy_to, link_to;
  std::string html;  // a self-contained HTML report
  ImageStream stream;

  void validate() const;
};

struct RankedImage {
  int64_t rank = 0;
  std::string image;
  double score = 0;
  std::string copy;  // where copy_to / link_to put it, or empty
};

// The definition of rerank's score, as reports state it.
extern const char* const kRerankDefinition;

// Each group's ranking goes to on_group (its index, the group, best first) as soon as it is done.
void rerank(
    const RerankRequest& request,
    const std::function<void(size_t, const RerankRequest::Group&, const std::vector<RankedImage>&)>& on_group,
    const StreamCallbacks& callbacks = {});

}  // namespace clipguide
