// What the clipguide commands share: argument parsing, model options, output.
#pragma once

#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/options.h"
#include "clip/load.h"
#include "core/device.h"
#include "core/error.h"
#include "core/file_io.h"
#include "jobs/bundled.h"

namespace cg = clipguide;

int run_score(int argc, char** argv);
int run_rerank(int argc, char** argv);
int run_generate(int argc, char** argv);
int run_index(int argc, char** argv);
int run_search(int argc, char** argv);
int run_filter(int argc, char** argv);

// Ctrl-C or SIGTERM: the handler only sets this flag (signal handlers can do no more); long loops check it
// between batches and throw Interrupted, so every row already finished has been written and nothing is left
// half done.
inline volatile std::sig_atomic_t g_interrupted = 0;

class Interrupted : public std::runtime_error {
 public:
  Interrupted() : std::runtime_error("interrupted") {}
};

// Installs the SIGINT and SIGTERM handlers for its lifetime.
class InterruptScope {
 public:
  InterruptScope() {
    previous_int_ = std::signal(SIGINT, [](int) { g_interrupted = 1; });
    previous_term_ = std::signal(SIGTERM, [](int) { g_interrupted = 1; });
  }
  ~InterruptScope() {
    std::signal(SIGINT, previous_int_);
    std::signal(SIGTERM, previous_term_);
  }
  static bool requested() { return g_interrupted != 0; }
  static void check() {
    if (g_interrupted) throw Interrupted();
  }

 private:
  void (*previous_int_)(int) = SIG_DFL;
  void (*previous_term_)(int) = SIG_DFL;
};

// A one-line progress bar on stderr (count, rate, ETA), drawn only when stderr is a terminal.
class Progress {
 public:
  Progress(size_t total, const char* unit)
      : total_(total), unit_(unit), enabled_(::isatty(STDERR_FILENO) != 0) {}
  ~Progress() {
    if (enabled_ && drawn_) std::fprintf(stderr, "\n");
  }
  // `note` is shown after the counts (e.g. the loss per prompt).
  void advance(size_t n, const std::string& note = "") {
    done_ += n;
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    if (drawn_ && done_ < total_ && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    drawn_ = true;
    const double seconds = std::chrono::duration<double>(now - start_).count();
    const double rate = seconds > 0 ? done_ / seconds : 0;
    const long eta = rate > 0 ? static_cast<long>((total_ - done_) / rate) : 0;
    const int width = 30, filled = total_ ? static_cast<int>(width * done_ / total_) : width;
    std::fprintf(stderr, "\r[%.*s%*s] %zu/%zu %s  %.2f/s  ETA %ld:%02ld %s\x1b[K", filled,
                 "##############################", width - filled, "", done_, total_, unit_, rate, eta / 60,
                 eta % 60, note.c_str());
    std::fflush(stderr);
  }

 private:
  size_t total_, done_ = 0;
  const char* unit_;
  bool enabled_, drawn_ = false;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now(), last_;
};

// Writes to --out atomically, or streams to stdout.
inline void emit(const std::string& out_path, const std::string& bytes) {
  if (out_path.empty() || out_path == "-") {
    std::cout << bytes << std::flush;
  } else {
    cg::write_file_atomic(out_path, bytes);
  }
}

// The lines of a text file (one prompt or text each), CRLF or LF.
inline std::vector<std::string> read_lines(const std::string& path, size_t max_bytes) {
  std::vector<std::string> out;
  std::istringstream in(cg::read_small_file(path, max_bytes));
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    out.push_back(line);
  }
  return out;
}

// Adds --help and parses; false when help was printed and the command should stop.
inline bool parse_or_help(cxxopts::Options& opts, int argc, char** argv) {
  opts.add_options()("h,help", "show this help");
  if (opts.parse(argc, argv).count("help") == 0) return true;
  std::cout << opts.help() << std::flush;
  return false;
}

// The bundled toy CLIP, said once on stderr (it knows only the toy world's coloured shapes): what `command`
// uses when no CLIP was given with `flag`.
inline std::string bundled_clip_noted(const char* command, const char* flag) {
  const std::string clip = cg::bundled_clip();
  cg::warn("clipguide ", command, ": no ", flag, " given; using the bundled toy CLIP (", clip,
           "), which knows only coloured shapes; pass ", flag, " for a real CLIP (see README: Models)");
  return clip;
}

// The options every command that loads a model shares.
struct ModelArgs : cg::ModelSettings {
  std::string model;

  bool several_devices = false;  // score, rerank and embed spread batches over a list of devices

  void add_to(cxxopts::Options& opts, bool with_device, bool with_model = true) {
    if (with_model) {
      // clang-format off: one option a line
      opts.add_options()(
          "m,model",
          "CLIP checkpoint: a file, a Hugging Face folder, an OpenAI name (ViT-B-32) or a hub id "
          "(org/name)",
          cxxopts::value(model));
      // clang-format on
    }
    // clang-format off: one option a line
    opts.add_options()(
        "pretrained",
        "open_clip's pretrained tag for an open_clip model name, as open_clip.create_model takes "
        "them (ViT-H-14 --pretrained laion2b_s32b_b79k): found in the Hugging Face hub cache",
        cxxopts::value(pretrained))(
        "vocab",
        "tokenizer vocabulary: bpe_simple_vocab_16e6.txt.gz, a SentencePiece spiece.model, or a "
        "folder with vocab.json + merges.txt (default: next to the model, then ~/.cache/clip for "
        "CLIP models)",
        cxxopts::value(vocab))(
        "text-heads",
        "text attention heads, for checkpoints where it is not width/64 and no config.json "
        "says so",
        cxxopts::value(text_heads))("vision-heads", "vision attention heads, likewise",
                                    cxxopts::value(vision_heads))(
        "activation",
        "the MLP activation, quick_gelu, gelu or gelu_tanh, for checkpoints whose config does not say it "
        "(open_clip weights without open_clip_config.json); default: the config's, else QuickGELU",
        cxxopts::value(activation));
    // clang-format on
    if (with_device) {
      // clang-format off: one option a line
      opts.add_options()("device",
                         several_devices ? "cpu, cuda, cuda:N or auto; or a list, cuda:0,cuda:1,...: batches "
                                           "spread over the devices, one model replica each"
                                         : "cpu, cuda, cuda:N or auto",
                         cxxopts::value(device)->default_value("cpu"))(
          "precision", "fp32, or bf16 (the CPU's bf16 matmul; LayerNorm stays fp32), or fp16 on CUDA",
          cxxopts::value(precision)->default_value("fp32"))(
          "threads", "CPU threads for the model (default: OMP_NUM_THREADS, else every CPU)",
          cxxopts::value(threads));
      // clang-format on
    }
  }
  // No --model: the bundled toy CLIP.
  void default_to_bundled(const char* command) {
    if (model.empty()) model = bundled_clip_noted(command, "--model");
  }
  cg::LoadOptions load_options() const { return resolve(several_devices); }
};
