#include "jobs/vector_index.h"

#include <ATen/Parallel.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexIVF.h>
#include <faiss/IndexIVFFlat.h>
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
#include <optional>
#include <utility>

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

// --- Scanning: the exact and the inverted-file-of-vectors indexes are searched by our own kernel over
// faiss's storage. Debian's faiss is built for the x86-64 baseline, where its distance loops run one float at
// a time; the kernel below is compiled for AVX-512 and AVX2 as well and chosen by the CPU it runs on. Other
// index kinds (IVF-PQ) are searched by faiss.

// W floats as one vector register: 16 for AVX-512, 8 for AVX2, 4 for the baseline's SSE2. (GCC takes the
// vector_size attribute only on a typedef of a fixed size.)
template <int W>
struct Register;
template <>
struct Register<16> {
  typedef float Floats __attribute__((vector_size(64)));
};
template <>
struct Register<8> {
  typedef float Floats __attribute__((vector_size(32)));
};
template <>
struct Register<4> {
  typedef float Floats __attribute__((vector_size(16)));
};
template <int W>
using Floats = typename Register<W>::Floats;

// v = the value at p, which may be unaligned: an index read memory-mapped keeps its inverted lists (floats,
// then 64-bit ids) at whatever byte offset the file gives them. (A copy, which compiles to one unaligned
// load: Clang keeps a vector type's full alignment even where the type says less. Vectors pass by reference
// here: one wider than the baseline's registers, passed by value, changes the calling convention.)
template <typename T, typename P>
inline __attribute__((always_inline)) void load(T& v, const P* p) {
  __builtin_memcpy(&v, p, sizeof v);
}

template <typename T>
inline T unaligned(const T* p) {
  T v;
  load(v, p);
  return v;
}

template <int W>
inline __attribute__((always_inline)) float lane_sum(const Floats<W>& v) {
  float sum = 0;
  for (int i = 0; i < W; ++i) sum += v[i];
  return sum;
}

// out[r * m + j] = rows[r] · queries[j], for n rows and m queries (m a multiple of 4) of d floats: two rows
// by four queries at a time, eight accumulators of W floats, which stay in registers once the loop over the
// four queries is unrolled. Inlined into one function per instruction set below.
template <int W>
inline __attribute__((always_inline)) void inner_products_body(const float* rows, int64_t n,
                                                               const float* queries, int64_t m, int64_t d,
                                                               float* out) {
  using V = Floats<W>;
  const int64_t vectorized = d / W * W;
  for (int64_t j = 0; j < m; j += 4) {  // four queries stay in the L1 cache while the rows stream past
    const float* q = queries + j * d;
    for (int64_t r = 0; r < n; r += 2) {
      const float* x = rows + r * d;
      const float* y = r + 1 < n ? x + d : x;  // an odd last row is computed twice, stored once
      V xs[4] = {}, ys[4] = {};
      for (int64_t s = 0; s < vectorized; s += W) {
        V a, b;
        load(a, x + s);
        load(b, y + s);
#pragma GCC unroll 4
        for (int t = 0; t < 4; ++t) {
          V c;
          load(c, q + t * d + s);
          xs[t] += a * c;
          ys[t] += b * c;
        }
      }
      for (int t = 0; t < 4; ++t) {
        float dx = lane_sum<W>(xs[t]), dy = lane_sum<W>(ys[t]);
        for (int64_t i = vectorized; i < d; ++i) {
          dx += unaligned(x + i) * q[t * d + i];
          dy += unaligned(y + i) * q[t * d + i];
        }
        out[r * m + j + t] = dx;
        if (r + 1 < n) out[(r + 1) * m + j + t] = dy;
      }
    }
  }
}

__attribute__((target("avx512f,avx2,fma"))) void inner_products_avx512(const float* rows, int64_t n,
                                                                       const float* queries, int64_t m,
                                                                       int64_t d, float* out) {
  inner_products_body<16>(rows, n, queries, m, d, out);
}

__attribute__((target("avx2,fma"))) void inner_products_avx2(const float* rows, int64_t n,
                                                             const float* queries, int64_t m, int64_t d,
                                                             float* out) {
  inner_products_body<8>(rows, n, queries, m, d, out);
}

