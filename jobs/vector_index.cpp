#include "jobs/vector_index.h"

#include <faiss/IndexFlat.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/impl/AuxIndexStructures.h>
#include <faiss/impl/FaissException.h>
#include <faiss/index_factory.h>
#include <faiss/index_io.h>
#include <omp.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "core/error.h"
#include "core/file_io.h"
#include "core/random.h"
#include "io/npy.h"

namespace clipguide {

namespace {

constexpr int64_t kRecallK = 10;

// faiss reports misuse with its own exception; ours carry one line naming the file.
template <typename F>
auto faiss_call(const std::string& what, F&& f) {
  try {
    return f();
  } catch (const faiss::FaissException& e) {
    fail(what, ": faiss: ", std::string(e.msg));
  }
}

struct Candidate {
  std::string kind, factory;
  int64_t nlist = 0, pq_bytes = 0, memory = 0;
};

// The partitions' row counts and their common width, from the files' headers.
std::vector<int64_t> partition_rows(const std::vector<std::string>& parts, int64_t& dim) {
  std::vector<int64_t> rows;
  dim = 0;
  for (const std::string& part : parts) {
    rows.push_back(npy_matrix_rows(part));
    if (rows.back() == 0) continue;
    const int64_t width = read_npy_rows(part, {}).size(1);
    if (dim == 0) dim = width;
    if (width != dim) fail(part, " has rows of ", width, " values; the partitions before it have ", dim);
  }
  return rows;
}

// The inverted-file index size: a power of two near 4·sqrt(N) (faiss's guideline is 4 to 16·sqrt(N)), with at
// least 39 training points per centroid (below that faiss's k-means warns).
int64_t choose_nlist(int64_t n) {
  int64_t nlist = 1;
  while (nlist * 2 <= 4 * std::sqrt(static_cast<double>(n)) && nlist * 2 * 39 <= n) nlist *= 2;
  return nlist;
}

Candidate choose(int64_t n, int64_t d, const VectorIndexOptions& o) {
  const int64_t flat = n * d * 4;
  if (n <= o.exact_max_rows && flat <= o.max_memory_bytes) return {"exact", "Flat", 0, 0, flat};
  const int64_t nlist = choose_nlist(n);
  const int64_t centroids = nlist * d * 4;
  const int64_t ivf_flat = n * (d * 4 + 8) + centroids;
  if (ivf_flat <= o.max_memory_bytes) return {"ivf_flat", cat("IVF", nlist, ",Flat"), nlist, 0, ivf_flat};
  // Product quantization, 8 bits per sub-vector: the most bytes per vector that fit (m must divide d).
  for (int64_t m = d / 2; m >= 4; --m) {
    if (d % m != 0) continue;
    const int64_t bytes = n * (m + 8) + centroids + 256 * d * 4;
    if (bytes <= o.max_memory_bytes) return {"ivf_pq", cat("IVF", nlist, ",PQ", m), nlist, m, bytes};
  }
  fail("max index memory ", o.max_memory_bytes, " bytes is too small for ", n, " vectors of ", d,
       " values: the smallest index (IVF", nlist, ", 4-byte codes) needs about ",
       n * 12 + centroids + 256 * d * 4, " bytes");
}

// `count` distinct row numbers out of `n`, sorted, drawn with `seed`.
std::vector<int64_t> sample_rows(int64_t n, int64_t count, uint64_t seed) {
  if (count >= n) {
    std::vector<int64_t> all(n);
    std::iota(all.begin(), all.end(), 0);
    return all;
  }
  torch::Generator g = make_generator(seed);
  const torch::Tensor perm = std::get<0>(torch::randperm(n, g, torch::kLong).narrow(0, 0, count).sort());
  return std::vector<int64_t>(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + count);
}

// The rows `wanted` (sorted global row numbers) of the partitions, in that order. [wanted.size(), d]
torch::Tensor gather_rows(const std::vector<std::string>& parts, const std::vector<int64_t>& rows,
                          const std::vector<int64_t>& wanted, int64_t d) {
  torch::Tensor out = torch::empty({static_cast<int64_t>(wanted.size()), d});
  size_t next = 0;
  int64_t start = 0;
  for (size_t p = 0; p < parts.size() && next < wanted.size(); ++p) {
    const int64_t end = start + rows[p];
    if (rows[p] > 0 && wanted[next] < end) {
      const torch::Tensor m = read_npy_matrix(parts[p]);
      std::vector<int64_t> local;
      const size_t first = next;
      while (next < wanted.size() && wanted[next] < end) local.push_back(wanted[next++] - start);
      out.narrow(0, first, local.size()).copy_(m.index_select(0, torch::tensor(local)));
    }
    start = end;
  }
  return out;
}

// The exact top-k ids of each query over the partitions, streamed. [Q, k]
torch::Tensor exact_top(const std::vector<std::string>& parts, const std::vector<int64_t>& rows,
                        const torch::Tensor& queries, int64_t k) {
  torch::Tensor best_scores, best_ids;
  int64_t start = 0;
  for (size_t p = 0; p < parts.size(); ++p) {
    if (rows[p] == 0) continue;
    const torch::Tensor m = read_npy_matrix(parts[p]);
    const torch::Tensor scores = torch::matmul(queries, m.t());  // [Q, rows]
    const auto top = scores.topk(std::min<int64_t>(k, m.size(0)), 1);
    torch::Tensor s = std::get<0>(top), ids = std::get<1>(top) + start;
    if (best_scores.defined()) {
      s = torch::cat({best_scores, s}, 1);
      ids = torch::cat({best_ids, ids}, 1);
      const auto merged = s.topk(std::min<int64_t>(k, s.size(1)), 1);
      s = std::get<0>(merged);
      ids = ids.gather(1, std::get<1>(merged));
    }
    best_scores = s;
    best_ids = ids;
    start += rows[p];
  }
  return best_ids;
}

// Mean fraction of the exact top-k found in the approximate top-k.
double recall(const torch::Tensor& exact, const std::vector<faiss::Index::idx_t>& found, int64_t k) {
  const int64_t q = exact.size(0), ke = exact.size(1);
  const auto e = exact.accessor<int64_t, 2>();
  double hits = 0;
  for (int64_t i = 0; i < q; ++i)
    for (int64_t a = 0; a < ke; ++a)
      for (int64_t b = 0; b < k; ++b)
        if (found[i * k + b] == e[i][a]) {
          ++hits;
          break;
        }
  return hits / static_cast<double>(q * ke);
}

}  // namespace

VectorIndexInfo build_vector_index(const std::vector<std::string>& npy_parts, const std::string& index_path,
                                   const VectorIndexOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  if (options.threads > 0) omp_set_num_threads(options.threads);
  VectorIndexInfo info;
  const std::vector<int64_t> rows = partition_rows(npy_parts, info.dim);
  info.rows = std::accumulate(rows.begin(), rows.end(), int64_t(0));
  if (info.rows == 0) fail("no embeddings to index in ", npy_parts.size(), " partitions");
  const Candidate c = choose(info.rows, info.dim, options);
  info.kind = c.kind;
  info.factory = c.factory;
  info.nlist = c.nlist;
  info.pq_bytes = c.pq_bytes;
  info.memory_bytes = c.memory;
  std::unique_ptr<faiss::Index> index(faiss_call(index_path, [&] {
    return faiss::index_factory(static_cast<int>(info.dim), c.factory.c_str(), faiss::METRIC_INNER_PRODUCT);
  }));
  // index_factory turns on polysemous training for IVF-PQ: a simulated annealing of the codes (minutes) that
  // only polysemous (Hamming-filtered) search uses, which this index does not.
  if (auto* ivfpq = dynamic_cast<faiss::IndexIVFPQ*>(index.get())) ivfpq->do_polysemous_training = false;
  if (c.kind != "exact") {
    // Training on a sample: 64 points per centroid is more than faiss's k-means asks (39), and PQ's 256
    // centroids per sub-vector need far fewer.
    const std::vector<int64_t> sample =
        sample_rows(info.rows, std::max<int64_t>(64 * c.nlist, 65536), options.seed);
    const torch::Tensor train = gather_rows(npy_parts, rows, sample, info.dim).contiguous();
    info.train_rows = train.size(0);
    faiss_call(index_path, [&] { index->train(train.size(0), train.data_ptr<float>()); });
  }
  for (const std::string& part : npy_parts) {
    const torch::Tensor m = read_npy_matrix(part).contiguous();
    if (m.size(0) > 0) faiss_call(part, [&] { index->add(m.size(0), m.data_ptr<float>()); });
  }
  if (auto* ivf = dynamic_cast<faiss::IndexIVF*>(index.get())) {
    // nprobe: the fewest probed lists (powers of two) whose recall@10 on a sample of the collection reaches
    // the target; if none does, every list.
    const std::vector<int64_t> qrows = sample_rows(info.rows, options.recall_queries, options.seed + 1);
    const torch::Tensor queries = gather_rows(npy_parts, rows, qrows, info.dim).contiguous();
    const int64_t k = std::min(kRecallK, info.rows);
    const torch::Tensor exact = exact_top(npy_parts, rows, queries, k);
    std::vector<float> distances(queries.size(0) * k);
    std::vector<faiss::Index::idx_t> labels(queries.size(0) * k);
    for (int64_t nprobe = 1;; nprobe *= 2) {
      ivf->nprobe = std::min(nprobe, info.nlist);
      ivf->search(queries.size(0), queries.data_ptr<float>(), k, distances.data(), labels.data());
      info.nprobe = static_cast<int64_t>(ivf->nprobe);
      info.recall_at_10 = recall(exact, labels, k);
      if (info.recall_at_10 >= options.target_recall || info.nprobe >= info.nlist) break;
    }
    info.recall_queries = queries.size(0);
  }
  const std::string tmp = temp_beside(index_path);
  faiss_call(index_path, [&] { faiss::write_index(index.get(), tmp.c_str()); });
  rename_into_place(tmp, index_path);
  info.build_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return info;
}

struct VectorIndex::Impl {
  std::unique_ptr<faiss::Index> index;
  std::string path;
};

VectorIndex::VectorIndex(const std::string& path) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  MappedFile probe(path);  // a clear error for a missing or unreadable file, before faiss's own
  impl_->index.reset(faiss_call(path, [&] { return faiss::read_index(path.c_str(), faiss::IO_FLAG_MMAP); }));
  if (impl_->index->metric_type != faiss::METRIC_INNER_PRODUCT)
    fail(path, " is not an inner-product index (clipguide index builds those)");
}

