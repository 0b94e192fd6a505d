#include "jobs/search.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "clip/safety_checker.h"
#include "clip/text_clean.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/json_fields.h"
#include "io/npy.h"
#include "io/parquet.h"
#include "jobs/report.h"

namespace clipguide {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kCollectionFile = "collection.json";  // what made the partitions: checked by every run
constexpr const char* kIndexFile = "index.json";            // what was built over them

struct PartitionFiles {
  std::string image, text, metadata;
};

PartitionFiles partition_files(const std::string& dir, int64_t i, int64_t partitions) {
  const std::string n = partition_name(i, partitions);
  const fs::path d(dir);
  return {(d / "img_emb" / cat("img_emb_", n, ".npy")).string(),
          (d / "text_emb" / cat("text_emb_", n, ".npy")).string(),
          (d / "metadata" / cat("metadata_", n, ".parquet")).string()};
}

bool exists(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

// A collection's description, as collection.json holds it.
struct Collection {
  std::string model, architecture;
  int64_t embed_dim = 0, partitions = 0;
  bool captions = false;

  json to_json() const {
    return {{"format", "clipguide collection 1"}, {"model", model},
            {"architecture", architecture},       {"embed_dim", embed_dim},
            {"partitions", partitions},           {"captions", captions}};
  }
};

Collection read_collection(const std::string& dir) {
  const std::string path = (fs::path(dir) / kCollectionFile).string();
  if (!exists(path))
    fail(dir, " is not a clipguide collection (no ", kCollectionFile, "; make one with clipguide index)");
  const json j = parse_json_object(read_small_file(path, kMaxConfigBytes), dir, kCollectionFile);
  Collection c;
  read_field(j, "model", c.model, path);
  read_field(j, "architecture", c.architecture, path);
  read_field(j, "embed_dim", c.embed_dim, path);
  read_field(j, "partitions", c.partitions, path);
  read_field(j, "captions", c.captions, path);
  if (c.partitions < 1 || c.embed_dim < 1) fail(path, ": partitions and embed_dim must be positive");
  return c;
}

// The partitions' metadata files, all of which must be there.
std::vector<PartitionFiles> complete_partitions(const std::string& dir, const Collection& c) {
  std::vector<PartitionFiles> out;
  std::vector<int64_t> missing;
  for (int64_t i = 0; i < c.partitions; ++i) {
    out.push_back(partition_files(dir, i, c.partitions));
    if (!exists(out.back().metadata)) missing.push_back(i);
  }
  if (!missing.empty())
    fail(dir, ": ", missing.size(), " of ", c.partitions,
         " partitions are not written yet (the first: ", missing[0],
         "); run clipguide index with their --tasks first");
  return out;
}

json info_json(const VectorIndexInfo& i) {
  return {{"kind", i.kind},
          {"factory", i.factory},
          {"rows", i.rows},
          {"dim", i.dim},
          {"nlist", i.nlist},
          {"nprobe", i.nprobe},
          {"pq_bytes", i.pq_bytes},
          {"memory_bytes", i.memory_bytes},
          {"recall_at_10", i.recall_at_10},
          {"recall_queries", i.recall_queries},
          {"train_rows", i.train_rows},
          {"build_seconds", i.build_seconds}};
}

}  // namespace

namespace {

void check_task(int64_t t, int64_t partitions) {
  if (t < 0 || t >= partitions) fail("task ", t, " is not a partition of 0..", partitions - 1);
}

}  // namespace

std::vector<std::string> partition_inputs(const std::vector<std::string>& inputs, int64_t partition,
                                          int64_t partitions) {
  check_task(partition, partitions);
  std::vector<std::string> out;
  for (size_t j = static_cast<size_t>(partition); j < inputs.size(); j += static_cast<size_t>(partitions))
    out.push_back(inputs[j]);
  return out;
}

std::string partition_name(int64_t partition, int64_t partitions) {
  // clip-retrieval: str(i).zfill(int(log10(P)) + 1)
  const int digits = static_cast<int>(std::to_string(partitions).size());
  std::string n = std::to_string(partition);
  if (static_cast<int>(n.size()) < digits) n.insert(0, digits - n.size(), '0');
  return n;
}

// ---- index ----

void IndexRequest::validate() const {
  if (model.empty()) fail("no CLIP model to index with");
  clip.check(true);
  stream.validate();
  if (out.empty()) fail("no output folder for the collection");
  if (images.empty()) fail("no images to index");
  if (!captions.empty() && captions.size() != images.size())
    fail(captions.size(), " captions for ", images.size(), " images; give one caption per image or none");
  check_prompts(captions);
  if (partitions < 1) fail("partitions must be at least 1 (got ", partitions, ")");
  for (int64_t t : tasks) check_task(t, partitions);
  if (next_task && !tasks.empty()) fail("a worker takes its tasks one at a time, not as a list");
  if (index.max_memory_bytes < 1) fail("max index memory must be positive");
  if (index.target_recall <= 0 || index.target_recall > 1) fail("target recall must be in (0, 1]");
}

IndexSummary index_collection(const IndexRequest& request,
                              const std::function<void(int64_t partition, int64_t rows)>& on_partition,
                              const StreamCallbacks& callbacks) {
  request.validate();
  if (!parquet_available()) write_parquet("", {});  // the Error saying how to get Parquet
  for (const char* sub : {"img_emb", "metadata"}) prepare_output_dir((fs::path(request.out) / sub).string());
  const bool captions = !request.captions.empty();
  if (captions) prepare_output_dir((fs::path(request.out) / "text_emb").string());
  StreamModel loaded = load_stream_model(request.model, request.clip, request.stream, callbacks);
  const auto started = std::chrono::steady_clock::now();  // the image pipeline; loading excluded
  const ClipConfig& config = loaded.clip.model->config();
  Collection mine{loaded.clip.path, config.architecture(), config.embed_dim, request.partitions, captions};
  const std::string described = (fs::path(request.out) / kCollectionFile).string();
  if (exists(described)) {
    const Collection there = read_collection(request.out);
    if (there.partitions != mine.partitions || there.embed_dim != mine.embed_dim ||
        there.captions != mine.captions || there.architecture != mine.architecture)
      fail(request.out, " holds a collection of ", there.partitions, " partitions by a ", there.architecture,
           " (", there.embed_dim, "-d", there.captions ? ", with captions" : "", "); this run makes ",
           mine.partitions, " by a ", mine.architecture, " (", mine.embed_dim, "-d",
           mine.captions ? ", with captions" : "", "): use another folder");
  } else {
    write_file_atomic(described, mine.to_json().dump(2) + "\n");
  }
  std::vector<int64_t> tasks = request.tasks;
  if (tasks.empty() && !request.next_task)
    for (int64_t i = 0; i < request.partitions; ++i) tasks.push_back(i);
  const auto P = static_cast<size_t>(request.partitions);
  // Partition t holds the inputs t, t + P, t + 2P, ...
  const auto inputs_of = [&](int64_t t) {
    return request.images.size() / P + (static_cast<size_t>(t) < request.images.size() % P);
  };
  IndexSummary summary;
  // Progress runs over the listed tasks; a worker's over the task at hand.
  size_t total = 0, done = 0;
  for (int64_t t : tasks) total += inputs_of(t);
  const auto make = [&](int64_t t) {
    const PartitionFiles files = partition_files(request.out, t, request.partitions);
    if (exists(files.metadata)) {  // written whole by an earlier run: its metadata lands last
      ++summary.partitions_present;
      done += inputs_of(t);
      if (callbacks.on_progress) callbacks.on_progress(done, total);
      if (on_partition) on_partition(t, -1);
      return;
    }
    const std::vector<std::string> images = partition_inputs(request.images, t, request.partitions);
    std::vector<torch::Tensor> rows;
    std::vector<std::string> paths, kept_captions;
    stream_images(loaded, images, request.stream, callbacks, done, total, true, [&](const ImageBatch& batch) {
      rows.push_back(batch.features);
      paths.insert(paths.end(), batch.paths.begin(), batch.paths.end());
      if (captions)
        for (size_t position : batch.positions)
          kept_captions.push_back(request.captions[static_cast<size_t>(t) + position * P]);
      summary.skipped += static_cast<int64_t>(batch.errors.size());
    });
    const torch::Tensor image_emb = rows.empty() ? torch::empty({0, config.embed_dim}) : torch::cat(rows);
    // Written under temporary names, then renamed into place with the metadata last: a partition whose
    // metadata is there is whole.
    std::vector<std::pair<std::string, std::string>> staged;  // (temporary, final)
    auto stage = [&](const std::string& final_path, const std::string& bytes) {
      staged.emplace_back(temp_beside(final_path), final_path);
      write_file_atomic(staged.back().first, bytes);
    };
    stage(files.image, npy_bytes(image_emb, torch::kHalf));
    std::vector<ParquetColumn> columns = {{"image_path", paths}};
    if (captions) {
      const torch::Tensor text_emb = kept_captions.empty()
                                         ? torch::empty({0, config.embed_dim})
                                         : embed_prompts(loaded.clip, kept_captions, {}, request.truncate);
      stage(files.text, npy_bytes(text_emb, torch::kHalf));
      columns.push_back({"caption", kept_captions});
    }
    staged.emplace_back(temp_beside(files.metadata), files.metadata);
    write_parquet(staged.back().first, columns);
    for (const auto& [tmp, final_path] : staged) rename_into_place(tmp, final_path);
    ++summary.partitions_written;
    summary.images += static_cast<int64_t>(paths.size());
    if (on_partition) on_partition(t, static_cast<int64_t>(paths.size()));
  };
  for (int64_t t : tasks) make(t);
  if (request.next_task) {
    while (const std::optional<int64_t> t = request.next_task()) {
      check_task(*t, request.partitions);
      done = 0;
      total = inputs_of(*t);
      make(*t);
    }
  }
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (request.build_index) {
    bool all = true;
    for (int64_t i = 0; i < request.partitions && all; ++i)
      all = exists(partition_files(request.out, i, request.partitions).metadata);
    if (all) {
      const IndexSummary built = build_collection_index(request.out, request.index);
      summary.index_built = true;
      summary.image_index = built.image_index;
      summary.text_index = built.text_index;
    }
  }
  return summary;
}

IndexSummary build_collection_index(const std::string& dir, const VectorIndexOptions& options) {
  const Collection c = read_collection(dir);
  const std::vector<PartitionFiles> parts = complete_partitions(dir, c);
  IndexSummary summary;
  std::vector<std::string> images, texts;
  for (const PartitionFiles& p : parts) {
    images.push_back(p.image);
    texts.push_back(p.text);
  }
  json record = {{"format", "clipguide index 1"}, {"partitions", c.partitions}};
  summary.image_index = build_vector_index(images, (fs::path(dir) / "image.index").string(), options);
  record["image"] = info_json(*summary.image_index);
  if (c.captions) {
    summary.text_index = build_vector_index(texts, (fs::path(dir) / "text.index").string(), options);
    record["text"] = info_json(*summary.text_index);
  }
  write_file_atomic((fs::path(dir) / kIndexFile).string(), record.dump(2) + "\n");
  summary.index_built = true;
  return summary;
}

// ---- score partitions ----

void score_partitions(const ScoreRequest& request, const std::string& out, int64_t partitions,
                      const std::function<std::optional<int64_t>()>& next_task,
                      const std::function<void(int64_t partition, size_t rows, size_t images)>& on_partition,
                      const StreamCallbacks& callbacks) {
  if (out.empty()) fail("no output folder for the scores");
  if (partitions < 1) fail("partitions must be at least 1 (got ", partitions, ")");
  if (!request.pairs.empty()) fail("score partitions split images scored against prompts, not pairs");
  if (!next_task) fail("score partitions need their tasks");
  if (!parquet_available()) write_parquet("", {});  // the Error saying how to get Parquet
  const fs::path folder = fs::path(out) / "scores";
  fs::create_directories(folder);
  const std::string metric = metric_name(request.metric);
  const auto P = static_cast<size_t>(partitions);
  std::optional<int64_t> current;
  std::vector<std::string> images, prompts;
  std::vector<double> scores;
  std::vector<int64_t> positions;
  const auto write_current = [&] {
    const std::string path =
        (folder / ("scores_" + partition_name(*current, partitions) + ".parquet")).string();
    const std::string tmp = temp_beside(path);
    write_parquet(tmp, {{"image_path", images},
                        {"prompt", prompts},
                        {"score", scores},
                        {"metric", std::vector<std::string>(scores.size(), metric)},
                        {"position", positions}});
    rename_into_place(tmp, path);
    // Each image scored has a row per prompt.
    if (on_partition) on_partition(*current, scores.size(), scores.size() / request.prompts.size());
    images.clear();
    prompts.clear();
    scores.clear();
    positions.clear();
  };
  ScoreRequest worker = request;
  worker.images.clear();
  worker.next_images = [&]() -> std::optional<std::vector<std::string>> {
    if (current) write_current();  // every row of the partition has been reported
    current = next_task();
    if (!current) return std::nullopt;
    return partition_inputs(request.images, *current, partitions);
  };
  score(
      worker,
      [&](const std::vector<ScoreRow>& rows) {
        for (const ScoreRow& r : rows) {
          images.push_back(r.image);
          prompts.push_back(r.prompt);
          scores.push_back(r.score);
          positions.push_back(static_cast<int64_t>(static_cast<size_t>(*current) + r.position * P));
        }
      },
      callbacks);
}

// ---- search ----

void SearchRequest::validate() const {
  if (index.empty()) fail("no collection folder to search");
  clip.check(false);
  if (prompts.empty() && images.empty()) fail("nothing to search for; give a prompt or an image");
  check_prompts(prompts);
  check_prompts(negatives);
  if (top < 1) fail("top must be at least 1 (got ", top, ")");
  if (dedup < 0 || dedup >= 1) fail("dedup must be a cosine in (0, 1), or 0 for none (got ", dedup, ")");
}

std::vector<SearchHit> search_collection(const SearchRequest& request, const StreamCallbacks& callbacks) {
  request.validate();
  const Collection c = read_collection(request.index);
  const std::vector<PartitionFiles> parts = complete_partitions(request.index, c);
  const std::string index_path = (fs::path(request.index) / "image.index").string();
  if (!exists(index_path))
    fail(request.index, " has no image.index yet; build it with clipguide index --build-index-only");
  const VectorIndex index(index_path);
  ImageStream stream;
  StreamModel loaded =
      load_stream_model(request.model.empty() ? c.model : request.model, request.clip, stream, callbacks);
  if (loaded.clip.model->config().embed_dim != index.dim())
    fail(loaded.clip.path, " makes ", loaded.clip.model->config().embed_dim, "-d embeddings; the index at ",
         request.index, " holds ", index.dim(), "-d ones (made by ", c.model, ")");
  // The query is mean(queries) - mean(negatives): its inner product with a normalized row is exactly rerank's
  // score, mean cos(queries) - mean cos(negatives).
  std::vector<torch::Tensor> positives;
  if (!request.prompts.empty())
    positives.push_back(embed_prompts(loaded.clip, request.prompts, {}, request.truncate));
  if (!request.images.empty()) {
    size_t done = 0;
    stream_images(loaded, request.images, stream, {}, done, request.images.size(), true,
                  [&](const ImageBatch& batch) { positives.push_back(batch.features); });
  }
  torch::Tensor query = torch::cat(positives).mean(0);
  if (!request.negatives.empty())
    query = query - embed_prompts(loaded.clip, request.negatives, {}, request.truncate).mean(0);
  // Row ids run through the partitions in order; the metadata says each partition's rows.
  std::vector<int64_t> starts;
  std::vector<std::string> paths, captions;
  for (const PartitionFiles& p : parts) {
    starts.push_back(static_cast<int64_t>(paths.size()));
    std::vector<std::string> column = read_parquet_strings(p.metadata, "image_path");
    paths.insert(paths.end(), column.begin(), column.end());
    if (c.captions) {
      column = read_parquet_strings(p.metadata, "caption");
      captions.insert(captions.end(), column.begin(), column.end());
    }
  }
  if (static_cast<int64_t>(paths.size()) != index.rows())
    fail(request.index, ": the metadata lists ", paths.size(), " images but image.index holds ", index.rows(),
         " rows; rebuild the index (clipguide index --build-index-only)");
  const int64_t fetch =
      request.dedup > 0 ? std::min<int64_t>(index.rows(), request.top * 4 + 16) : request.top;
  const std::vector<VectorHit> hits = index.search(query.unsqueeze(0), fetch).at(0);
  std::vector<int64_t> group(hits.size());
  for (size_t i = 0; i < hits.size(); ++i) group[i] = static_cast<int64_t>(i);
  if (request.dedup > 0 && !hits.empty()) {
    // The hits' stored embeddings, read from their partitions, grouped by a range search among themselves.
    torch::Tensor vectors = torch::empty({static_cast<int64_t>(hits.size()), index.dim()});
    for (size_t i = 0; i < hits.size(); ++i) {
      const auto p = static_cast<size_t>(std::upper_bound(starts.begin(), starts.end(), hits[i].id) -
                                         starts.begin() - 1);
      vectors[static_cast<int64_t>(i)].copy_(read_npy_rows(parts[p].image, {hits[i].id - starts[p]})[0]);
    }
    group = near_duplicate_groups(vectors, static_cast<float>(request.dedup));
  }
  std::vector<SearchHit> out;
  std::vector<int64_t> kept_group;  // the group each result stands for
  for (size_t i = 0; i < hits.size(); ++i) {
    const std::string& path = paths.at(static_cast<size_t>(hits[i].id));
    const auto seen = std::find(kept_group.begin(), kept_group.end(), group[i]);
    if (seen != kept_group.end()) {
      out[static_cast<size_t>(seen - kept_group.begin())].duplicates.push_back(path);
      continue;
    }
    if (static_cast<int64_t>(out.size()) == request.top) continue;
    SearchHit hit;
    hit.rank = static_cast<int64_t>(out.size()) + 1;
    hit.image = path;
    if (c.captions) hit.caption = captions.at(static_cast<size_t>(hits[i].id));
    hit.score = hits[i].score;
    out.push_back(std::move(hit));
    kept_group.push_back(group[i]);
  }
  if (!request.html.empty()) {
    ReportInfo info;
    info.title = "clipguide search";
    info.prompts = request.prompts;
    info.prompts.insert(info.prompts.end(), request.images.begin(), request.images.end());
    info.negatives = request.negatives;
    info.model = cat(loaded.clip.path, " (", loaded.clip.model->config().architecture(), ")");
    info.metric_definition = kRerankDefinition;
    std::vector<ReportEntry> entries;
    for (const SearchHit& h : out) entries.push_back({h.rank, h.image, h.score, ""});
    write_file_atomic(request.html, render_report(info, entries));
  }
  return out;
}

// ---- filter ----

void FilterRequest::validate() const {
  if (deny.empty() && safety_checker.empty())
    fail("nothing to filter for; give denied concepts or a safety checker");
  if (!deny.empty() && model.empty()) fail("denied concepts need a CLIP model");
  clip.check(true);
  stream.validate();
  if (images.empty()) fail("no images to filter");
  for (const DeniedConcept& d : deny) {
    check_prompts({d.text});
    if (d.text.empty()) fail("a denied concept is empty");
    if (!std::isfinite(d.threshold) || d.threshold <= -1 || d.threshold >= 1)
      fail("the threshold of ", d.text, " must be a cosine in (-1, 1) (got ", d.threshold, ")");
  }
}

FilterSummary filter_images(const FilterRequest& request,
                            const std::function<void(const std::vector<FilterRow>&)>& on_rows,
                            const StreamCallbacks& callbacks) {
  request.validate();
  if (!request.move_to.empty()) prepare_output_dir(request.move_to);
  // One pass per model, each row's verdict kept by input position; with both, rows are reported after the
  // second.
  std::vector<FilterRow> rows(request.images.size());
  std::vector<bool> decoded(request.images.size(), false);
  const bool two_passes = !request.deny.empty() && !request.safety_checker.empty();
  size_t done = 0;
  const size_t total = request.images.size() * (two_passes ? 2 : 1);
  FilterSummary summary;
  auto finish = [&](size_t begin, size_t end) {  // rows [begin, end) are final: move, count, report
    std::vector<FilterRow> ready;
    for (size_t i = begin; i < end; ++i) {
      if (!decoded[i]) continue;
      FilterRow& row = rows[i];
      ++summary.images;
      if (row.flagged) {
        ++summary.flagged;
        if (!request.move_to.empty()) row.moved_to = move_file_into(row.image, request.move_to);
      }
      ready.push_back(row);
    }
    if (!ready.empty()) on_rows(ready);
  };
  // Runs `paths` through `model`, calling verdict(position, features row) for each decoded image.
  auto pass = [&](StreamModel& model, bool last, bool normalize,
                  const std::function<void(size_t, const torch::Tensor&)>& verdict) {
    size_t next = 0;  // the first input not yet finished
    stream_images(model, request.images, request.stream, callbacks, done, total, normalize,
                  [&](const ImageBatch& batch) {
                    for (size_t b = 0; b < batch.paths.size(); ++b) {
                      const size_t i = batch.positions[b];
                      decoded[i] = true;
                      rows[i].image = batch.paths[b];
                      verdict(i, batch.features[static_cast<int64_t>(b)]);
                    }
                    // A batch's failed images, after its last decoded one, finish with the next batch.
                    if (last && !batch.positions.empty()) {
                      finish(next, batch.positions.back() + 1);
                      next = batch.positions.back() + 1;
                    }
                  });
    if (last) finish(next, request.images.size());
  };
  if (!request.safety_checker.empty()) {
    SafetyChecker checker = load_safety_checker(request.safety_checker, request.clip.resolve(true));
    StreamModel model = stream_model_for(checker.clip, request.clip, request.stream, callbacks);
    pass(model, request.deny.empty(), /*normalize=*/false, [&](size_t i, const torch::Tensor& features) {
      const SafetyVerdict v = safety_verdicts(checker, features.unsqueeze(0)).at(0);
      FilterRow& row = rows[i];
      row.flagged = v.flagged;
      row.nearest_concept = cat("safety:concept ", v.nearest);
      row.margin = v.concept_scores.at(static_cast<size_t>(v.nearest));
    });
  }
  if (!request.deny.empty()) {
    StreamModel model = load_stream_model(request.model, request.clip, request.stream, callbacks);
    std::vector<std::string> texts;
    torch::Tensor thresholds = torch::empty({static_cast<int64_t>(request.deny.size())}, torch::kDouble);
    for (size_t d = 0; d < request.deny.size(); ++d) {
      texts.push_back(request.deny[d].text);
      thresholds[static_cast<int64_t>(d)] = request.deny[d].threshold;
    }
    const torch::Tensor concepts = embed_prompts(model.clip, texts, {}, request.truncate);  // [C, E]
    const bool first = request.safety_checker.empty();
    pass(model, true, /*normalize=*/true, [&](size_t i, const torch::Tensor& features) {
      const torch::Tensor margins = torch::mv(concepts, features).to(torch::kDouble) - thresholds;  // [C]
      const int64_t nearest = margins.argmax().item<int64_t>();
      const double margin = margins[nearest].item<double>();
      FilterRow& row = rows[i];
      row.flagged = (!first && row.flagged) || margin > 0;
      if (first || margin > row.margin) {  // the concept nearest its threshold, over both models
        row.nearest_concept = request.deny[static_cast<size_t>(nearest)].text;
        row.margin = margin;
      }
    });
  }
  return summary;
}

}  // namespace clipguide
