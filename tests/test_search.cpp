// index, search and filter: the npy and Parquet files of clip-retrieval's layout, the faiss index, partitions
// (atomic, idempotent, the same bytes however the tasks were split), Stable Diffusion's safety checker
// against diffusers, and the denied-concept filter.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>

#include "clip/safety_checker.h"
#include "clip/score.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/random.h"
#include "fixtures.h"
#include "io/checkpoint.h"
#include "io/npy.h"
#include "io/parquet.h"
#include "io/safetensors.h"
#include "jobs/search.h"
#include "jobs/vector_index.h"

namespace clipguide::test {
namespace {

namespace fs = std::filesystem;

// CLIPGUIDE_SAFETY_FIXTURES, else tests/data/safety (tools/make_safety_fixtures.py).
fs::path safety_fixtures() {
  if (const char* dir = std::getenv("CLIPGUIDE_SAFETY_FIXTURES")) return dir;
  return fs::path(CLIPGUIDE_SOURCE_DIR) / "tests" / "data" / "safety";
}

// Unit vectors in `clusters` tight groups. [n, d]
torch::Tensor clustered(int64_t n, int64_t d, int64_t clusters, uint64_t seed) {
  torch::Generator g = make_generator(seed);
  const torch::Tensor centres = torch::randn({clusters, d}, g);
  const torch::Tensor which = torch::randint(clusters, {n}, g);
  torch::Tensor v = centres.index_select(0, which) + 0.3 * torch::randn({n, d}, g);
  return v / v.norm(2, 1, true);
}

TEST(Npy, Float16AndFloat32RoundTripAndBadFilesAreNamed) {
  TempDir dir;
  const torch::Tensor m = torch::randn({5, 7});
  for (const auto dtype : {torch::kFloat, torch::kHalf}) {
    const std::string path = (dir / "m.npy").string();
    write_file_atomic(path, npy_bytes(m, dtype));
    EXPECT_TRUE(torch::equal(read_npy_matrix(path), m.to(dtype).to(torch::kFloat)));
    EXPECT_EQ(npy_matrix_rows(path), 5);
    EXPECT_TRUE(torch::equal(read_npy_rows(path, {3, 0}),
                             m.to(dtype).to(torch::kFloat).index_select(0, torch::tensor({3, 0}))));
    // numpy's layout: the data starts on a 64-byte boundary.
    EXPECT_EQ((npy_bytes(m, dtype).size() - m.numel() * (dtype == torch::kHalf ? 2 : 4)) % 64, 0u);
  }
  const std::string bytes = npy_bytes(m);
  write_bytes(dir / "cut.npy", bytes.substr(0, bytes.size() - 3));
  EXPECT_THROW(read_npy_matrix((dir / "cut.npy").string()), Error);
  write_bytes(dir / "junk.npy", "not numpy at all");
  EXPECT_THROW(read_npy_matrix((dir / "junk.npy").string()), Error);
  EXPECT_THROW(read_npy_rows((dir / "m.npy").string(), {5}), Error);
}

TEST(Parquet, ColumnsRoundTrip) {
  if (!parquet_available()) GTEST_SKIP() << "built without Parquet (no pyarrow in .venv/)";
  TempDir dir;
  const std::string path = (dir / "m.parquet").string();
  const std::vector<std::string> paths = {"a.png", "dir/b, c.png", "\xc3\xa9t\xc3\xa9.jpg"},
                                 caps = {"x", "", "z"};
  write_parquet(path, {{"image_path", paths}, {"caption", caps}});
  EXPECT_EQ(read_parquet_strings(path, "image_path"), paths);
  EXPECT_EQ(read_parquet_strings(path, "caption"), caps);
  EXPECT_THROW(read_parquet_strings(path, "nope"), Error);
  write_bytes(dir / "junk.parquet", "PAR1 not really PAR1");
  EXPECT_THROW(read_parquet_strings((dir / "junk.parquet").string(), "image_path"), Error);
  // Typed columns (a score worker's partitions): strings read back; a number column is not taken for one.
  const std::string typed = (dir / "t.parquet").string();
  write_parquet(typed, {{"image_path", paths},
                        {"score", std::vector<double>{0.5, -1.25, 3}},
                        {"position", std::vector<int64_t>{0, 7, 14}}});
  EXPECT_EQ(read_parquet_strings(typed, "image_path"), paths);
  EXPECT_THROW(read_parquet_strings(typed, "score"), Error);
  EXPECT_THROW(write_parquet(typed, {{"image_path", paths}, {"score", std::vector<double>{1}}}), Error);
}

TEST(PartitionNames, PadAsClipRetrievalDoes) {
  EXPECT_EQ(partition_name(0, 1), "0");
  EXPECT_EQ(partition_name(7, 9), "7");
  EXPECT_EQ(partition_name(3, 10), "03");
  EXPECT_EQ(partition_name(42, 100), "042");
}

TEST(VectorIndex, ExactBelowTheLimitApproximateAboveWithTheMeasuredRecall) {
  TempDir dir;
  const torch::Tensor all = clustered(6000, 32, 40, 1);
  std::vector<std::string> parts;
  for (int p = 0; p < 3; ++p) {
    parts.push_back((dir / cat("p", p, ".npy")).string());
    write_file_atomic(parts.back(), npy_bytes(all.narrow(0, p * 2000, 2000), torch::kHalf));
  }
  write_file_atomic((dir / "empty.npy").string(), npy_bytes(torch::empty({0, 32}), torch::kHalf));
  parts.insert(parts.begin() + 1, (dir / "empty.npy").string());
  const torch::Tensor stored = all.to(torch::kHalf).to(torch::kFloat);
  const torch::Tensor queries = stored.narrow(0, 0, 50);
  const torch::Tensor exact = std::get<1>(torch::matmul(queries, stored.t()).topk(10, 1));

  VectorIndexOptions options;
  const VectorIndexInfo flat = build_vector_index(parts, (dir / "flat.index").string(), options);
  EXPECT_EQ(flat.kind, "exact");
  EXPECT_EQ(flat.rows, 6000);
  const VectorIndex flat_index((dir / "flat.index").string());
  const auto hits = flat_index.search(queries, 10);
  for (int64_t q = 0; q < 50; ++q)
    for (int64_t j = 0; j < 10; ++j) EXPECT_EQ(hits[q][j].id, exact[q][j].item<int64_t>());

  options.exact_max_rows = 1000;
  options.recall_queries = 200;
  const VectorIndexInfo ivf = build_vector_index(parts, (dir / "ivf.index").string(), options);
  EXPECT_EQ(ivf.kind, "ivf_flat");
  EXPECT_GE(ivf.recall_at_10, options.target_recall);
  EXPECT_GE(ivf.nprobe, 1);
  // A budget below IVF-Flat's size takes product quantization; below the smallest index, an Error.
  options.max_memory_bytes = 6000 * 32 * 4;
  const VectorIndexInfo pq = build_vector_index(parts, (dir / "pq.index").string(), options);
  EXPECT_EQ(pq.kind, "ivf_pq");
  EXPECT_LE(pq.memory_bytes, options.max_memory_bytes);
  EXPECT_EQ(VectorIndex((dir / "pq.index").string()).rows(), 6000);
  options.max_memory_bytes = 1000;
  EXPECT_THROW(build_vector_index(parts, (dir / "none.index").string(), options), Error);

  // Range search: every row above the threshold, best first; the query's own row first of all.
  const auto range = flat_index.range_search(queries.narrow(0, 0, 1), 0.9f);
  ASSERT_FALSE(range[0].empty());
  EXPECT_EQ(range[0][0].id, 0);
  const int64_t above = (torch::matmul(queries.narrow(0, 0, 1), stored.t()) > 0.9f).sum().item<int64_t>();
  EXPECT_EQ(static_cast<int64_t>(range[0].size()), above);
}

// Exact and inverted-file searches run on our own kernel: at a width and row count that are no multiple of
// its vector width or blocks, it finds exact search's rows with exact search's scores, and an inverted-file
// index finds each collection row as its own best hit.
TEST(VectorIndex, OurScanFindsWhatExactSearchFinds) {
  TempDir dir;
  const int64_t n = 1001, d = 37;
  const torch::Tensor all = clustered(n, d, 9, 3);
  const std::string part = (dir / "p.npy").string();
  write_file_atomic(part, npy_bytes(all, torch::kFloat));
  // 40 queries are searched as a batch (a GEMM); 7 of them by the kernel, a few at a time.
  const torch::Tensor queries = clustered(40, d, 9, 4);
  const auto exact = torch::matmul(queries, all.t()).topk(10, 1);

  VectorIndexOptions options;
  build_vector_index({part}, (dir / "flat.index").string(), options);
  const VectorIndex flat((dir / "flat.index").string());
  for (const int64_t batch : {int64_t(40), int64_t(7)}) {
    const auto hits = flat.search(queries.narrow(0, 0, batch), 10);
    for (int64_t q = 0; q < batch; ++q)
      for (int64_t j = 0; j < 10; ++j) {
        EXPECT_EQ(hits[q][j].id, std::get<1>(exact)[q][j].item<int64_t>()) << batch << " queries";
        EXPECT_NEAR(hits[q][j].score, std::get<0>(exact)[q][j].item<float>(), 1e-5);
      }
  }
  EXPECT_TRUE(flat.search(queries, 0)[0].empty());
  EXPECT_EQ(flat.search(queries.narrow(0, 0, 1), 5000)[0].size(), static_cast<size_t>(n));

  options.exact_max_rows = 100;
  options.recall_queries = 100;
  const VectorIndexInfo info = build_vector_index({part}, (dir / "ivf.index").string(), options);
  ASSERT_EQ(info.kind, "ivf_flat");
  const VectorIndex ivf((dir / "ivf.index").string());
  const auto own = ivf.search(all.narrow(0, 0, 40), 3);
  for (int64_t r = 0; r < 40; ++r) {
    ASSERT_FALSE(own[r].empty());
    EXPECT_EQ(own[r][0].id, r);
    EXPECT_NEAR(own[r][0].score, 1.0, 1e-5);
  }
}

TEST(VectorIndex, NearDuplicatesGroupIntoConnectedComponents) {
  // a ~ b ~ c in a chain (a and c not close), d alone.
  const double t = 0.5;
  torch::Tensor v = torch::tensor({{1.0, 0.0, 0.0},
                                   {std::cos(t), std::sin(t), 0.0},
                                   {std::cos(2 * t), std::sin(2 * t), 0.0},
                                   {0.0, 0.0, 1.0}},
                                  torch::kFloat);
  const auto groups = near_duplicate_groups(v, static_cast<float>(std::cos(t) - 0.01));
  EXPECT_EQ(groups, (std::vector<int64_t>{0, 0, 0, 3}));
}

TEST(FileMoves, NeverOverwriteAndStayInTheFolder) {
  TempDir dir;
  fs::create_directories(dir / "in" / "sub");
  fs::create_directories(dir / "out");
  write_bytes(dir / "out" / "x.png", "existing");
  write_bytes(dir / "in" / "x.png", "first");
  write_bytes(dir / "in" / "sub" / "x.png", "second");
  const std::string a = move_file_into((dir / "in" / "x.png").string(), (dir / "out").string());
  const std::string b = move_file_into((dir / "in" / "sub" / "x.png").string(), (dir / "out").string());
  EXPECT_EQ(fs::path(a).filename(), "x-1.png");
  EXPECT_EQ(fs::path(b).filename(), "x-2.png");
  EXPECT_EQ(read_bytes(dir / "out" / "x.png"), "existing");
  EXPECT_EQ(read_bytes(a), "first");
  EXPECT_FALSE(fs::exists(dir / "in" / "x.png"));
}

// The fixture CLIP and its pictures, shared by the collection tests.
struct FixtureClip {
  std::string weights;
  ModelSettings settings;
  std::vector<std::string> images;