VectorIndex::~VectorIndex() = default;

int64_t VectorIndex::rows() const { return impl_->index->ntotal; }
int64_t VectorIndex::dim() const { return impl_->index->d; }

std::vector<std::vector<VectorHit>> VectorIndex::search(const torch::Tensor& queries, int64_t k) const {
  const torch::Tensor q = queries.to(torch::kCPU, torch::kFloat).contiguous();
  TORCH_CHECK(q.dim() == 2 && q.size(1) == dim(), "queries must be [Q, ", dim(), "], got ", q.sizes());
  k = std::min(k, rows());
  std::vector<float> distances(q.size(0) * k);
  std::vector<faiss::Index::idx_t> labels(q.size(0) * k);
  faiss_call(impl_->path, [&] {
    impl_->index->search(q.size(0), q.data_ptr<float>(), k, distances.data(), labels.data());
  });
  std::vector<std::vector<VectorHit>> out(q.size(0));
  for (int64_t i = 0; i < q.size(0); ++i)
    for (int64_t j = 0; j < k; ++j)
      if (labels[i * k + j] >= 0) out[i].push_back({labels[i * k + j], distances[i * k + j]});
  return out;
}

std::vector<std::vector<VectorHit>> VectorIndex::range_search(const torch::Tensor& queries,
                                                              float threshold) const {
  const torch::Tensor q = queries.to(torch::kCPU, torch::kFloat).contiguous();
  TORCH_CHECK(q.dim() == 2 && q.size(1) == dim(), "queries must be [Q, ", dim(), "], got ", q.sizes());
  faiss::RangeSearchResult result(q.size(0));
  faiss_call(impl_->path,
             [&] { impl_->index->range_search(q.size(0), q.data_ptr<float>(), threshold, &result); });
  std::vector<std::vector<VectorHit>> out(q.size(0));
  for (int64_t i = 0; i < q.size(0); ++i) {
    for (size_t j = result.lims[i]; j < result.lims[i + 1]; ++j)
      out[i].push_back({result.labels[j], result.distances[j]});
    std::stable_sort(out[i].begin(), out[i].end(),
                     [](const VectorHit& a, const VectorHit& b) { return a.score > b.score; });
  }
  return out;
}

