// clipguide score and clipguide rerank: the command lines of jobs/score.h.
#include "jobs/score.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "cli/common.h"
#include "cli/stream_args.h"
#include "clip/text_clean.h"
#include "jobs/search.h"

int run_score(int argc, char** argv) {
  ModelArgs model;
  InputArgs in;
  std::string metric_name = "cosine", out_dir;
  bool stats = false, worker = false;
  int64_t partitions = 1;
  cxxopts::Options opts("clipguide score",
                        "Score every image against every prompt, or each image against its own "
                        "prompt with --pairs.");
  model.several_devices = true;
  model.add_to(opts, true);
  in.add_to(opts);
  // clang-format off: one option a line
  opts.add_options()(
      "pairs",
      "CSV (image,prompt) or JSONL ({\"image\", \"prompt\"}) of pairs: one caption per image; also "
      "prints the mean as torchmetrics does (100 * max(mean cos, 0)) and as CLIPScore does (mean "
      "of 2.5 * max(cos, 0))",
      cxxopts::value(in.pairs_file))(
      "metric",
      "cosine: cos(image, text) in [-1, 1]; logit: exp(logit_scale) * cos + logit_bias (100 * cos for "
      "OpenAI models); clipscore: 2.5 * max(cos, 0) (Hessel et al. 2021); probs: softmax over the "
      "prompts (zero-shot); sigmoid: SigLIP's pairwise probability sigmoid(logit), SigLIP models only",
      cxxopts::value(metric_name)->default_value("cosine"))(
      "stats",
      "print one JSON line on stderr: images scored, seconds and images/s of the image pipeline "
      "(decode, preprocess, encode, score; model loading excluded)",
      cxxopts::value(stats))(
      "worker",
      "a long-lived worker (clipguide-spark score): read partition numbers on stdin, one a line, score each "
      "partition's images against every prompt (the model loads once) and write them whole to "
      "OUT/scores/scores_N.parquet (image_path, prompt, score, metric, position in the inputs), printing "
      "{\"partition\", \"rows\", \"images\"} as each lands",
      cxxopts::value(worker))("output-partition-count",
                              "with --worker: partition i holds the inputs whose index mod P is i",
                              cxxopts::value(partitions)->default_value("1"))(
      "out", "with --worker: the folder for the partitions' scores", cxxopts::value(out_dir));
  // clang-format on
  opts.positional_help("IMAGE_OR_DIR...");
  if (!parse_or_help(opts, argc, argv)) return 0;
  cg::ScoreRequest request;
  request.metric = cg::parse_metric(metric_name);
  in.fill(request, model, "score");
  if (worker != !out_dir.empty()) cg::fail("score: --worker writes to --out; give both or neither");
  if (worker) {
    if (!in.pairs_file.empty()) cg::fail("score: --worker scores partitions of the inputs; drop --pairs");
    request.images = in.image_files();
    StreamUi ui;
    cg::score_partitions(
        request, out_dir, partitions, next_stdin_task,
        [](int64_t partition, size_t rows, size_t images) {
          std::cout << json{{"partition", partition}, {"rows", rows}, {"images", images}}.dump() << "\n"
                    << std::flush;
        },
        ui.callbacks([](const cg::LoadedClip&) {}));
    return 0;
  }
  if (!in.pairs_file.empty()) {
    if (!request.prompts.empty() || in.has_images())
      cg::fail("score: --pairs takes its images and prompts from the file; drop -p and inputs");
    request.pairs = read_pairs(in.pairs_file);
  } else {
    if (request.prompts.empty()) cg::fail("score: give prompts with -p or --prompts-file (or --pairs)");
    request.images = in.image_files();
  }
  const std::string metric = cg::metric_name(request.metric);
  std::unique_ptr<RowWriter> out;
  StreamUi ui;
  const cg::StreamCallbacks callbacks = ui.callbacks([&](const cg::LoadedClip& clip) {
    out = std::make_unique<RowWriter>(
        in.format, json{{"model", clip.path},
                        {"family", cg::name_of(cg::kModelFamilies, clip.model->config().family)},
                        {"metric", metric},
                        {"definition", cg::metric_definition(request.metric)}});
    out->begin({"score", "image", "prompt", "metric"});
    // The widest a score can print.
    out->reserve("score",
                 request.metric == cg::Metric::Logit
                     ? -(clip.model->logit_scale_exp().item<double>() + std::abs(clip.model->logit_bias()))
                     : -1.0);
  });
  const cg::ScoreSummary summary = cg::score(
      request,
      [&](const std::vector<cg::ScoreRow>& rows) {
        for (const cg::ScoreRow& r : rows)
          out->row({{"image", r.image}, {"prompt", r.prompt}, {"score", r.score}, {"metric", metric}});
        out->end_batch();
      },
      callbacks);
  ui.progress.reset();
  if (stats) {
    std::cerr << json{{"images", summary.images},
                      {"seconds", summary.seconds},
                      {"images_per_s", summary.images / summary.seconds},
                      {"threads", torch::get_num_threads()},
                      {"precision", model.precision}}
                     .dump()
              << "\n";
  }
  json tail;
  if (summary.pairs > 0) {
    tail = {{"pairs", summary.pairs},
            {"mean_torchmetrics", summary.mean_torchmetrics},
            {"mean_torchmetrics_definition", "100 * max(mean over pairs of cos, 0): torchmetrics CLIPScore"},
            {"mean_clipscore", summary.mean_clipscore},
            {"mean_clipscore_definition",
             "mean over pairs of 2.5 * max(cos, 0): per-sample clamped, Hessel et al. 2021"}};
  }
  out->end(tail);
  return 0;
}

