// clipguide score and clipguide rerank.
#include "clip/score.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "cli/common.h"
#include "clip/text_clean.h"
#include "jobs/report.h"

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxListBytes = 256u << 20;

// Options shared by score and rerank.
struct InputArgs {
  std::vector<std::string> inputs, prompts, templates;
  std::string prompts_file, pairs_file, format, on_error = "fail", cache_dir;
  int64_t batch_size = 32;
  int workers = 0;
  bool truncate = false;

  void add_to(cxxopts::Options& opts) {
    // clang-format off: one option a line
    opts.add_options()("p,prompt", "a prompt; repeatable", cxxopts::value(prompts))(
        "prompts-file", "prompts, one per line", cxxopts::value(prompts_file))(
        "template",
        "a prompt template with {} (e.g. \"a photo of {}\"); repeatable: each prompt's "
        "embedding is the mean of its normalized template embeddings",
        cxxopts::value(templates))("truncate",
                                   "truncate prompts longer than the context length instead of failing",
                                   cxxopts::value(truncate))(
        "format", "table, csv, jsonl or json (default: table on a terminal, else jsonl)",
        cxxopts::value(format))("batch-size", "images per forward pass",
                                cxxopts::value(batch_size)->default_value("32"))(
        "workers", "image decoding threads (default: the number of CPUs)", cxxopts::value(workers))(
        "on-error", "an image that cannot be read: fail (exit 1) or skip (report it on stderr and go on)",
        cxxopts::value(on_error)->default_value("fail"))(
        "cache",
        "keep image embeddings in this folder, keyed by image content and model, so later runs on "
        "the same images do not re-encode them",
        cxxopts::value(cache_dir))("inputs", "image files and folders", cxxopts::value(inputs));
    // clang-format on
    opts.parse_positional({"inputs"});
  }
  void validate(const char* command) {
    if (format.empty()) format = ::isatty(STDOUT_FILENO) ? "table" : "jsonl";
    if (format != "table" && format != "csv" && format != "jsonl" && format != "json") {
      cg::fail(command, ": --format ", format, " is not one of table, csv, jsonl, json");
    }
    if (on_error != "fail" && on_error != "skip")
      cg::fail(command, ": --on-error ", on_error, " is not one of fail, skip");
    if (batch_size < 1) cg::fail(command, ": --batch-size must be at least 1");
    if (workers < 0) cg::fail(command, ": --workers must be positive");
    if (workers == 0) workers = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  // The embedding cache for this model and compute setup, if --cache was given.
  std::optional<cg::EmbeddingCache> open_cache(const cg::LoadedClip& clip, const ModelArgs& model) const {
    if (cache_dir.empty()) return std::nullopt;
    const cg::ClipConfig& c = clip.model->config();
    const std::string compute = cg::cat(model.precision, "|", c.transformer_heads, "|", c.vision_heads);
    return cg::EmbeddingCache(cache_dir, cg::model_cache_key(cache_dir, clip.path, compute));
  }
  std::vector<std::string> all_prompts() const {
    std::vector<std::string> out = prompts;
    if (!prompts_file.empty()) {
      const std::vector<std::string> lines = read_lines(prompts_file, kMaxListBytes);
      out.insert(out.end(), lines.begin(), lines.end());
    }
    return out;
  }
};

// (image, prompt) pairs from a CSV (image,prompt; an "image,prompt" header is skipped; RFC 4180 quoting) or a
// JSONL file ({"image": ..., "prompt": ...} per line). Relative image paths are taken from the file's folder.
std::vector<std::pair<std::string, std::string>> read_pairs(const std::string& path) {
  const std::string text = cg::read_small_file(path, kMaxListBytes);
  const fs::path base = fs::path(path).parent_path();
  auto resolve = [&](const std::string& image) {
    return fs::path(image).is_absolute() ? image : (base / image).string();
  };
  std::vector<std::pair<std::string, std::string>> pairs;
  size_t pos = 0, line_no = 0;
  const bool jsonl = text.find_first_not_of(" \t\r\n") != std::string::npos &&
                     text[text.find_first_not_of(" \t\r\n")] == '{';
  while (pos < text.size()) {
    ++line_no;
    if (jsonl) {
      size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      const std::string line = text.substr(pos, end - pos);
      pos = end + 1;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      json row;
      try {
        row = json::parse(line);
      } catch (const json::exception& e) {
        cg::fail(path, ":", line_no, ": not valid JSON (", e.what(), ")");
      }
      if (!row.is_object() || !row.contains("image") || !row.contains("prompt") ||
          !row["image"].is_string() || !row["prompt"].is_string()) {
        cg::fail(path, ":", line_no, ": expected {\"image\": \"...\", \"prompt\": \"...\"}");
      }
      pairs.emplace_back(resolve(row["image"].get<std::string>()), row["prompt"].get<std::string>());
      continue;
    }
    // One CSV record, possibly spanning lines inside quotes.
    std::vector<std::string> fields(1);
    bool quoted = false;
    for (; pos < text.size(); ++pos) {
      const char c = text[pos];
      if (quoted) {
        if (c == '"' && pos + 1 < text.size() && text[pos + 1] == '"') {
          fields.back() += '"';
          ++pos;
        } else if (c == '"') {
          quoted = false;
        } else {
          fields.back() += c;
        }
      } else if (c == '"') {
        quoted = true;
      } else if (c == ',') {
        fields.emplace_back();
      } else if (c == '\n') {
        ++pos;
        break;
      } else if (c != '\r') {
        fields.back() += c;
      }
    }
    if (quoted) cg::fail(path, ":", line_no, ": unterminated quote");
    if (fields.size() == 1 && fields[0].empty()) continue;
    if (fields.size() != 2)
      cg::fail(path, ":", line_no, ": expected 2 fields (image,prompt), found ", fields.size());
    if (pairs.empty() && fields[0] == "image" && fields[1] == "prompt") continue;
    pairs.emplace_back(resolve(fields[0]), fields[1]);
  }
  if (pairs.empty()) cg::fail(path, ": no image,prompt pairs");
  return pairs;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

// Writes rows in the chosen format as they finish (json: one document at the end). A table is aligned: its
// columns are as wide as the widest cell of the first batch (or a reserve()d value), numbers right-aligned
// with fixed decimals, text left-aligned; a later cell too wide for its column is cut in the middle with "…".
// The last column is never padded or cut.
class RowWriter {
 public:
  RowWriter(std::string format, json header) : format_(std::move(format)), header_(std::move(header)) {}

  void begin(const std::vector<std::string>& columns) {
    columns_ = columns;
    widths_.assign(columns_.size(), 0);
    numeric_.assign(columns_.size(), false);
    if (format_ == "table") {
      std::cout << "# metric: " << cell_text(header_.value("metric", "")) << " = "
                << cell_text(header_.value("definition", "")) << "\n";
    } else if (format_ == "csv") {
      for (size_t i = 0; i < columns_.size(); ++i) std::cout << (i ? "," : "") << columns_[i];
      std::cout << "\n";
    }
  }
  // Widens a table column to hold `example` (the largest value it will get, known before the first row).
  void reserve(const std::string& column, const json& example) {
    const size_t i = std::find(columns_.begin(), columns_.end(), column) - columns_.begin();
    if (i < columns_.size()) widths_[i] = std::max(widths_[i], cg::display_width(cell(example)));
  }
  void row(const json& r) {
    if (format_ == "json") {
      rows_.push_back(r);
    } else if (format_ == "jsonl") {
      std::cout << r.dump() << "\n" << std::flush;
    } else if (format_ == "csv") {
      for (size_t i = 0; i < columns_.size(); ++i)
        std::cout << (i ? "," : "") << csv_field(raw_text(field(r, i)));
      std::cout << "\n" << std::flush;
    } else if (sized_) {
      print_table_row(r);
    } else {
      pending_.push_back(r);
    }
  }
  // A batch is done: the first one sizes the table's columns.
  void end_batch() {
    if (format_ != "table" || sized_) return;
    sized_ = true;
    for (size_t i = 0; i < columns_.size(); ++i) {
      widths_[i] = std::max(widths_[i], cg::display_width(columns_[i]));
      for (const json& r : pending_) {
        numeric_[i] = numeric_[i] || field(r, i).is_number();
        widths_[i] = std::max(widths_[i], cg::display_width(cell(field(r, i))));
      }
      if (!numeric_[i])
        widths_[i] = std::min(widths_[i], std::max(kMaxTextColumn, cg::display_width(columns_[i])));
    }
    std::vector<std::string> header(columns_.begin(), columns_.end());
    print_cells(header);
    for (const json& r : pending_) print_table_row(r);
    pending_.clear();
  }
  void end(const json& summary) {
    end_batch();
    if (format_ == "json") {
      json doc = header_;
      doc["rows"] = rows_;
      if (!summary.is_null()) doc["summary"] = summary;
      std::cout << doc.dump(2) << "\n";
    } else if (!summary.is_null()) {
      if (format_ == "jsonl")
        std::cout << json{{"summary", summary}}.dump() << "\n";
      else
        std::cerr << "summary: " << summary.dump() << "\n";
    }
    std::cout << std::flush;
  }

 private:
  static constexpr size_t kMaxTextColumn = 60;  // columns; a longer path is cut in the middle

  const json& field(const json& r, size_t i) const {
    static const json missing;
    return r.contains(columns_[i]) ? r[columns_[i]] : missing;
  }
  static std::string raw_text(const json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }
  // Text for a terminal: control characters and invalid UTF-8 escaped (no length cut: the table cuts).
  static std::string cell_text(const std::string& s) { return cg::quote_untrusted(s, std::string::npos); }
  static std::string cell(const json& v) {
    if (v.is_number_float()) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.4f", v.get<double>());
      return buf;
    }
    return v.is_null() ? "" : cell_text(raw_text(v));
  }
  void print_table_row(const json& r) {
    std::vector<std::string> cells;
    for (size_t i = 0; i < columns_.size(); ++i) cells.push_back(cell(field(r, i)));
    print_cells(cells);
  }
  void print_cells(std::vector<std::string>& cells) {
    std::string line;
    for (size_t i = 0; i < cells.size(); ++i) {
      const bool last = i + 1 == cells.size();
      if (!last) cells[i] = cg::fit_width_middle(cells[i], widths_[i]);
      const std::string pad(last ? 0 : widths_[i] - std::min(widths_[i], cg::display_width(cells[i])), ' ');
      if (i) line += "  ";
      line += numeric_[i] ? pad + cells[i] : (last ? cells[i] : cells[i] + pad);
    }
    std::cout << line << "\n" << std::flush;
  }

  std::string format_;
  json header_;
  std::vector<std::string> columns_;
  std::vector<size_t> widths_;
  std::vector<bool> numeric_;
  bool sized_ = false;
  std::vector<json> pending_;  // a table's first batch, until its widths are known
  std::vector<json> rows_;
};

// After each batch: errors reported (or fatal), progress drawn, Ctrl-C honoured.
void after_batch(const cg::ImageBatch& batch, Progress& progress) {
  progress.advance(batch.paths.size() + batch.errors.size());
  InterruptScope::check();
}

void report_errors(const cg::ImageBatch& batch, bool skip) {
  for (const auto& [path, message] : batch.errors) {
    if (!skip) throw cg::Error(message);
    cg::warn("clipguide: skipped ", path, ": ", message);
  }
}

}  // namespace