std::vector<int64_t> near_duplicate_groups(const torch::Tensor& vectors, float threshold) {
  const torch::Tensor v = vectors.to(torch::kCPU, torch::kFloat).contiguous();
  TORCH_CHECK(v.dim() == 2, "near_duplicate_groups takes [N, D] vectors, got ", v.sizes());
  const int64_t n = v.size(0);
  std::vector<int64_t> parent(n);
  std::iota(parent.begin(), parent.end(), 0);
  if (n == 0) return parent;
  faiss::IndexFlatIP index(static_cast<int>(v.size(1)));
  index.add(n, v.data_ptr<float>());
  faiss::RangeSearchResult result(n);
  index.range_search(n, v.data_ptr<float>(), threshold, &result);
  // Union-find with the smaller index as the root, so each group is named by its first row.
  const auto root = [&](int64_t i) {
    while (parent[i] != i) i = parent[i] = parent[parent[i]];
    return i;
  };
  for (int64_t i = 0; i < n; ++i)
    for (size_t j = result.lims[i]; j < result.lims[i + 1]; ++j) {
      const int64_t a = root(i), b = root(result.labels[j]);
      if (a != b) parent[std::max(a, b)] = std::min(a, b);
    }
  for (int64_t i = 0; i < n; ++i) parent[i] = root(i);
  return parent;
}

}  // namespace clipguide
