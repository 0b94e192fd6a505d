// The clipguide command line: thin commands over the library. Each fills a params struct from cxxopts,
// validates it, and makes one library call.
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "clip/embed.h"
#include "clip/load.h"
#include "clip/tokenizer.h"
#include "core/device.h"
#include "core/error.h"
#include "core/file_io.h"
#include "io/npy.h"
#include "io/safetensors.h"
#include "io/sha256.h"
#include "jobs/score.h"

using nlohmann::json;

namespace {

constexpr size_t kMaxTextFileBytes = 64u << 20;

const char* const kUsage =
    "usage: clipguide <command> [options]\n"
    "\n"
    "commands:\n"
    "  score      score images against prompts (cosine, logit, clipscore, probs)\n"
    "  rerank     rank images by how well they fit a prompt\n"
    "  generate   make an image that fits a prompt (VQGAN or pixels, guided by CLIP)\n"
    "  embed      embed images and texts with a CLIP model\n"
    "  index      embed a collection of images into clip-retrieval's layout and a faiss index\n"
    "  search     find the images of an indexed collection that best fit prompts or images\n"
    "  filter     flag images close to denied concepts or by Stable Diffusion's safety checker\n"
    "  tokenize   print CLIP token ids\n"
    "  info       describe a CLIP checkpoint\n"
    "\n"
    "Run `clipguide <command> --help` for a command's options.\n";

json row_json(const torch::Tensor& row) {
  const float* p = row.data_ptr<float>();
  return json(std::vector<float>(p, p + row.numel()));
}

// ---- embed ----

struct EmbedParams {
  ModelArgs model;
  std::string format = "jsonl", out;
  std::vector<std::string> images, texts;
  cg::EmbedOptions options;

  void validate() const {
    if (images.empty() && texts.empty())
      cg::fail("embed: nothing to embed; give --image FILE and/or --text STR");
    if (format != "jsonl" && format != "npy" && format != "safetensors") {
      cg::fail("embed: --format ", format, " is not one of jsonl, npy, safetensors");
    }
    if (format != "jsonl" && (out.empty() || out == "-"))
      cg::fail("embed: --format ", format, " needs --out FILE");
    if (options.batch_size < 1) cg::fail("embed: --batch-size must be at least 1");
  }
};

int run_embed(int argc, char** argv) {
  EmbedParams p;
  cxxopts::Options opts("clipguide embed", "Embed images and texts with a CLIP model.");
  p.model.several_devices = true;
  p.model.add_to(opts, true);
  // clang-format off: one option a line
  opts.add_options()("image", "an image file (PNG or JPEG); repeatable", cxxopts::value(p.images))(
      "text", "a text; repeatable", cxxopts::value(p.texts))("normalize", "L2-normalize the embeddings",
                                                             cxxopts::value(p.options.normalize))(
      "truncate", "truncate texts longer than the context length instead of failing",
      cxxopts::value(p.options.truncate))(
      "format",
      "jsonl (one {type, input, embedding} object per line), npy (images then texts, one matrix), "
      "or safetensors (image_embeddings, text_embeddings)",
      cxxopts::value(p.format))("o,out", "output file (default: stdout, jsonl only); written atomically",
                                cxxopts::value(p.out))(
      "batch-size", "inputs per forward pass", cxxopts::value(p.options.batch_size)->default_value("32"));
  // clang-format on
  if (!parse_or_help(opts, argc, argv)) return 0;
  p.validate();
  if (!p.out.empty() && p.out != "-") cg::prepare_output_file(p.out);
  p.model.default_to_bundled("embed");
  cg::LoadedClip clip = cg::load_clip(p.model.model, p.model.load_options());
  if (!p.texts.empty()) clip.require_tokenizer();
  const torch::Tensor images = cg::embed_image_files(clip, p.images, p.options);
  const torch::Tensor texts = cg::embed_texts(clip, p.texts, p.options);
  if (p.format == "npy") {
    emit(p.out, cg::npy_bytes(torch::cat({images, texts})));
  } else if (p.format == "safetensors") {
    const json inputs = {{"images", p.images}, {"texts", p.texts}};
    emit(p.out, cg::serialize_safetensors({{"image_embeddings", images}, {"text_embeddings", texts}},
                                          {{"model", clip.path},
                                           {"inputs", inputs.dump()},
                                           {"normalized", p.options.normalize ? "true" : "false"}}));
  } else {
    std::string lines;
    auto add = [&](const char* type, const std::vector<std::string>& inputs, const torch::Tensor& rows) {
      for (size_t i = 0; i < inputs.size(); ++i) {
        lines += json{{"type", type}, {"input", inputs[i]}, {"embedding", row_json(rows[i])}}.dump() + "\n";
      }
    };
    add("image", p.images, images);
    add("text", p.texts, texts);
    emit(p.out, lines);
  }
  return 0;
}

// ---- tokenize ----

struct TokenizeParams {
  ModelArgs model;
  std::string file;
  int64_t context_length = 0;  // 0: from the model, else 77
  bool truncate = false;
  std::vector<std::string> texts;

