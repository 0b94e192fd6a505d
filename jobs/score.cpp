#include "jobs/score.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <thread>

#include "clip/text_clean.h"
#include "core/error.h"
#include "core/file_io.h"
#include "io/embedding_cache.h"
#include "jobs/report.h"

namespace clipguide {

namespace fs = std::filesystem;

const char* const kRerankDefinition = "mean cos(image, prompt) - mean cos(image, negative prompt)";

void ImageStream::validate() const {
  if (batch_size < 1) fail("batch_size must be at least 1 (got ", batch_size, ")");
  if (workers < 0) fail("workers must be zero (one per CPU) or positive (got ", workers, ")");
}

void check_prompts(const std::vector<std::string>& prompts) {
  for (const auto& p : prompts) utf8_to_u32(p, "prompt");
}

StreamModel load_stream_model(const std::string& model, const ModelSettings& settings,
                              const ImageStream& stream, const StreamCallbacks& callbacks) {
  return stream_model_for(load_clip(model, settings.resolve(true)), settings, stream, callbacks);
}

StreamModel stream_model_for(LoadedClip clip, const ModelSettings& settings, const ImageStream& stream,
                             const StreamCallbacks& callbacks) {
  StreamModel out{std::move(clip), std::nullopt};
  if (!stream.cache.empty()) {
    const ClipConfig& c = out.clip.model->config();
    // What the embeddings depend on besides the file: the family, heads, activations and preprocessing.
    const std::string compute =
        cat(settings.precision, "|", c.transformer_heads, "|", c.vision_heads, "|",
            name_of(kModelFamilies, c.family), "|", c.vision_activation, "|", c.text_activation, "|",
            name_of(kResizeModes, c.preprocess.resize), "|",
            name_of(kInterpolations, c.preprocess.interpolation), "|", c.preprocess.mean[0], ",",
            c.preprocess.mean[1], ",", c.preprocess.mean[2], "|", c.preprocess.std[0], ",",
            c.preprocess.std[1], ",", c.preprocess.std[2], "|fill ", static_cast<int>(c.preprocess.fill));
    out.cache.emplace(stream.cache, model_cache_key(stream.cache, out.clip.path, compute));
  }
  if (callbacks.on_loaded) callbacks.on_loaded(out.clip);
  return out;
}

namespace {

int workers_of(const ImageStream& stream) {
  return stream.workers > 0 ? stream.workers
                            : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace

void stream_images(StreamModel& loaded, const std::vector<std::string>& paths, const ImageStream& stream,
                   const StreamCallbacks& callbacks, size_t& done, size_t total, bool normalize,
                   const std::function<void(const ImageBatch&)>& on_batch) {
  stream_image_features(
      loaded.clip, paths, stream.batch_size, workers_of(stream), normalize,
      [&](const ImageBatch& batch) {
        for (const auto& [path, message] : batch.errors) {
          if (!stream.skip_unreadable) throw Error(message);
          if (callbacks.on_skipped) callbacks.on_skipped(path, message);
        }
        on_batch(batch);
        done += batch.paths.size() + batch.errors.size();
        if (callbacks.on_progress) callbacks.on_progress(done, total);
        if (callbacks.should_stop && callbacks.should_stop()) throw JobStopped();
      },
      loaded.cache ? &*loaded.cache : nullptr);
}

// ---- score ----

void ScoreRequest::validate() const {
  if (model.empty()) fail("no CLIP model to score with");
  clip.check(true);
  stream.validate();
  if (!pairs.empty()) {
    if (!prompts.empty() || !images.empty() || next_images)
      fail("pairs bring their own images and prompts; give pairs, or images and prompts, not both");
    if (metric == Metric::Probs)
      fail("metric probs needs a set of prompts to choose from; it does not apply to pairs");
    for (const auto& [image, prompt] : pairs) check_prompts({prompt});
  } else {
    if (prompts.empty()) fail("no prompts to score against");
    if (images.empty() && !next_images) fail("no images to score");
    check_prompts(prompts);
  }
}

ScoreSummary score(const ScoreRequest& request,
                   const std::function<void(const std::vector<ScoreRow>&)>& on_rows,
                   const StreamCallbacks& callbacks) {
  request.validate();
  // With pairs, the prompts are the pairs' distinct prompts, in order of appearance.
  std::vector<std::string> prompts = request.prompts, images = request.images;
  for (const auto& [image, prompt] : request.pairs) {
    images.push_back(image);
    if (std::find(prompts.begin(), prompts.end(), prompt) == prompts.end()) prompts.push_back(prompt);
  }
  StreamModel loaded = load_stream_model(request.model, request.clip, request.stream, callbacks);
  const torch::Tensor text =
      embed_prompts(loaded.clip, prompts, request.templates, request.truncate);  // [P, E]
  ScoreSummary summary;
  summary.logit_scale = loaded.clip.model->logit_scale_exp().item<double>();
  summary.logit_bias = loaded.clip.model->logit_bias();
  if (request.metric == Metric::Sigmoid && !loaded.clip.model->config().siglip()) {
    fail("metric sigmoid is SigLIP's pairwise probability and needs a SigLIP model (a learned logit bias); ",
         loaded.clip.path, " is a ", loaded.clip.model->config().architecture(),
         " CLIP (use probs or cosine)");
  }
  const auto started = std::chrono::steady_clock::now();
  double cos_sum = 0, clipscore_sum = 0;
  const auto score_batch = [&](const ImageBatch& batch) {
    const torch::Tensor scores = apply_metric(batch.features, text, request.metric, summary.logit_scale,
                                              summary.logit_bias);  // [B, P]
    const torch::Tensor cos = apply_metric(batch.features, text, Metric::Cosine, 0.0);
    const torch::Tensor clipscore = apply_metric(batch.features, text, Metric::ClipScore, 0.0);
    std::vector<ScoreRow> rows;
    for (size_t b = 0; b < batch.paths.size(); ++b) {
      if (request.pairs.empty()) {
        for (size_t p = 0; p < prompts.size(); ++p)
          rows.push_back({batch.paths[b], prompts[p], scores[b][p].item<double>(), batch.positions[b]});
        continue;
      }
      // Pairs: the pairs' images follow request.images in the input list.
      const size_t pair = batch.positions[b] - request.images.size();
      const auto& [image, prompt] = request.pairs.at(pair);
      const int64_t p = std::find(prompts.begin(), prompts.end(), prompt) - prompts.begin();
      cos_sum += cos[b][p].item<double>();
      clipscore_sum += clipscore[b][p].item<double>();
      ++summary.pairs;
      rows.push_back({image, prompt, scores[b][p].item<double>(), pair});
    }
    summary.images += batch.paths.size();
    on_rows(rows);
  };
  size_t done = 0;
  if (!images.empty())
    stream_images(loaded, images, request.stream, callbacks, done, images.size(), true, score_batch);
  if (request.next_images) {
    while (const std::optional<std::vector<std::string>> set = request.next_images()) {
      done = 0;
      stream_images(loaded, *set, request.stream, callbacks, done, set->size(), true, score_batch);
    }
  }
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (summary.pairs > 0) {
    summary.mean_torchmetrics = 100.0 * std::max(cos_sum / summary.pairs, 0.0);
    summary.mean_clipscore = clipscore_sum / summary.pairs;
  }
  return summary;
}

// ---- rerank ----

void RerankRequest::validate() const {
  if (model.empty()) fail("no CLIP model to rank with");
  clip.check(true);
  stream.validate();
  if (top < 0) fail("top must be zero (all) or positive (got ", top, ")");
  if (!copy_to.empty() && !link_to.empty()) fail("give copy_to or link_to, not both");
  if (groups.empty() && !next_group) fail("no images to rank");
  if (next_group && (!copy_to.empty() || !link_to.empty() || !html.empty()))
    fail("a worker ranks only: no copy_to, link_to or html");
  if (next_group && prompts.empty()) fail("no prompt to rank against");
  for (const Group& g : groups) {
    if (g.images.empty()) fail("a group has no images to rank");
    if (g.prompt.empty() && prompts.empty()) fail("no prompt to rank against");
    if (!g.prompt.empty()) check_prompts({g.prompt});
  }
  check_prompts(prompts);
  check_prompts(negatives);
}

void rerank(
    const RerankRequest& request,
    const std::function<void(size_t, const RerankRequest::Group&, const std::vector<RankedImage>&)>& on_group,
    const StreamCallbacks& callbacks) {
  request.validate();
  const std::string target = request.copy_to.empty() ? request.link_to : request.copy_to;
  if (!target.empty()) prepare_output_dir(target);
  if (!request.html.empty()) prepare_output_file(request.html);
  StreamModel loaded = load_stream_model(request.model, request.clip, request.stream, callbacks);
  const torch::Tensor neg = request.negatives.empty() ? torch::Tensor()
                                                      : embed_prompts(loaded.clip, request.negatives,
                                                                      request.templates, request.truncate);
  size_t total = 0, done = 0;
  for (const auto& g : request.groups) total += g.images.size();
  std::vector<ReportEntry> report;
  const auto best_first = [](const std::pair<double, std::string>& a,
                             const std::pair<double, std::string>& b) { return a.first > b.first; };
  const auto top = static_cast<size_t>(request.top);
  // The request's prompts, embedded once for every group that ranks against them (a worker's partitions).
  torch::Tensor shared_text;
  const auto rank_group = [&](size_t g, const RerankRequest::Group& group) {
    if (group.prompt.empty() && !shared_text.defined())
      shared_text = embed_prompts(loaded.clip, request.prompts, request.templates, request.truncate);
    const torch::Tensor text = group.prompt.empty() ? shared_text
                                                    : embed_prompts(loaded.clip, {group.prompt},
                                                                    request.templates, request.truncate);
    std::vector<std::pair<double, std::string>> ranked;
    stream_images(
        loaded, group.images, request.stream, callbacks, done, total, true, [&](const ImageBatch& batch) {
          torch::Tensor score = apply_metric(batch.features, text, Metric::Cosine, 0.0).mean(1);  // [B]
          if (neg.defined()) score = score - apply_metric(batch.features, neg, Metric::Cosine, 0.0).mean(1);
          for (size_t b = 0; b < batch.paths.size(); ++b)
            ranked.emplace_back(score[b].item<double>(), batch.paths[b]);
          // With top, memory stays flat over any number of images: only the best so far are kept. Stable
          // sorting of input-ordered arrivals gives the same ties as one sort at the end.
          if (top > 0 && ranked.size() >= 2 * top + 1024) {
            std::stable_sort(ranked.begin(), ranked.end(), best_first);
            ranked.resize(top);
          }
        });
    std::stable_sort(ranked.begin(), ranked.end(), best_first);
    const size_t keep = top > 0 ? std::min(ranked.size(), top) : ranked.size();
    const int width = static_cast<int>(std::to_string(std::max<size_t>(keep, 1)).size());
    std::vector<RankedImage> rows;
    for (size_t r = 0; r < keep; ++r) {
      RankedImage row{static_cast<int64_t>(r + 1), ranked[r].second, ranked[r].first, ""};
      if (!target.empty()) {
        // Only the file name is used, so no input name can place a file outside the target folder.
        const std::string name = fs::path(row.image).filename().string();
        if (name.empty() || name == "." || name == "..") fail("cannot name a copy of ", row.image);
        char prefix[32];
        if (request.groups.size() == 1 && group.prompt.empty())
          std::snprintf(prefix, sizeof prefix, "%0*zu-", width, r + 1);
        else
          std::snprintf(prefix, sizeof prefix, "g%03zu-%0*zu-", g + 1, width, r + 1);
        const fs::path dest = fs::path(target) / (prefix + name);
        if (!request.copy_to.empty()) {
          copy_file_atomic(row.image, dest.string());
        } else {
          symlink_atomic(fs::absolute(row.image).string(), dest.string());
        }
        row.copy = dest.string();
      }
      report.push_back({row.rank, row.image, row.score, group.prompt});
      rows.push_back(std::move(row));
    }
    on_group(g, group, rows);
  };
  for (size_t g = 0; g < request.groups.size(); ++g) rank_group(g, request.groups[g]);
  if (request.next_group) {
    size_t g = request.groups.size();
    while (const std::optional<RerankRequest::Group> group = request.next_group()) {
      done = 0;
      total = group->images.size();
      rank_group(g++, *group);
    }
  }
  if (!request.html.empty()) {
    ReportInfo info;
    info.prompts = request.prompts;
    info.negatives = request.negatives;
    const ClipConfig& config = loaded.clip.model->config();
    info.model = cat(loaded.clip.path, " (", config.architecture(), config.siglip() ? "" : " CLIP", ")");
    info.metric_definition = kRerankDefinition;
    write_file_atomic(request.html, render_report(info, report));
  }
}

}  // namespace clipguide
