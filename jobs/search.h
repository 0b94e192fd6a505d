// Semantic search and content filtering over image collections, as library calls on the pattern of
// jobs/score.h:
// - index: images (and captions) -> clip-retrieval's layout (img_emb/img_emb_N.npy float16 L2-normalized,
//   text_emb/text_emb_N.npy, metadata/metadata_N.parquet), partition i holding the inputs whose index mod P
//   is i, each partition written whole or not at all; then the faiss index over them (jobs/vector_index.h);
// - search: text and image queries (minus negative prompts) against that index;
// - filter: images against denied concepts (text, each with a threshold) and Stable Diffusion's safety
// checker.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "clip/load.h"
#include "jobs/score.h"
#include "jobs/vector_index.h"

namespace clipguide {

// ---- index ----

struct IndexRequest {
  std::string model;
  ModelSettings clip;
  std::vector<std::string> images;    // in input order: row order within each partition
  std::vector<std::string> captions;  // empty, or one per image: text_emb/ and a caption column
  bool truncate = false;              // captions longer than the context are cut, not an Error
  std::string out;                    // the collection's folder
  int64_t partitions = 1;             // clip-retrieval's output_partition_count
  std::vector<int64_t> tasks;         // the partitions this run makes; empty: all
  // The worker mode (a long-lived process that an engine such as Spark feeds): when set, the partitions come
  // from here one at a time, each made (or skipped, if there) before the next is asked for, until it returns
  // nullopt; `tasks` must be empty. The model loads once for all of them.
  std::function<std::optional<int64_t>()> next_task;
  bool build_index = true;  // after the partitions, once all of them exist
  VectorIndexOptions index;
  ImageStream stream;

  void validate() const;
};

struct IndexSummary {
  int64_t partitions_written = 0, partitions_present = 0;  // made now; already there (skipped)
  int64_t images = 0, skipped = 0;                         // rows written; unreadable images skipped
  double seconds = 0;  // writing the partitions: decode, preprocess, encode, write (loading excluded)
  bool index_built = false;
  std::optional<VectorIndexInfo> image_index, text_index;
};

// The collection's files, as clip-retrieval names them: N zero-padded to the digits of P.
std::string partition_name(int64_t partition, int64_t partitions);
// Partition `partition` of `partitions`: the inputs whose index mod `partitions` is `partition`, in input
// order (the i-th of them is input partition + i * partitions). A partition out of range is an Error.
std::vector<std::string> partition_inputs(const std::vector<std::string>& inputs, int64_t partition,
                                          int64_t partitions);

// Writes the request's partitions (on_partition(i, rows) as each lands; rows = -1 for one that was already
// there), then, if asked and every partition
// is there, the index. A folder made with another model, partition count or caption setting is an Error.
IndexSummary index_collection(const IndexRequest& request,
                              const std::function<void(int64_t partition, int64_t rows)>& on_partition,
                              const StreamCallbacks& callbacks = {});

// The index over an existing collection's partitions (image.index, text.index when there are captions, and
// index.json). Every partition must be present.
IndexSummary build_collection_index(const std::string& dir, const VectorIndexOptions& options);

// ---- score partitions ----

// The worker mode of score, for an engine such as Spark (clipguide-spark score): partitions come from
// `next_task` one at a time until it returns nullopt. Partition t, the request's images whose index mod
// `partitions` is t, is scored against every prompt and written whole (under a temporary name, then renamed)
// to out/scores/scores_N.parquet, N padded as partition_name pads it: columns image_path, prompt, score,
// metric and position (the image's index in request.images), an image's rows in prompt order, images in input
// order. Then on_partition(t, rows, images scored). A retried partition writes the same rows again. The model
// and the prompts' embeddings are made once for all the partitions.
void score_partitions(const ScoreRequest& request, const std::string& out, int64_t partitions,
                      const std::function<std::optional<int64_t>()>& next_task,
                      const std::function<void(int64_t partition, size_t rows, size_t images)>& on_partition,
                      const StreamCallbacks& callbacks = {});

// ---- search ----

struct SearchRequest {
  std::string index;  // a collection folder with its index
  std::string model;  // empty: the model that made the collection
  ModelSettings clip;
  std::vector<std::string> prompts, images, negatives;  // score = mean cos(queries) - mean cos(negatives)
  bool truncate = false;
  int64_t top = 10;
  double dedup = 0;  // > 0: near-duplicates (cos above it) among the results are folded into the best of them
  std::string html;  // the rerank report of the results

  void validate() const;
};

struct SearchHit {
  int64_t rank = 0;
  std::string image, caption;
  double score = 0;
  std::vector<std::string> duplicates;  // with dedup: the near-duplicates folded into this result
};

std::vector<SearchHit> search_collection(const SearchRequest& request, const StreamCallbacks& callbacks = {});

// ---- filter ----

struct DeniedConcept {
  std::string text;
  double threshold = 0;  // flagged when cos(image, text) exceeds it
};

struct FilterRequest {
  std::string model;  // the CLIP for the denied concepts
  ModelSettings clip;
  std::vector<DeniedConcept> deny;
  std::string safety_checker;  // a diffusers safety_checker folder; empty: none
  std::vector<std::string> images;
  bool truncate = false;
  std::string move_to;  // flagged images are moved into this folder (never overwriting, never outside it)
  ImageStream stream;

  void validate() const;
};

struct FilterRow {
  std::string image;
  bool flagged = false;
  std::string
      nearest_concept;  // the concept nearest its threshold (the safety checker's as "safety:concept N")
  double margin = 0;    // its score minus its threshold: above 0 is flagged
  std::string moved_to;
};

struct FilterSummary {
  int64_t images = 0, flagged = 0;
};

// Rows go to on_rows batch by batch, in input order.
FilterSummary filter_images(const FilterRequest& request,
                            const std::function<void(const std::vector<FilterRow>&)>& on_rows,
                            const StreamCallbacks& callbacks = {});

}  // namespace clipguide