  FixtureClip() {
    const auto manifest = read_json(fixtures() / "clip" / "clip-manifest.json");
    const auto& entry = manifest["models"].begin().value();
    weights = (fixtures() / "clip" / entry["files"][0].get<std::string>()).string();
    settings.text_heads = entry["config"]["transformer_heads"].get<int64_t>();
    settings.vocab = (fixtures() / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz").string();
    for (const auto& image : entry["images"])
      images.push_back((fixtures() / "clip" / image.get<std::string>()).string());
    for (const auto& image : entry["photos"])
      images.push_back((fixtures() / "clip" / image.get<std::string>()).string());
  }
};

IndexRequest index_request(const FixtureClip& clip, const fs::path& out, int64_t partitions) {
  IndexRequest r;
  r.model = clip.weights;
  r.clip = clip.settings;
  r.images = clip.images;
  for (size_t i = 0; i < r.images.size(); ++i) r.captions.push_back(cat("picture number ", i));
  r.out = out.string();
  r.partitions = partitions;
  r.stream.batch_size = 2;
  r.stream.workers = 2;
  return r;
}

TEST(Collection, PartitionsAreTheSameBytesHoweverTheTasksAreSplitAndSearchFindsEachImage) {
  if (!parquet_available()) GTEST_SKIP() << "built without Parquet (no pyarrow in .venv/)";
  TempDir dir;
  const FixtureClip clip;
  const int64_t P = 3;
  IndexRequest whole = index_request(clip, dir / "whole", P);
  const IndexSummary a = index_collection(whole, {});
  EXPECT_EQ(a.partitions_written, P);
  EXPECT_EQ(a.images, static_cast<int64_t>(clip.images.size()));
  ASSERT_TRUE(a.index_built);
  // The same collection as two workers would make it, in two runs; the second run of a task skips it.
  IndexRequest split = index_request(clip, dir / "split", P);
  split.tasks = {2, 0};
  EXPECT_FALSE(index_collection(split, {}).index_built);  // partition 1 is missing: no index yet
  split.tasks = {1, 2};
  const IndexSummary b = index_collection(split, {});
  EXPECT_EQ(b.partitions_present, 1);
  EXPECT_TRUE(b.index_built);
  for (int64_t i = 0; i < P; ++i) {
    const std::string n = partition_name(i, P);
    for (const std::string f : {"img_emb/img_emb_" + n + ".npy", "text_emb/text_emb_" + n + ".npy"})
      EXPECT_EQ(read_bytes(dir / "whole" / f), read_bytes(dir / "split" / f)) << f;
    const std::string meta = "metadata/metadata_" + n + ".parquet";
    EXPECT_EQ(read_parquet_strings((dir / "whole" / meta).string(), "image_path"),
              read_parquet_strings((dir / "split" / meta).string(), "image_path"));
    // Partition i holds the inputs whose index mod P is i, in input order.
    std::vector<std::string> expected;
    for (size_t j = i; j < clip.images.size(); j += P) expected.push_back(clip.images[j]);
    EXPECT_EQ(read_parquet_strings((dir / "whole" / meta).string(), "image_path"), expected);
  }
  // The stored rows are the normalized embeddings in float16.
  LoadedClip loaded = load_clip(clip.weights, clip.settings.resolve());
  std::vector<torch::Tensor> features;
  stream_image_features(loaded, clip.images, 4, 1, true,
                        [&](const ImageBatch& batch) { features.push_back(batch.features); });
  const torch::Tensor all = torch::cat(features);
  const torch::Tensor part0 =
      read_npy_matrix((dir / "whole" / ("img_emb/img_emb_" + partition_name(0, P) + ".npy")).string());
  EXPECT_LT((part0[1] - all[P].to(torch::kHalf).to(torch::kFloat)).abs().max().item<float>(), 1e-3);
  // Each image, as a query, finds itself first.
  for (const std::string& image : clip.images) {
    SearchRequest s;
    s.index = (dir / "whole").string();
    s.clip = clip.settings;
    s.images = {image};
    s.top = static_cast<int64_t>(clip.images.size());
    const auto hits = search_collection(s);
    ASSERT_FALSE(hits.empty());
    // A random tower embeds every picture in much the same direction, so the image itself may tie with
    // others; its own row scores (nearly) 1 and nothing scores more.
    const auto self =
        std::find_if(hits.begin(), hits.end(), [&](const SearchHit& h) { return h.image == image; });
    EXPECT_TRUE(self == hits.begin() || (self != hits.end() && self->score >= hits[0].score - 1e-3)) << image;
    EXPECT_NEAR(hits[0].score, 1.0, 2e-3);
  }
  // Folding near-duplicates: a threshold below every pair's cosine leaves one result holding the rest.
  SearchRequest s;
  s.index = (dir / "whole").string();
  s.clip = clip.settings;
  s.prompts = {"picture"};
  s.dedup = 1e-6;
  s.top = 3;
  const torch::Tensor cos = torch::matmul(all, all.t());
  if (cos.min().item<float>() > 1e-6) {
    const auto folded = search_collection(s);
    ASSERT_EQ(folded.size(), 1u);
    EXPECT_EQ(folded[0].duplicates.size() + 1, clip.images.size());
  }
}

TEST(Collection, AnotherModelOrPartitionCountInTheSameFolderIsRefused) {
  if (!parquet_available()) GTEST_SKIP() << "built without Parquet (no pyarrow in .venv/)";
  TempDir dir;
  const FixtureClip clip;
  IndexRequest r = index_request(clip, dir / "c", 2);
  r.build_index = false;
  index_collection(r, {});
  r.partitions = 3;
  EXPECT_THROW(index_collection(r, {}), Error);
  SearchRequest s;
  s.index = (dir / "c").string();
  s.prompts = {"x"};
  EXPECT_THROW(search_collection(s), Error);  // no index built yet
}

TEST(Filter, DeniedConceptsFlagAboveTheirThresholdAndMoveTheImages) {
  TempDir dir;
  const FixtureClip clip;
  fs::create_directories(dir / "in");
  std::vector<std::string> images;
  for (const std::string& image : clip.images) {
    images.push_back((dir / "in" / fs::path(image).filename()).string());
    fs::copy_file(image, images.back());
  }
  // The cosines each image has to a concept, so that thresholds can be set between them.
  LoadedClip loaded = load_clip(clip.weights, clip.settings.resolve());
  const torch::Tensor denied = embed_prompts(loaded, {"a red object"}, {}, false);
  std::vector<torch::Tensor> features;
  stream_image_features(loaded, images, 4, 1, true,
                        [&](const ImageBatch& batch) { features.push_back(batch.features); });
  const torch::Tensor cos = torch::matmul(torch::cat(features), denied.t()).squeeze(1);
  // Halfway between the two middle cosines: no image sits on the threshold, where batch sizes' rounding could
  // tip it.
  const torch::Tensor sorted = std::get<0>(cos.sort());
  const int64_t half = sorted.size(0) / 2;
  const double threshold = (sorted[half - 1].item<double>() + sorted[half].item<double>()) / 2;
  FilterRequest r;
  r.model = clip.weights;
  r.clip = clip.settings;
  r.images = images;
  r.deny = {{"a red object", threshold}};
  r.move_to = (dir / "quarantine").string();
  std::vector<FilterRow> rows;
  const FilterSummary s = filter_images(
      r, [&](const std::vector<FilterRow>& batch) { rows.insert(rows.end(), batch.begin(), batch.end()); });
  ASSERT_EQ(rows.size(), images.size());
  int64_t flagged = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].image, images[i]);
    const double c = cos[static_cast<int64_t>(i)].item<double>();
    if (std::abs(c - threshold) > 1e-5) EXPECT_EQ(rows[i].flagged, c > threshold);  // beyond rounding's reach
    EXPECT_EQ(rows[i].flagged, rows[i].margin > 0);
    EXPECT_NEAR(rows[i].margin, cos[static_cast<int64_t>(i)].item<double>() - threshold, 1e-5);
    EXPECT_EQ(rows[i].flagged, !rows[i].moved_to.empty());
    EXPECT_EQ(fs::exists(images[i]), !rows[i].flagged);
    flagged += rows[i].flagged;
  }
  EXPECT_EQ(s.flagged, flagged);
}

