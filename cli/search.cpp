// clipguide index, search and filter: the command lines of jobs/search.h.
#include "jobs/search.h"

#include <cctype>

#include "cli/common.h"
#include "cli/stream_args.h"
#include "prompts/prompt.h"

namespace {

// "4G", "512M", "64k" or a plain number of bytes.
int64_t parse_bytes(const std::string& text, const char* flag) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    cg::fail(flag, " ", text, " is not a size (like 4G, 512M or a number of bytes)");
  }
  const std::string unit = text.substr(used);
  double scale = 1;
  if (unit == "k" || unit == "K")
    scale = 1024.0;
  else if (unit == "m" || unit == "M")
    scale = 1024.0 * 1024;
  else if (unit == "g" || unit == "G")
    scale = 1024.0 * 1024 * 1024;
  else if (unit == "t" || unit == "T")
    scale = 1024.0 * 1024 * 1024 * 1024;
  else if (!unit.empty())
    cg::fail(flag, " ", text, ": unknown unit ", unit, " (k, M, G or T)");
  if (!(value > 0) || value * scale > 9e18) cg::fail(flag, " ", text, " must be a positive size");
  return static_cast<int64_t>(value * scale);
}

}  // namespace

int run_index(int argc, char** argv) {
  ModelArgs model;
  InputArgs in;
  cg::IndexRequest request;
  std::string captions, tasks, max_memory = "16G";
  bool no_index = false, build_only = false, worker = false;
  cxxopts::Options opts(
      "clipguide index",
      "Embed images (and captions) into clip-retrieval's layout in --out (img_emb/, text_emb/, "
      "metadata/), then build a faiss index over them.");
  model.add_to(opts, true);
  in.add_to(opts);
  // clang-format off: one option a line
  opts.add_options()("o,out", "the collection's folder", cxxopts::value(request.out))(
      "captions",
      "a pairs file (CSV image,caption or JSONL {\"image\", \"prompt\"}): the images with their captions",
      cxxopts::value(captions))("output-partition-count",
                                "partitions P: partition i holds the inputs whose index mod P is i",
                                cxxopts::value(request.partitions)->default_value("1"))(
      "tasks", "the partitions this run makes, comma-separated (default: all); existing ones are skipped",
      cxxopts::value(tasks))("max-index-memory", "the most memory the index may take (4G, 512M, ...)",
                             cxxopts::value(max_memory)->default_value("16G"))(
      "target-recall", "recall@10 an approximate index is tuned to",
      cxxopts::value(request.index.target_recall)->default_value("0.95"))(
      "exact-max-rows", "exact search up to this many images; an approximate index above",
      cxxopts::value(request.index.exact_max_rows)->default_value("200000"))(
      "no-index", "write the partitions only", cxxopts::value(no_index))(
      "build-index-only", "build the index over the partitions already in --out (no images)",
      cxxopts::value(build_only))(
      "worker",
      "a long-lived worker: read partition numbers on stdin, one a line, and make each (the model loads "
      "once), printing a JSON line as each is done; no index",
      cxxopts::value(worker));
  // clang-format on
  opts.positional_help("IMAGE_OR_DIR...");
  if (!parse_or_help(opts, argc, argv)) return 0;
  request.index.max_memory_bytes = parse_bytes(max_memory, "--max-index-memory");
  if (request.out.empty()) cg::fail("index: give the collection's folder with --out");
  const auto print_index = [](const char* which, const std::optional<cg::VectorIndexInfo>& info) {
    if (!info) return;
    std::cout << json{{"index", which},
                      {"kind", info->kind},
                      {"factory", info->factory},
                      {"rows", info->rows},
                      {"nprobe", info->nprobe},
                      {"recall_at_10", info->recall_at_10},
                      {"memory_bytes", info->memory_bytes},
                      {"build_seconds", info->build_seconds}}
                     .dump()
              << "\n";
  };
  if (build_only) {
    if (in.has_images() || !captions.empty()) cg::fail("index: --build-index-only takes no images");
    const cg::IndexSummary s = cg::build_collection_index(request.out, request.index);
    print_index("image", s.image_index);
    print_index("text", s.text_index);
    return 0;
  }
  in.validate("index");
  model.default_to_bundled("index");
  request.model = model.model;
  request.clip = model;
  request.truncate = in.truncate;
  request.stream = in.stream();
  request.build_index = !no_index && !worker;
  if (!tasks.empty()) request.tasks = parse_tasks(tasks);
  if (worker) {
    if (!tasks.empty()) cg::fail("index: --worker reads its tasks on stdin; drop --tasks");
    request.next_task = [] { return next_stdin_task(); };
  }
  if (!captions.empty()) {
    if (in.has_images()) cg::fail("index: --captions names the images; drop the image arguments");
    for (const auto& [image, caption] : read_pairs(captions)) {
      request.images.push_back(image);
      request.captions.push_back(caption);
    }
  } else {
    request.images = in.image_files();
  }
  StreamUi ui;
  const cg::StreamCallbacks callbacks = ui.callbacks([](const cg::LoadedClip&) {});
  const cg::IndexSummary s = cg::index_collection(
      request,
      [&](int64_t partition, int64_t rows) {
        json line = {{"partition", partition}};
        if (rows < 0)
          line["present"] = true;
        else
          line["rows"] = rows;
        std::cout << line.dump() << "\n" << std::flush;
      },
      callbacks);
  ui.progress.reset();
  print_index("image", s.image_index);
  print_index("text", s.text_index);
  std::cout << json{{"summary",
                     {{"partitions_written", s.partitions_written},
                      {"partitions_present", s.partitions_present},
                      {"images", s.images},
                      {"skipped", s.skipped},
                      {"seconds", s.seconds},
                      {"images_per_second", s.seconds > 0 ? s.images / s.seconds : 0.0},
                      {"index_built", s.index_built}}}}
                   .dump()
            << "\n";
  return 0;
}