  void validate() const {
    if (texts.empty() == file.empty())
      cg::fail("tokenize: give texts as arguments or --file FILE (one text per line), not both");
    if (context_length < 0 || context_length == 1) cg::fail("tokenize: --context-length must be at least 2");
  }
};

int run_tokenize(int argc, char** argv) {
  TokenizeParams p;
  cxxopts::Options opts("clipguide tokenize",
                        "Print CLIP token ids, one JSON array per input (as clip.tokenize).");
  p.model.add_to(opts, false);
  // clang-format off: one option a line
  opts.add_options()("context-length", "tokens per row (default: the model's, else 77)",
                     cxxopts::value(p.context_length))("truncate", "truncate long texts instead of failing",
                                                       cxxopts::value(p.truncate))(
      "file", "read texts from this file, one per line", cxxopts::value(p.file))("texts", "texts to tokenize",
                                                                                 cxxopts::value(p.texts));
  // clang-format on
  opts.parse_positional({"texts"});
  opts.positional_help("TEXT...");
  if (!parse_or_help(opts, argc, argv)) return 0;
  p.validate();
  if (!p.file.empty()) p.texts = read_lines(p.file, kMaxTextFileBytes);
  int64_t context = p.context_length;
  std::shared_ptr<const cg::Tokenizer> tokenizer;
  if (!p.model.model.empty()) {
    const cg::LoadedClip clip = cg::load_clip(p.model.model, p.model.load_options());
    tokenizer = clip.tokenizer;
    clip.require_tokenizer();
    if (context == 0) context = clip.model->config().context_length;
  } else {
    if (p.model.vocab.empty()) cg::fail("tokenize: give --vocab FILE or --model M");
    tokenizer = std::make_shared<cg::Tokenizer>(cg::Tokenizer::from_path(p.model.vocab));
  }
  if (context == 0) context = 77;
  const torch::Tensor tokens = tokenizer->tokenize(p.texts, context, p.truncate);
  std::string out;
  for (int64_t i = 0; i < tokens.size(0); ++i) {
    const int64_t* row = tokens[i].data_ptr<int64_t>();
    out += json(std::vector<int64_t>(row, row + context)).dump() + "\n";
  }
  std::cout << out << std::flush;
  return 0;
}

// ---- info ----

int run_info(int argc, char** argv) {
  ModelArgs model;
  bool as_json = false;
  cxxopts::Options opts("clipguide info",
                        "Describe a CLIP checkpoint: format, architecture, sizes, SHA-256.");
  model.add_to(opts, true);
  // clang-format off: one option a line
  opts.add_options()("json", "print one JSON object", cxxopts::value(as_json));
  // clang-format on
  opts.parse_positional({"model"});
  opts.positional_help("MODEL");
  if (!parse_or_help(opts, argc, argv)) return 0;
  if (model.model.empty()) cg::fail("info: give a MODEL");
  const cg::LoadedClip clip = cg::load_clip(model.model, model.load_options());
  const cg::ClipConfig& c = clip.model->config();
  const std::string sha = cg::sha256_file(clip.path);
  const auto known = cg::known_model_by_sha256(sha);
  const cg::Preprocessing& pre = c.preprocess;
  json info = {{"path", clip.path},
               {"format", clip.format},
               {"family", cg::name_of(cg::kModelFamilies, c.family)},
               {"architecture", c.architecture()},
               {"known_as", known ? json(std::string("OpenAI ") + known->name) : json(nullptr)},
               {"parameters", clip.parameter_count},
               {"checkpoint_dtypes", clip.checkpoint_dtypes},
               {"image_resolution", c.image_resolution},
               {"context_length", c.context_length},
               {"vocab_size", c.vocab_size},
               {"embed_dim", c.embed_dim},
               {"vision",
                {{"type", c.vision_resnet ? "ModifiedResNet" : "ViT"},
                 {"width", c.vision_width},
                 {"layers", c.vision_layers},
                 {"heads", c.vision_heads},
                 {"patch_size", c.vision_patch_size},
                 {"activation", c.vision_activation}}},
               {"text",
                {{"width", c.transformer_width},
                 {"layers", c.transformer_layers},
                 {"heads", c.transformer_heads},
                 {"activation", c.text_activation}}},
               {"preprocess",
                {{"resize_mode", cg::name_of(cg::kResizeModes, pre.resize)},
                 {"interpolation", cg::name_of(cg::kInterpolations, pre.interpolation)},
                 {"mean", pre.mean},
                 {"std", pre.std}}},
               {"tokenizer", clip.tokenizer ? json(clip.tokenizer->kind()) : json(nullptr)},
               {"tokenizer_rules", clip.tokenizer ? json(clip.tokenizer->describe()) : json(nullptr)},
               {"vocab", clip.vocab_path.empty() ? json(nullptr) : json(clip.vocab_path)},
               {"sha256", sha}};
  if (as_json) {
    std::cout << info.dump(2) << "\n";
    return 0;
  }
  std::string dtypes;
  for (const auto& [name, count] : clip.checkpoint_dtypes)
    dtypes += cg::cat(dtypes.empty() ? "" : ", ", name, " x", count);
  std::cout << "path:             " << clip.path << "\n"
            << "format:           " << clip.format << "\n"
            << "family:           " << info["family"].get<std::string>() << "\n"
            << "architecture:     " << c.architecture()
            << (known ? cg::cat(" (OpenAI ", known->name, ", SHA-256 verified)") : "") << "\n"
            << "parameters:       " << clip.parameter_count << "\n"
            << "dtypes:           " << dtypes << "\n"
            << "resolution:       " << c.image_resolution << "\n"
            << "context length:   " << c.context_length << "\n"
            << "vocab size:       " << c.vocab_size << "\n"
            << "embed dim:        " << c.embed_dim << "\n"
            << "vision:           " << info["vision"].dump() << "\n"
            << "text:             " << info["text"].dump() << "\n"
            << "preprocess:       " << info["preprocess"].dump() << "\n"
            << "vocabulary:       "
            << (clip.vocab_path.empty() ? "(none found)"
                                        : cg::cat(clip.vocab_path, " (", clip.tokenizer->describe(), ")"))
            << "\n"
            << "sha256:           " << sha << "\n";
  return 0;
}

}  // namespace