namespace {

// rerank --worker: each partition read on stdin ranked as a group of its own against the prompts.
int rerank_worker(cg::RerankRequest& request, const InputArgs& in, const std::string& group_by,
                  int64_t partitions) {
  if (!group_by.empty()) cg::fail("rerank: --worker ranks partitions of the inputs; drop --group-by");
  if (partitions < 1) cg::fail("rerank: --output-partition-count must be at least 1");
  if (request.prompts.empty()) cg::fail("rerank: give the prompt with -p (or --prompts-file)");
  const std::vector<std::string> images = in.image_files();
  int64_t current = -1;
  std::unordered_map<std::string, size_t> position;  // of each image of the current partition in the inputs
  request.next_group = [&]() -> std::optional<cg::RerankRequest::Group> {
    const std::optional<int64_t> t = next_stdin_task();
    if (!t) return std::nullopt;
    current = *t;
    cg::RerankRequest::Group group{"", cg::partition_inputs(images, *t, partitions)};
    position.clear();
    for (size_t i = 0; i < group.images.size(); ++i)
      position.emplace(group.images[i], static_cast<size_t>(*t) + i * static_cast<size_t>(partitions));
    return group;
  };
  StreamUi ui;
  cg::rerank(
      request,
      [&](size_t, const cg::RerankRequest::Group& group, const std::vector<cg::RankedImage>& ranked) {
        for (const cg::RankedImage& r : ranked)
          std::cout << json{{"partition", current},
                            {"position", position.at(r.image)},
                            {"rank", r.rank},
                            {"image", r.image},
                            {"score", r.score}}
                           .dump()
                    << "\n";
        std::cout << json{{"partition", current}, {"images", group.images.size()}}.dump() << "\n"
                  << std::flush;
      },
      ui.callbacks([](const cg::LoadedClip&) {}));
  return 0;
}

}  // namespace