int run_search(int argc, char** argv) {
  ModelArgs model;
  cg::SearchRequest request;
  std::string format;
  cxxopts::Options opts(
      "clipguide search",
      "Search a collection made by clipguide index: the images best matching the prompts and "
      "images, score = mean cos over them - mean cos over the negative prompts.");
  model.add_to(opts, true);
  // clang-format off: one option a line
  opts.add_options()("index", "the collection folder (clipguide index --out)", cxxopts::value(request.index))(
      "p,prompt", "a text query; repeatable", cxxopts::value(request.prompts))(
      "image", "an image query; repeatable", cxxopts::value(request.images))(
      "negative", "a prompt the results should not fit; repeatable", cxxopts::value(request.negatives))(
      "top", "results to print", cxxopts::value(request.top)->default_value("10"))(
      "dedup", "fold near-duplicates (cosine above this, e.g. 0.94) into the best of them",
      cxxopts::value(request.dedup)->default_value("0"))(
      "truncate", "truncate prompts longer than the context length instead of failing",
      cxxopts::value(request.truncate))(
      "format", "table, csv, jsonl or json (default: table on a terminal, else jsonl)",
      cxxopts::value(format))("html", "write the results as a self-contained HTML report",
                              cxxopts::value(request.html));
  // clang-format on
  if (!parse_or_help(opts, argc, argv)) return 0;
  if (format.empty()) format = ::isatty(STDOUT_FILENO) ? "table" : "jsonl";
  if (format != "table" && format != "csv" && format != "jsonl" && format != "json")
    cg::fail("search: --format ", format, " is not one of table, csv, jsonl, json");
  if (request.index.empty()) cg::fail("search: give the collection folder with --index");
  request.model = model.model;
  request.clip = model;
  const std::vector<cg::SearchHit> hits = cg::search_collection(request);
  RowWriter out(format,
                json{{"index", request.index}, {"metric", "cosine"}, {"definition", cg::kRerankDefinition}});
  out.begin({"rank", "score", "image", "caption", "duplicates"});
  for (const cg::SearchHit& h : hits) {
    json row = {{"rank", h.rank}, {"image", h.image}, {"score", h.score}};
    if (!h.caption.empty()) row["caption"] = h.caption;
    if (request.dedup > 0) row["duplicates"] = h.duplicates;
    out.row(row);
  }
  out.end_batch();
  out.end(json());
  return 0;
}

int run_filter(int argc, char** argv) {
  ModelArgs model;
  InputArgs in;
  cg::FilterRequest request;
  std::vector<std::string> deny;
  std::string deny_file;
  double threshold = 0.25;
  cxxopts::Options opts("clipguide filter",
                        "Flag images close to denied concepts (cos(image, concept) above its threshold) or "
                        "flagged by Stable Diffusion's safety checker. Exit status: 0 nothing flagged, 3 "
                        "something flagged, 1 an error.");
  model.several_devices = true;
  model.add_to(opts, true);
  in.add_to(opts);
  // clang-format off: one option a line
  opts.add_options()("deny", "a denied concept, TEXT or TEXT:THRESHOLD; repeatable", cxxopts::value(deny))(
      "deny-file", "denied concepts, one TEXT or TEXT:THRESHOLD per line", cxxopts::value(deny_file))(
      "threshold", "the cosine above which an image is flagged, for concepts without their own",
      cxxopts::value(threshold)->default_value("0.25"))(
      "safety-checker", "a diffusers StableDiffusionSafetyChecker folder (config.json + weights)",
      cxxopts::value(request.safety_checker))(
      "move-to", "move flagged images into this folder (never overwriting a file there)",
      cxxopts::value(request.move_to));
  // clang-format on
  opts.positional_help("IMAGE_OR_DIR...");
  if (!parse_or_help(opts, argc, argv)) return 0;
  in.validate("filter");
  if (!deny_file.empty())
    for (const std::string& line : read_lines(deny_file, kMaxListBytes))
      if (line.find_first_not_of(" \t") != std::string::npos) deny.push_back(line);
  for (const std::string& spec : deny) {
    auto [text, numbers] = cg::split_trailing_numbers(spec, 1);
    request.deny.push_back({text, numbers.empty() ? threshold : numbers[0]});
  }
  if (!request.deny.empty()) model.default_to_bundled("filter");
  request.model = model.model;
  request.clip = model;
  request.truncate = in.truncate;
  request.stream = in.stream();
  request.images = in.image_files();
  std::unique_ptr<RowWriter> out;
  const auto make_writer = [&] {
    if (out) return;
    out = std::make_unique<RowWriter>(
        in.format,
        json{{"metric", "margin"}, {"definition", "cos(image, concept) - threshold; above 0 is flagged"}});
    out->begin({"flagged", "margin", "concept", "image", "moved_to"});
  };
  StreamUi ui;
  cg::StreamCallbacks callbacks = ui.callbacks([&](const cg::LoadedClip&) { make_writer(); });
  const cg::FilterSummary s = cg::filter_images(
      request,
      [&](const std::vector<cg::FilterRow>& rows) {
        make_writer();
        for (const cg::FilterRow& r : rows) {
          json row = {{"image", r.image},
                      {"flagged", r.flagged},
                      {"concept", r.nearest_concept},
                      {"margin", r.margin}};
          if (!r.moved_to.empty()) row["moved_to"] = r.moved_to;
          out->row(row);
        }
        out->end_batch();
      },
      callbacks);
  ui.progress.reset();
  make_writer();
  out->end(json{{"images", s.images}, {"flagged", s.flagged}});
  return s.flagged > 0 ? 3 : 0;
}