TEST(SafetyChecker, MatchesDiffusersDecisionsAndScores) {
  const fs::path dir = safety_fixtures();
  const auto manifest = read_json(dir / "safety-manifest.json");
  const SafetyChecker checker = load_safety_checker((dir / manifest["checker"].get<std::string>()).string());
  EXPECT_FALSE(checker.clip.model->config().text_tower);
  EXPECT_EQ(checker.concept_embeds.size(0), manifest["concepts"].get<int64_t>());
  EXPECT_EQ(checker.special_embeds.size(0), manifest["special_concepts"].get<int64_t>());
  // The checker's own input pixels: its tower and decision, exactly.
  const TensorMap ref = reference(dir / "safety-reference.safetensors");
  const torch::Tensor embeds = checker.clip.model->encode_image(ref.at("clip_input"));
  EXPECT_LT(rel_error(embeds, ref.at("image_embeds")), 1e-5);
  // The same from the picture files, through our preprocessing (PIL's resampling, as the processor's).
  std::vector<std::string> files;
  for (const auto& p : manifest["pictures"]) files.push_back((dir / p["file"].get<std::string>()).string());
  LoadedClip clip = checker.clip;
  std::vector<torch::Tensor> batches;
  stream_image_features(clip, files, 5, 2, false,
                        [&](const ImageBatch& b) { batches.push_back(b.features); });
  EXPECT_LT(rel_error(torch::cat(batches), ref.at("image_embeds")), 1e-5);
  const auto verdicts = safety_verdicts(checker, embeds);
  const auto from_files = safety_verdicts(checker, torch::cat(batches));
  int flagged = 0, special = 0;
  for (size_t i = 0; i < files.size(); ++i) {
    const auto& ref_picture = manifest["pictures"][i];
    const auto concept_cos = ref_picture["concept_cos"].get<std::vector<float>>();
    for (size_t c = 0; c < concept_cos.size(); ++c) {
      const float threshold = checker.concept_thresholds[static_cast<int64_t>(c)].item<float>();
      const float adjustment = verdicts[i].special_care ? 0.01f : 0.0f;
      EXPECT_NEAR(verdicts[i].raw_concept_scores[c], concept_cos[c] - threshold + adjustment, 1e-5)
          << files[i];
    }
    EXPECT_EQ(verdicts[i].concept_scores, ref_picture["concept_scores"].get<std::vector<float>>())
        << files[i];
    EXPECT_EQ(verdicts[i].special_scores, ref_picture["special_scores"].get<std::vector<float>>())
        << files[i];
    EXPECT_EQ(verdicts[i].flagged, ref_picture["has_nsfw_concept"].get<bool>()) << files[i];
    EXPECT_EQ(from_files[i].flagged, ref_picture["has_nsfw_concept"].get<bool>()) << files[i];
    flagged += verdicts[i].flagged;
    special += verdicts[i].special_care;
  }
  EXPECT_EQ(flagged, manifest["flagged"].get<int>());
  EXPECT_EQ(special, manifest["special_care"].get<int>());
}

TEST(SafetyChecker, MissingConceptsAreNamed) {
  TempDir dir;
  const fs::path src = safety_fixtures() / "pipeline" / "safety_checker";
  TensorMap sd = read_checkpoint(src.string()).tensors;
  sd.erase("special_care_embeds");
  write_file_atomic((dir / "model.safetensors").string(), serialize_safetensors(sd, {}));
  fs::copy_file(src / "config.json", dir / "config.json");
  try {
    load_safety_checker(dir.path().string());
    FAIL() << "loaded a checker without special_care_embeds";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("special_care_embeds"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace clipguide::test