int run_rerank(int argc, char** argv) {
  ModelArgs model;
  InputArgs in;
  cg::RerankRequest request;
  std::string group_by;
  bool worker = false;
  int64_t partitions = 1;
  cxxopts::Options opts("clipguide rerank",
                        "Rank images best first by how well they fit the prompt(s): score = mean "
                        "cos over the prompts - mean cos over the negative prompts.");
  model.several_devices = true;
  model.add_to(opts, true);
  in.add_to(opts);
  // clang-format off: one option a line
  opts.add_options()("negative", "a prompt the images should not fit; repeatable",
                     cxxopts::value(request.negatives))("top", "keep the best K (per group with --group-by)",
                                                        cxxopts::value(request.top))(
      "copy-to", "copy the kept images into this folder as RANK-NAME", cxxopts::value(request.copy_to))(
      "link-to", "symlink the kept images into this folder as RANK-NAME", cxxopts::value(request.link_to))(
      "group-by", "a pairs file (CSV image,prompt or JSONL): rank best-of-N within each prompt's images",
      cxxopts::value(group_by))(
      "html", "write a self-contained HTML report (thumbnails, scores as bars, prompts, model, metric)",
      cxxopts::value(request.html))(
      "worker",
      "a long-lived worker (clipguide-spark rerank): read partition numbers on stdin, one a line, and rank "
      "each partition's images (the model loads once), printing its kept rows as JSON lines with their "
      "input positions, then {\"partition\", \"images\"}",
      cxxopts::value(worker))("output-partition-count",
                              "with --worker: partition i holds the inputs whose index mod P is i",
                              cxxopts::value(partitions)->default_value("1"));
  // clang-format on
  opts.positional_help("IMAGE_OR_DIR...");
  if (!parse_or_help(opts, argc, argv)) return 0;
  in.fill(request, model, "rerank");
  if (worker) return rerank_worker(request, in, group_by, partitions);
  // Groups: each a prompt and its images. Without --group-by, one group of all images against -p.
  if (!group_by.empty()) {
    if (!request.prompts.empty() || in.has_images())
      cg::fail("rerank: --group-by takes images and prompts from the file; drop -p and inputs");
    for (const auto& [image, prompt] : read_pairs(group_by)) {
      auto it = std::find_if(
          request.groups.begin(), request.groups.end(),
          [&, &prompt = prompt](const cg::RerankRequest::Group& g) { return g.prompt == prompt; });
      if (it == request.groups.end()) it = request.groups.insert(request.groups.end(), {prompt, {}});
      it->images.push_back(image);
    }
  } else {
    if (request.prompts.empty())
      cg::fail("rerank: give the prompt with -p (or --prompts-file, or --group-by)");
    request.groups.push_back({"", in.image_files()});
  }
  std::unique_ptr<RowWriter> out;
  StreamUi ui;
  const cg::StreamCallbacks callbacks = ui.callbacks([&](const cg::LoadedClip& clip) {
    out = std::make_unique<RowWriter>(
        in.format, json{{"model", clip.path},
                        {"family", cg::name_of(cg::kModelFamilies, clip.model->config().family)},
                        {"metric", "cosine"},
                        {"definition", cg::kRerankDefinition}});
    out->begin(group_by.empty() ? std::vector<std::string>{"rank", "score", "image"}
                                : std::vector<std::string>{"group", "rank", "score", "image", "prompt"});
    size_t largest_group = 0;
    for (const auto& g : request.groups) largest_group = std::max(largest_group, g.images.size());
    out->reserve("group", request.groups.size());
    out->reserve("rank", request.top > 0 ? std::min<size_t>(largest_group, static_cast<size_t>(request.top))
                                         : largest_group);
    out->reserve("score", -2.0);  // mean cos minus mean cos
  });
  cg::rerank(
      request,
      [&](size_t g, const cg::RerankRequest::Group& group, const std::vector<cg::RankedImage>& ranked) {
        for (const cg::RankedImage& r : ranked) {
          json row = {{"rank", r.rank}, {"image", r.image}, {"score", r.score}};
          if (!group_by.empty()) {
            row["group"] = g + 1;
            row["prompt"] = group.prompt;
          }
          if (!r.copy.empty()) row["copy"] = r.copy;
          out->row(row);
        }
        out->end_batch();
      },
      callbacks);
  ui.progress.reset();
  out->end(json());
  return 0;
}