int run_score(int argc, char** argv) {
  ModelArgs model;
  InputArgs in;
  std::string metric_name = "cosine";
  bool stats = false;
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
      "cosine: cos(image, text) in [-1, 1]; logit: exp(logit_scale) * cos (100 * cos for OpenAI "
      "models); clipscore: 2.5 * max(cos, 0) (Hessel et al. 2021); probs: softmax over the "
      "prompts (zero-shot)",
      cxxopts::value(metric_name)->default_value("cosine"))(
      "stats",
      "print one JSON line on stderr: images scored, seconds and images/s of the image pipeline "
      "(decode, preprocess, encode, score; model loading excluded)",
      cxxopts::value(stats));
  // clang-format on
  opts.positional_help("IMAGE_OR_DIR...");
  if (!parse_or_help(opts, argc, argv)) return 0;
  in.validate("score");
  const cg::Metric metric = cg::parse_metric(metric_name);
  model.default_to_bundled("score");
  std::vector<std::pair<std::string, std::string>> pairs;
  std::vector<std::string> prompts = in.all_prompts(), images;
  if (!in.pairs_file.empty()) {
    if (!prompts.empty() || !in.inputs.empty())
      cg::fail("score: --pairs takes its images and prompts from the file; drop -p and inputs");
    if (metric == cg::Metric::Probs)
      cg::fail("score: --metric probs needs a set of prompts to choose from; it does not apply to --pairs");
    pairs = read_pairs(in.pairs_file);
    for (const auto& p : pairs) {
      images.push_back(p.first);
      if (std::find(prompts.begin(), prompts.end(), p.second) == prompts.end()) prompts.push_back(p.second);
    }
  } else {
    if (prompts.empty()) cg::fail("score: give prompts with -p or --prompts-file (or --pairs)");
    images = cg::collect_image_files(in.inputs);
    if (images.empty()) cg::fail("score: no images given");
  }
  for (const auto& p : prompts) cg::utf8_to_u32(p, "prompt");
  cg::LoadedClip clip = cg::load_clip(model.model, model.load_options());
  const torch::Tensor text = cg::embed_prompts(clip, prompts, in.templates, in.truncate);  // [P, E]
  const double logit_scale = clip.model->logit_scale_exp().item<double>();
  const std::optional<cg::EmbeddingCache> cache = in.open_cache(clip, model);
  RowWriter out(in.format, {{"model", clip.path},
                            {"metric", cg::metric_name(metric)},
                            {"definition", cg::metric_definition(metric)}});
  out.begin({"score", "image", "prompt", "metric"});
  out.reserve("score", metric == cg::Metric::Logit ? -logit_scale : -1.0);  // the widest a score can print
  InterruptScope interrupt;
  Progress progress(images.size(), "images");
  const auto started = std::chrono::steady_clock::now();
  size_t streamed = 0;
  double cos_sum = 0, clipscore_sum = 0;
  size_t index = 0, scored = 0;
  cg::stream_image_features(
      clip, images, in.batch_size, in.workers, true,
      [&](const cg::ImageBatch& batch) {
        report_errors(batch, in.on_error == "skip");
        const torch::Tensor scores = cg::apply_metric(batch.features, text, metric, logit_scale);   // [B, P]
        const torch::Tensor cos = cg::apply_metric(batch.features, text, cg::Metric::Cosine, 0.0);  // [B, P]
        const torch::Tensor clipscore = cg::apply_metric(batch.features, text, cg::Metric::ClipScore, 0.0);
        for (size_t b = 0; b < batch.paths.size(); ++b) {
          if (pairs.empty()) {
            for (size_t p = 0; p < prompts.size(); ++p) {
              out.row({{"image", batch.paths[b]},
                       {"prompt", prompts[p]},
                       {"score", scores[b][p].item<double>()},
                       {"metric", cg::metric_name(metric)}});
            }
            continue;
          }
          // Pairs: the batch keeps input order minus failures; find this image's pair from the running index.
          while (index < pairs.size() && pairs[index].first != batch.paths[b]) ++index;
          const auto& [image, prompt] = pairs.at(index++);
          const int64_t p = std::find(prompts.begin(), prompts.end(), prompt) - prompts.begin();
          cos_sum += cos[b][p].item<double>();
          clipscore_sum += clipscore[b][p].item<double>();
          ++scored;
          out.row({{"image", image},
                   {"prompt", prompt},
                   {"score", scores[b][p].item<double>()},
                   {"metric", cg::metric_name(metric)}});
        }
        streamed += batch.paths.size();
        out.end_batch();
        after_batch(batch, progress);
      },
      cache ? &*cache : nullptr);
  if (stats) {
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::cerr << json{{"images", streamed},
                      {"seconds", seconds},
                      {"images_per_s", streamed / seconds},
                      {"threads", torch::get_num_threads()},
                      {"precision", model.precision}}
                     .dump()
              << "\n";
  }
  json summary;
  if (!pairs.empty() && scored > 0) {
    summary = {
        {"pairs", scored},
        {"mean_torchmetrics", 100.0 * std::max(cos_sum / scored, 0.0)},
        {"mean_torchmetrics_definition", "100 * max(mean over pairs of cos, 0): torchmetrics CLIPScore"},
        {"mean_clipscore", clipscore_sum / scored},
        {"mean_clipscore_definition",
         "mean over pairs of 2.5 * max(cos, 0): per-sample clamped, Hessel et al. 2021"}};
  }
  out.end(summary);
  return 0;
}