void inner_products_baseline(const float* rows, int64_t n, const float* queries, int64_t m, int64_t d,
                             float* out) {
  inner_products_body<4>(rows, n, queries, m, d, out);
}

using InnerProducts = void (*)(const float*, int64_t, const float*, int64_t, int64_t, float*);

InnerProducts inner_products() {
  static const InnerProducts chosen = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return &inner_products_avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &inner_products_avx2;
    return &inner_products_baseline;
  }();
  return chosen;
}

// A query's best hits so far as a heap whose front is the worst kept; better = higher score, then lower id,
// so ties resolve the same however the scan was split among threads.
using Hit = std::pair<float, int64_t>;

bool better(const Hit& a, const Hit& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

void keep(std::vector<Hit>& heap, size_t k, Hit hit) {
  if (heap.size() < k) {
    heap.push_back(hit);
    std::push_heap(heap.begin(), heap.end(), better);
  } else if (better(hit, heap.front())) {
    std::pop_heap(heap.begin(), heap.end(), better);
    heap.back() = hit;
    std::push_heap(heap.begin(), heap.end(), better);
  }
}

// Contiguous float rows the kernel scans, with their ids (or ids first_id, first_id + 1, ... when ids is
// null), and the queries (indexes into the batch) that probe them.
struct RowBlock {
  const float* rows = nullptr;
  const faiss::Index::idx_t* ids = nullptr;
  int64_t first_id = 0, n = 0;
  const int32_t* queries = nullptr;
  int64_t query_count = 0;
};

// A flat matrix of n rows (the exact index, the centroids; ids = row numbers) as blocks of 256 rows (512 KB
// at d = 512), each scanned against all of `queries`.
std::vector<RowBlock> flat_blocks(const float* rows, int64_t n, int64_t d,
                                  const std::vector<int32_t>& queries) {
  constexpr int64_t kBlockRows = 256;
  std::vector<RowBlock> blocks;
  for (int64_t first = 0; first < n; first += kBlockRows)
    blocks.push_back({rows + first * d, nullptr, first, std::min(kBlockRows, n - first), queries.data(),
                      static_cast<int64_t>(queries.size())});
  return blocks;
}

// A query's kept hits, best first.
std::vector<VectorHit> best_first(std::vector<Hit> hits, size_t k) {
  std::sort(hits.begin(), hits.end(), better);
  hits.resize(std::min(hits.size(), k));
  std::vector<VectorHit> out;
  for (const Hit& h : hits) out.push_back({h.second, h.first});
  return out;
}

// Each query's k best rows over the blocks that list it, best first.
std::vector<std::vector<VectorHit>> scan(const std::vector<RowBlock>& blocks, const torch::Tensor& q,
                                         int64_t k) {
  const int64_t nq = q.size(0), d = q.size(1);
  if (k <= 0) return std::vector<std::vector<VectorHit>>(nq);
  const float* qdata = q.data_ptr<float>();
  // Queries per kernel call: 32 rows of 512 floats stay in the L1/L2 caches.
  constexpr int64_t kQueryChunk = 32;
  // torch's CPU thread count (set_cpu_threads), on this file's OpenMP threads: each keeps its own heaps,
  // merged below; blocks are dealt out dynamically, since lists differ in size and in queries.
  const int threads = std::max(1, std::min<int>(at::get_num_threads(), static_cast<int>(blocks.size())));
  std::vector<std::vector<Hit>> heaps(static_cast<size_t>(threads) * nq);
  const int64_t block_count = static_cast<int64_t>(blocks.size());
#pragma omp parallel num_threads(threads)
  {
    std::vector<Hit>* mine = heaps.data() + static_cast<size_t>(omp_get_thread_num()) * nq;
    std::vector<float> chunk, scores;
#pragma omp for schedule(dynamic)
    for (int64_t b = 0; b < block_count; ++b) {
      const RowBlock& block = blocks[b];
      for (int64_t first = 0; first < block.query_count; first += kQueryChunk) {
        const int64_t m = std::min(kQueryChunk, block.query_count - first), padded = (m + 3) / 4 * 4;
        chunk.assign(padded * d, 0.f);
        for (int64_t j = 0; j < m; ++j)
          std::copy_n(qdata + block.queries[first + j] * d, d, chunk.data() + j * d);
        scores.resize(block.n * padded);
        inner_products()(block.rows, block.n, chunk.data(), padded, d, scores.data());
        for (int64_t r = 0; r < block.n; ++r) {
          const int64_t id = block.ids ? unaligned(block.ids + r) : block.first_id + r;
          for (int64_t j = 0; j < m; ++j)
            keep(mine[block.queries[first + j]], k, {scores[r * padded + j], id});
        }
      }
    }
  }
  std::vector<std::vector<VectorHit>> out(nq);
  for (int64_t i = 0; i < nq; ++i) {
    std::vector<Hit> all;
    for (int t = 0; t < threads; ++t)
      all.insert(all.end(), heaps[t * nq + i].begin(), heaps[t * nq + i].end());
    out[i] = best_first(std::move(all), k);
  }
  return out;
}

// From this many queries on, a flat matrix is scored by GEMM on torch's BLAS, not by the kernel (faiss
// switches to BLAS from 20 queries). bench/search, 2,000 queries in a batch over 10^6 rows: the kernel ran at
// 0.43x faiss-cpu, the GEMMs at 1.03x; one query at a time, the kernel is the faster.
constexpr int64_t kGemmQueries = 16;

// Each query's k best rows of the flat matrix `rows` [n, d] (ids = row numbers), best first: a tile of rows
// against a chunk of queries in one GEMM, then each query's heap takes its row of scores. The queries are
// split among torch's threads, each thread running its own GEMMs and feeding only its own queries' heaps:
// libtorch hands a matmul to one BLAS call, and set_cpu_threads keeps OpenBLAS's own pool at one thread.
std::vector<std::vector<VectorHit>> flat_top_by_gemm(const float* rows, int64_t n, const torch::Tensor& q,
                                                     int64_t k) {
  const int64_t nq = q.size(0), d = q.size(1);
  // 8,192 rows of 512 floats (16 MB) against up to 512 queries: each GEMM is large enough for the BLAS's
  // blocking, and its scores (up to 16 MB) are read once, right after.
  constexpr int64_t kTileRows = 8192, kChunkQueries = 512;
  std::vector<std::vector<Hit>> heaps(nq);
  for (int64_t first = 0; first < n; first += kTileRows) {
    const int64_t t = std::min(kTileRows, n - first);
    // faiss's storage, read only
    const torch::Tensor tile = torch::from_blob(const_cast<float*>(rows + first * d), {t, d});
    at::parallel_for(0, nq, 8, [&](int64_t begin, int64_t end) {
      for (int64_t q0 = begin; q0 < end; q0 += kChunkQueries) {
        const int64_t m = std::min(kChunkQueries, end - q0);
        const torch::Tensor scores = torch::mm(q.narrow(0, q0, m), tile.t()).contiguous();  // [m, t]
        const float* s = scores.data_ptr<float>();
        for (int64_t j = 0; j < m; ++j)
          for (int64_t r = 0; r < t; ++r) keep(heaps[q0 + j], k, {s[j * t + r], first + r});
      }
    });
  }
  std::vector<std::vector<VectorHit>> out(nq);
  for (int64_t i = 0; i < nq; ++i) out[i] = best_first(std::move(heaps[i]), k);
  return out;
}

// Each query's k best rows of a flat matrix [n, d], by GEMM for a batch of queries, else by the kernel.
std::vector<std::vector<VectorHit>> flat_top(const float* rows, int64_t n, const torch::Tensor& q,
                                             int64_t k) {
  if (k <= 0) return std::vector<std::vector<VectorHit>>(q.size(0));
  if (q.size(0) >= kGemmQueries) return flat_top_by_gemm(rows, n, q, k);
  std::vector<int32_t> everyone(q.size(0));
  std::iota(everyone.begin(), everyone.end(), 0);
  return scan(flat_blocks(rows, n, q.size(1), everyone), q, k);
}

// The k best rows of each query [Q, d] (float, contiguous) by our scan (or a GEMM), for an exact
// (IndexFlatIP) or an inverted-file-of-vectors (IndexIVFFlat) index probing `nprobe` lists; nullopt for other
// kinds.
std::optional<std::vector<std::vector<VectorHit>>> scan_search(const faiss::Index& index,
                                                               const torch::Tensor& q, int64_t k,
                                                               int64_t nprobe) {
  if (const auto* flat = dynamic_cast<const faiss::IndexFlat*>(&index))
    return flat_top(flat->get_xb(), index.ntotal, q, std::min<int64_t>(k, index.ntotal));
  const auto* ivf = dynamic_cast<const faiss::IndexIVFFlat*>(&index);
  const auto* quantizer = ivf ? dynamic_cast<const faiss::IndexFlat*>(ivf->quantizer) : nullptr;
  const int64_t nq = q.size(0), d = index.d;
  if (!quantizer || ivf->code_size != static_cast<size_t>(d) * sizeof(float)) return std::nullopt;
  const int64_t nlist = static_cast<int64_t>(ivf->nlist);
  nprobe = std::clamp<int64_t>(nprobe, 1, nlist);
  // The coarse step, itself a flat search: each query's nprobe nearest centroids (the quantizer's rows, ids =
  // list numbers). Then, per list, the queries that probe it.
  const std::vector<std::vector<VectorHit>> probes = flat_top(quantizer->get_xb(), nlist, q, nprobe);
  std::vector<int64_t> offsets(nlist + 1, 0);
  for (const auto& lists : probes)
    for (const VectorHit& list : lists) ++offsets[list.id + 1];
  std::partial_sum(offsets.begin(), offsets.end(), offsets.begin());
  std::vector<int32_t> probing(offsets.back());  // the queries of each list, list after list
  std::vector<int64_t> fill(offsets.begin(), offsets.end() - 1);
  for (int64_t i = 0; i < nq; ++i)
    for (const VectorHit& list : probes[i]) probing[fill[list.id]++] = static_cast<int32_t>(i);
  std::vector<RowBlock> blocks;
  for (int64_t l = 0; l < nlist; ++l) {
    const int64_t size = static_cast<int64_t>(ivf->invlists->list_size(l));
    if (size == 0 || offsets[l + 1] == offsets[l]) continue;
    blocks.push_back({reinterpret_cast<const float*>(ivf->invlists->get_codes(l)), ivf->invlists->get_ids(l),
                      0, size, probing.data() + offsets[l], offsets[l + 1] - offsets[l]});
  }
  return scan(blocks, q, std::min<int64_t>(k, index.ntotal));
}

// Mean fraction of the exact top-k found in the approximate top-k.
double recall(const torch::Tensor& exact, const std::vector<std::vector<VectorHit>>& found) {
  const int64_t q = exact.size(0), ke = exact.size(1);
  const auto e = exact.accessor<int64_t, 2>();
  double hits = 0;
  for (int64_t i = 0; i < q; ++i)
    for (int64_t a = 0; a < ke; ++a)
      for (const VectorHit& h : found[i])
        if (h.id == e[i][a]) {
          ++hits;
          break;
        }
  return hits / static_cast<double>(q * ke);
}

// The k best rows of each query, by our scan where it serves the index, else by faiss.
std::vector<std::vector<VectorHit>> search_index(const faiss::Index& index, const torch::Tensor& q, int64_t k,
                                                 const std::string& what) {
  const auto* ivf = dynamic_cast<const faiss::IndexIVF*>(&index);
  if (auto hits = scan_search(index, q, k, ivf ? static_cast<int64_t>(ivf->nprobe) : 0)) return *hits;
  k = std::min<int64_t>(k, index.ntotal);
  std::vector<float> distances(q.size(0) * k);
  std::vector<faiss::Index::idx_t> labels(q.size(0) * k);
  faiss_call(what, [&] { index.search(q.size(0), q.data_ptr<float>(), k, distances.data(), labels.data()); });
  std::vector<std::vector<VectorHit>> out(q.size(0));
  for (int64_t i = 0; i < q.size(0); ++i)
    for (int64_t j = 0; j < k; ++j)
      if (labels[i * k + j] >= 0) out[i].push_back({labels[i * k + j], distances[i * k + j]});
  return out;
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
    for (int64_t nprobe = 1;; nprobe *= 2) {
      ivf->nprobe = std::min(nprobe, info.nlist);
      info.nprobe = static_cast<int64_t>(ivf->nprobe);
      info.recall_at_10 = recall(exact, search_index(*ivf, queries, k, index_path));
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
  return search_index(*impl_->index, q, k, impl_->path);
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
