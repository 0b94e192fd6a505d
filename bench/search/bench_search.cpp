// bench/search: clipguide's faiss index (jobs/vector_index.h) over synthetic clustered unit vectors.
//   bench_search make DIR N D CLUSTERS PARTS   writes DIR/part_K.npy (float16 rows, as `clipguide index`
//   writes them)
//                                              and DIR/queries.npy (fresh draws from the same clusters)
//   bench_search query DIR exact|approx        the searches alone, over the index a build left
//   bench_search build DIR exact|approx        builds DIR/KIND.index, prints one JSON line: build seconds,
//   peak RSS,
//                                              what was chosen, batched and single-query throughput at K=10
//                                              and, for approx, recall@10 of the fresh queries against exact
//                                              search
#include <sys/resource.h>
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "core/device.h"
#include "core/file_io.h"
#include "core/random.h"
#include "io/npy.h"
#include "jobs/vector_index.h"

namespace cg = clipguide;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1024.0;
}

// A row of cluster c: its unit centre plus isotropic noise of twice the centre's length, normalized, so a
// row's cosine to its centre is about 0.45 and to another cluster's row about 0. (With the noise longer
// still, a row's nearest neighbours stop being its cluster's and any inverted-file index must scan most
// lists; with it shorter, one list per query finds them all.)
torch::Tensor draw(const torch::Tensor& centres, int64_t n, torch::Generator& g) {
  const int64_t d = centres.size(1);
  const torch::Tensor which = torch::randint(centres.size(0), {n}, g);
  torch::Tensor v =
      centres.index_select(0, which) + 2.0 / std::sqrt(static_cast<double>(d)) * torch::randn({n, d}, g);
  return v / v.norm(2, 1, true);
}

std::vector<std::string> parts_in(const std::string& dir) {
  std::vector<std::string> parts;
  for (int k = 0; fs::exists(fs::path(dir) / ("part_" + std::to_string(k) + ".npy")); ++k)
    parts.push_back((fs::path(dir) / ("part_" + std::to_string(k) + ".npy")).string());
  return parts;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "make" && argc == 7) {
      const std::string dir = argv[2];
      const int64_t n = std::stoll(argv[3]), d = std::stoll(argv[4]), clusters = std::stoll(argv[5]),
                    parts = std::stoll(argv[6]);
      fs::create_directories(dir);
      torch::Generator g = cg::make_generator(2026);
      torch::Tensor centres = torch::randn({clusters, d}, g);
      centres = centres / centres.norm(2, 1, true);
      for (int64_t k = 0; k < parts; ++k) {
        const int64_t rows = n / parts + (k < n % parts);
        cg::write_file_atomic((fs::path(dir) / ("part_" + std::to_string(k) + ".npy")).string(),
                              cg::npy_bytes(draw(centres, rows, g), torch::kHalf));
      }
      cg::write_file_atomic((fs::path(dir) / "queries.npy").string(),
                            cg::npy_bytes(draw(centres, 2000, g), torch::kHalf));
      return 0;
    }
    if ((mode != "build" && mode != "query") || argc != 4) {
      std::cerr << "usage: bench_search make DIR N D CLUSTERS PARTS | build|query DIR exact|approx\n";
      return 2;
    }
    const std::string dir = argv[2], kind = argv[3];
    // THREADS (run.sh passes its own), else every CPU, set as the CLI sets them
    cg::set_cpu_threads(std::getenv("THREADS") ? std::atoi(std::getenv("THREADS")) : 0);
    cg::keep_freed_memory();  // as the CLI does
    const std::vector<std::string> parts = parts_in(dir);
    cg::VectorIndexOptions options;
    options.exact_max_rows = kind == "exact" ? int64_t(1) << 40 : 0;
    const std::string path = (fs::path(dir) / (kind + ".index")).string();
    const auto t0 = Clock::now();
    // query: the searches alone, over the index a build left (for profiling them)
    const cg::VectorIndexInfo info =
        mode == "build" ? cg::build_vector_index(parts, path, options) : cg::VectorIndexInfo{};
    const double build = seconds_since(t0);
    const double build_rss = peak_rss_mb();
    const cg::VectorIndex index(path);
    const torch::Tensor queries = cg::read_npy_matrix((fs::path(dir) / "queries.npy").string());
    const int64_t k = 10;
    // The first batch pages the memory-mapped lists in; the second is timed.
    auto t1 = Clock::now();
    index.search(queries, k);
    const double first_batch_seconds = seconds_since(t1);
    t1 = Clock::now();
    const auto hits = index.search(queries, k);
    const double batched_qps = queries.size(0) / seconds_since(t1);
    const int64_t singles = kind == "exact" ? 50 : 500;
    const auto t2 = Clock::now();
    for (int64_t q = 0; q < singles; ++q) index.search(queries.narrow(0, q, 1), k);
    const double single_qps = singles / seconds_since(t2);
    nlohmann::json out = {{"rows", index.rows()},       {"dim", index.dim()},
                          {"queries", queries.size(0)}, {"first_batch_seconds", first_batch_seconds},
                          {"batched_qps", batched_qps}, {"single_qps", single_qps}};
    if (mode == "build") {  // what was built, and what building it took
      out.update({{"kind", info.kind},
                  {"factory", info.factory},
                  {"nprobe", info.nprobe},
                  {"build_seconds", build},
                  {"peak_rss_mb", build_rss},
                  {"index_memory_mb", info.memory_bytes / 1048576.0},
                  {"recall_at_10_on_collection_rows", info.recall_at_10}});
    }
    // The approximate index's recall on the fresh queries, against exact search.
    if (kind == "approx" && fs::exists(fs::path(dir) / "exact.index")) {
      const cg::VectorIndex exact((fs::path(dir) / "exact.index").string());
      const auto truth = exact.search(queries, k);
      double found = 0;
      for (size_t q = 0; q < truth.size(); ++q)
        for (const auto& t : truth[q])
          for (const auto& h : hits[q])
            if (h.id == t.id) {
              ++found;
              break;
            }
      out["recall_at_10"] = found / static_cast<double>(truth.size() * k);
    }
    // The ids, for the Python side's check that it found the same rows.
    std::vector<int64_t> first;
    for (const auto& h : hits[0]) first.push_back(h.id);
    out["first_query_ids"] = first;
    std::cout << out.dump() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_search: " << e.what() << "\n";
    return 1;
  }
}