int run_rerank(int argc, char** argv) {
  ModelArgs model;
  InputArgs in;
  std::vector<std::string> negatives;
  std::string copy_to, link_to, group_by, html;
  int64_t top = 0;
  cxxopts::Options opts("clipguide rerank",
                        "Rank images best first by how well they fit the prompt(s): score = mean "
                        "cos over the prompts - mean cos over the negative prompts.");
  model.several_devices = true;
  model.add_to(opts, true);
  in.add_to(opts);
  // clang-format off: one option a line
  opts.add_options()("negative", "a prompt the images should not fit; repeatable", cxxopts::value(negatives))(
      "top", "keep the best K (per group with --group-by)", cxxopts::value(top))(
      "copy-to", "copy the kept images into this folder as RANK-NAME", cxxopts::value(copy_to))(
      "link-to", "symlink the kept images into this folder as RANK-NAME", cxxopts::value(link_to))(
      "group-by", "a pairs file (CSV image,prompt or JSONL): rank best-of-N within each prompt's images",
      cxxopts::value(group_by))(
      "html", "write a self-contained HTML report (thumbnails, scores as bars, prompts, model, metric)",
      cxxopts::value(html));
  // clang-format on
  opts.positional_help("IMAGE_OR_DIR...");
  if (!parse_or_help(opts, argc, argv)) return 0;
  in.validate("rerank");
  model.default_to_bundled("rerank");
  if (top < 0) cg::fail("rerank: --top must be positive");
  if (!copy_to.empty() && !link_to.empty()) cg::fail("rerank: give --copy-to or --link-to, not both");
  // Groups: each a prompt and its images. Without --group-by, one group of all images against -p.
  struct Group {
    std::string prompt;
    std::vector<std::string> images;
  };
  std::vector<Group> groups;
  std::vector<std::string> prompts = in.all_prompts();
  if (!group_by.empty()) {
    if (!prompts.empty() || !in.inputs.empty())
      cg::fail("rerank: --group-by takes images and prompts from the file; drop -p and inputs");
    for (const auto& pair : read_pairs(group_by)) {
      const std::string& prompt =
          pair.second;  // not a structured binding: lambdas cannot capture those in C++17
      auto it =
          std::find_if(groups.begin(), groups.end(), [&](const Group& g) { return g.prompt == prompt; });
      if (it == groups.end()) it = groups.insert(groups.end(), Group{prompt, {}});
      it->images.push_back(pair.first);
    }
  } else {
    if (prompts.empty()) cg::fail("rerank: give the prompt with -p (or --prompts-file, or --group-by)");
    groups.push_back({"", cg::collect_image_files(in.inputs)});
    if (groups[0].images.empty()) cg::fail("rerank: no images given");
  }
  const std::string target = copy_to.empty() ? link_to : copy_to;
  if (!target.empty()) cg::prepare_output_dir(target);
  if (!html.empty()) cg::prepare_output_file(html);
  cg::LoadedClip clip = cg::load_clip(model.model, model.load_options());
  const torch::Tensor neg =
      negatives.empty() ? torch::Tensor() : cg::embed_prompts(clip, negatives, in.templates, in.truncate);
  const std::optional<cg::EmbeddingCache> cache = in.open_cache(clip, model);
  const char* const definition = "mean cos(image, prompt) - mean cos(image, negative prompt)";
  RowWriter out(in.format, {{"model", clip.path}, {"metric", "cosine"}, {"definition", definition}});
  std::vector<cg::ReportEntry> report;
  InterruptScope interrupt;
  size_t total_images = 0;
  for (const Group& g : groups) total_images += g.images.size();
  Progress progress(total_images, "images");
  out.begin(group_by.empty() ? std::vector<std::string>{"rank", "score", "image"}
                             : std::vector<std::string>{"group", "rank", "score", "image", "prompt"});
  size_t largest_group = 0;
  for (const Group& g : groups) largest_group = std::max(largest_group, g.images.size());
  out.reserve("group", groups.size());
  out.reserve("rank", top > 0 ? std::min<size_t>(largest_group, static_cast<size_t>(top)) : largest_group);
  out.reserve("score", -2.0);  // mean cos minus mean cos
  const auto best_first = [](const std::pair<double, std::string>& a,
                             const std::pair<double, std::string>& b) { return a.first > b.first; };
  for (size_t g = 0; g < groups.size(); ++g) {
    const torch::Tensor text =
        cg::embed_prompts(clip, group_by.empty() ? prompts : std::vector<std::string>{groups[g].prompt},
                          in.templates, in.truncate);
    std::vector<std::pair<double, std::string>> ranked;
    cg::stream_image_features(
        clip, groups[g].images, in.batch_size, in.workers, true,
        [&](const cg::ImageBatch& batch) {
          report_errors(batch, in.on_error == "skip");
          torch::Tensor score =
              cg::apply_metric(batch.features, text, cg::Metric::Cosine, 0.0).mean(1);  // [B]
          if (neg.defined())
            score = score - cg::apply_metric(batch.features, neg, cg::Metric::Cosine, 0.0).mean(1);
          for (size_t b = 0; b < batch.paths.size(); ++b)
            ranked.emplace_back(score[b].item<double>(), batch.paths[b]);
          // With --top, memory stays flat over any number of images: only the best so far are kept. Stable
          // sorting of input-ordered arrivals gives the same ties as one sort at the end.
          if (top > 0 && ranked.size() >= 2 * static_cast<size_t>(top) + 1024) {
            std::stable_sort(ranked.begin(), ranked.end(), best_first);
            ranked.resize(static_cast<size_t>(top));
          }
          after_batch(batch, progress);
        },
        cache ? &*cache : nullptr);
    std::stable_sort(ranked.begin(), ranked.end(), best_first);
    const size_t keep = top > 0 ? std::min(ranked.size(), static_cast<size_t>(top)) : ranked.size();
    const int width = static_cast<int>(std::to_string(std::max<size_t>(keep, 1)).size());
    for (size_t r = 0; r < keep; ++r) {
      json row = {{"rank", r + 1}, {"image", ranked[r].second}, {"score", ranked[r].first}};
      if (!group_by.empty()) {
        row["group"] = g + 1;
        row["prompt"] = groups[g].prompt;
      }
      if (!target.empty()) {
        // Only the file name is used, so no input name can place a file outside the target folder.
        const std::string name = fs::path(ranked[r].second).filename().string();
        if (name.empty() || name == "." || name == "..")
          cg::fail("rerank: cannot name a copy of '", ranked[r].second, "'");
        char prefix[32];
        if (group_by.empty())
          std::snprintf(prefix, sizeof prefix, "%0*zu-", width, r + 1);
        else
          std::snprintf(prefix, sizeof prefix, "g%03zu-%0*zu-", g + 1, width, r + 1);
        const fs::path dest = fs::path(target) / (prefix + name);
        if (!copy_to.empty()) {
          cg::copy_file_atomic(ranked[r].second, dest.string());
        } else {
          cg::symlink_atomic(fs::absolute(ranked[r].second).string(), dest.string());
        }
        row["copy"] = dest.string();
      }
      out.row(row);
      report.push_back({static_cast<int64_t>(r + 1), ranked[r].second, ranked[r].first, groups[g].prompt});
    }
    out.end_batch();
  }
  out.end(json());
  if (!html.empty()) {
    cg::ReportInfo info;
    info.prompts = prompts;
    info.negatives = negatives;
    info.model = clip.path + " (" + clip.model->config().architecture() + ")";
    info.metric_definition = definition;
    cg::write_file_atomic(html, cg::render_report(info, report));
  }
  return 0;
}
