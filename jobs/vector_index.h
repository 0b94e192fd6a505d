// The search index over image (or text) embeddings, with faiss (Debian's libfaiss-dev): exact inner product
// up to a size that still answers interactively, else an inverted-file index chosen to fit a memory budget,
// trained on a sample and tuned to a recall target, as autofaiss chooses (Ref: criteo/autofaiss, its index
// keys and nprobe tuning; faiss wiki "Guidelines to choose an index"). Built from clip-retrieval's npy
// partitions, one at a time. faiss builds, trains and stores the index; exact and inverted-file-of-vectors
// searches run on our own kernel over faiss's storage, on torch's CPU threads (Debian's faiss is built for
// the x86-64 baseline, one float at a time; the kernel is compiled for AVX-512, AVX2 and the baseline and
// picks by CPU). Product-quantized indexes are searched by faiss.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace clipguide {

struct VectorIndexOptions {
  int64_t max_memory_bytes = int64_t(16) << 30;  // the built index's size in memory must fit
  int64_t exact_max_rows =
      200000;                     // exact search up to here (bench/search: measured interactive at this size)
  double target_recall = 0.95;    // recall@10 against exact search that an approximate index is tuned to
  int64_t recall_queries = 1000;  // rows of the collection used as queries to measure that recall
  uint64_t seed = 0;              // for the training and query samples
  int threads = 0;                // 0: faiss's default (every CPU)
};

// What was built, as the index's JSON beside it records it.
struct VectorIndexInfo {
  std::string kind;     // "exact", "ivf_flat" or "ivf_pq"
  std::string factory;  // faiss's index_factory string: "Flat", "IVF1024,Flat", "IVF1024,PQ64"
  int64_t rows = 0, dim = 0;
  int64_t nlist = 0, nprobe = 0, pq_bytes = 0;
  int64_t memory_bytes = 0;   // the estimated size of the index in memory
  double recall_at_10 = 1.0;  // measured on `recall_queries` rows of the collection (1 for exact)
  int64_t recall_queries = 0;
  int64_t train_rows = 0;
  double build_seconds = 0;
};

// The index over the rows of `npy_parts` (float16 or float32 matrices, L2-normalized rows, ids in the order
// given), written to `index_path` atomically. An Error names a partition whose width differs, an empty
// collection, or a budget too small for the smallest index.
VectorIndexInfo build_vector_index(const std::vector<std::string>& npy_parts, const std::string& index_path,
                                   const VectorIndexOptions& options);

// One query's hits, best first.
struct VectorHit {
  int64_t id = 0;
  float score = 0;  // inner product
};

class VectorIndex {
 public:
  // Reads an index file; inverted lists are memory-mapped (faiss maps those, and reads flat indexes whole).
  explicit VectorIndex(const std::string& path);
  ~VectorIndex();
  VectorIndex(const VectorIndex&) = delete;
  VectorIndex& operator=(const VectorIndex&) = delete;

  int64_t rows() const;
  int64_t dim() const;
  // The `k` best rows for each query of `queries` [Q, dim].
  std::vector<std::vector<VectorHit>> search(const torch::Tensor& queries, int64_t k) const;
  // Every row whose inner product with a query exceeds `threshold`, best first.
  std::vector<std::vector<VectorHit>> range_search(const torch::Tensor& queries, float threshold) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Groups of near-duplicates among `vectors` [N, D] (L2-normalized): rows joined when their inner product
// exceeds `threshold`, grouped into connected components (clip-back dedups its results so, at 0.94). Returns
// each row's group as the smallest row index in it.
std::vector<int64_t> near_duplicate_groups(const torch::Tensor& vectors, float threshold);

}  // namespace clipguide
