// What the commands that stream images share (score, rerank, index, search, filter): the input and stream
// options, pairs files, the row writer (table, csv, jsonl, json) and the progress, skip and Ctrl-C handling.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cli/common.h"
#include "clip/text_clean.h"
#include "jobs/score.h"

using nlohmann::json;
namespace fs = std::filesystem;

inline constexpr size_t kMaxListBytes = 256u << 20;

// Options shared by score and rerank.
struct InputArgs {
  std::vector<std::string> inputs, prompts, templates;
  std::string prompts_file, pairs_file, images_from, format, on_error = "fail", cache_dir;
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
        cxxopts::value(cache_dir))(
        "images-from",
        "a text file of image files and folders, one a line (relative to the file's folder), after the "
        "arguments",
        cxxopts::value(images_from))("inputs", "image files and folders", cxxopts::value(inputs));
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
  }
  // Checks this command's own options and fills the fields score and rerank requests share.
  template <class Request>
  void fill(Request& request, ModelArgs& model, const char* command) {
    validate(command);
    model.default_to_bundled(command);
    request.model = model.model;
    request.clip = model;
    request.prompts = all_prompts();
    request.templates = templates;
    request.truncate = truncate;
    request.stream = stream();
  }
  cg::ImageStream stream() const {
    cg::ImageStream out;
    out.batch_size = batch_size;
    out.workers = workers;
    out.skip_unreadable = on_error == "skip";
    out.cache = cache_dir;
    return out;
  }
  bool has_images() const { return !inputs.empty() || !images_from.empty(); }
  // The images of the arguments and --images-from, folders expanded, in order.
  std::vector<std::string> image_files() const {
    std::vector<std::string> all = inputs;
    if (!images_from.empty()) {
      const fs::path base = fs::path(images_from).parent_path();
      for (const std::string& line : read_lines(images_from, kMaxListBytes)) {
        if (line.find_first_not_of(" \t") == std::string::npos) continue;
        all.push_back(fs::path(line).is_absolute() ? line : (base / line).string());
      }
    }
    return cg::collect_image_files(all);
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

// A partition number: the whole of `text`, or nullopt.
inline std::optional<int64_t> parse_partition(const std::string& text) {
  size_t used = 0;
  int64_t t = -1;
  try {
    t = std::stoll(text, &used);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  if (used != text.size()) return std::nullopt;
  return t;
}

// Partition numbers, comma-separated (--tasks 3,7,11).
inline std::vector<int64_t> parse_tasks(const std::string& text) {
  std::vector<int64_t> out;
  for (const std::string& piece : cg::split(text, ',')) {
    const std::optional<int64_t> t = parse_partition(piece);
    if (!t) cg::fail("--tasks ", text, ": ", piece, " is not a partition number");
    out.push_back(*t);
  }
  return out;
}

// A worker's next task (index, score and rerank --worker): the next non-blank line of stdin, one partition
// number; nullopt at the end of input.
inline std::optional<int64_t> next_stdin_task() {
  for (std::string line; std::getline(std::cin, line);) {
    const size_t first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos) continue;
    const std::string text = line.substr(first, line.find_last_not_of(" \t\r") + 1 - first);
    const std::optional<int64_t> task = parse_partition(text);
    if (!task) cg::fail("--worker: ", text, " on stdin is not one partition number");
    return task;
  }
  return std::nullopt;
}

// (image, prompt) pairs from a CSV (image,prompt; an "image,prompt" header is skipped; RFC 4180 quoting) or a
// JSONL file ({"image": ..., "prompt": ...} per line). Relative image paths are taken from the file's folder.
inline std::vector<std::pair<std::string, std::string>> read_pairs(const std::string& path) {
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

inline std::string csv_field(const std::string& s) {
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
// The command line's side of a job's stream: Ctrl-C from the first image on, a progress bar, skipped images
// said on stderr.
struct StreamUi {
  std::unique_ptr<InterruptScope> interrupt;
  std::unique_ptr<Progress> progress;
  size_t shown = 0;

  cg::StreamCallbacks callbacks(std::function<void(const cg::LoadedClip&)> on_loaded) {
    cg::StreamCallbacks c;
    c.on_loaded = [this, on_loaded](const cg::LoadedClip& clip) {
      interrupt = std::make_unique<InterruptScope>();
      on_loaded(clip);
    };
    c.on_progress = [this](size_t done, size_t total) {
      if (!progress) progress = std::make_unique<Progress>(total, "images");
      progress->advance(done - shown);
      shown = done;
    };
    c.on_skipped = [](const std::string& path, const std::string& message) {
      cg::warn("clipguide: skipped ", path, ": ", message);
    };
    c.should_stop = [] { return InterruptScope::requested(); };
    return c;
  }
};