int interrupted(const std::string& command) {
  cg::warn("clipguide ", command, ": interrupted; everything finished before the signal was written");
  return 130;
}

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::cout << kUsage;
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  cg::keep_freed_memory();
  try {
    if (command == "score") return run_score(argc - 1, argv + 1);
    if (command == "rerank") return run_rerank(argc - 1, argv + 1);
    if (command == "generate") return run_generate(argc - 1, argv + 1);
    if (command == "embed") return run_embed(argc - 1, argv + 1);
    if (command == "index") return run_index(argc - 1, argv + 1);
    if (command == "search") return run_search(argc - 1, argv + 1);
    if (command == "filter") return run_filter(argc - 1, argv + 1);
    if (command == "tokenize") return run_tokenize(argc - 1, argv + 1);
    if (command == "info") return run_info(argc - 1, argv + 1);
    cg::warn("clipguide: unknown command '", command,
             "'; choose score, rerank, generate, embed, index, search, filter, tokenize or info");
    return 2;
  } catch (const Interrupted&) {
    return interrupted(command);
  } catch (const cg::JobStopped&) {
    return interrupted(command);
  } catch (const cxxopts::exceptions::exception& e) {
    cg::warn("clipguide ", command, ": ", cg::error_line(e), " (see --help)");
    return 2;
  } catch (const std::exception& e) {
    cg::warn("clipguide ", command, ": error: ", cg::error_line(e));
  }
  return 1;
}
