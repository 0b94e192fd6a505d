// What the clipguide commands share: argument parsing, model options, output.
#pragma once

#include <cxxopts.hpp>
#include <iostream>
#include <string>

#include "clip/device.h"
#include "clip/error.h"
#include "clip/file_io.h"
#include "clip/load.h"

namespace cg = clipguide;

int run_score(int argc, char** argv);
int run_rerank(int argc, char** argv);

// Writes to --out atomically, or streams to stdout.
inline void emit(const std::string& out_path, const std::string& bytes) {
  if (out_path.empty() || out_path == "-") {
    std::cout << bytes << std::flush;
  } else {
    cg::write_file_atomic(out_path, bytes);
  }
}

// Adds --help and parses; false when help was printed and the command should stop.
inline bool parse_or_help(cxxopts::Options& opts, int argc, char** argv) {
  opts.add_options()("h,help", "show this help");
  if (opts.parse(argc, argv).count("help") == 0) return true;
  std::cout << opts.help() << std::flush;
  return false;
}

// The options every command that loads a model shares.
struct ModelArgs {
  std::string model, vocab, device = "cpu", precision = "fp32";
  int64_t text_heads = 0, vision_heads = 0;

  void add_to(cxxopts::Options& opts, bool with_device) {
    opts.add_options()
        ("m,model", "CLIP checkpoint: a file, a Hugging Face folder, an OpenAI name (ViT-B-32) or a hub id (org/name)",
         cxxopts::value(model))
        ("vocab", "tokenizer vocabulary: bpe_simple_vocab_16e6.txt.gz, or a folder with vocab.json + merges.txt "
                  "(default: next to the model, then ~/.cache/clip)", cxxopts::value(vocab))
        ("text-heads", "text attention heads, for checkpoints where it is not width/64 and no config.json says so",
         cxxopts::value(text_heads))
        ("vision-heads", "vision attention heads, likewise", cxxopts::value(vision_heads));
    if (with_device) {
      opts.add_options()
          ("device", "cpu, cuda, cuda:N or auto", cxxopts::value(device)->default_value("cpu"))
          ("precision", "fp32, or bf16 (the CPU's bf16 matmul; LayerNorm stays fp32), or fp16 on CUDA",
           cxxopts::value(precision)->default_value("fp32"));
    }
  }
  cg::LoadOptions load_options() const {
    if (text_heads < 0 || vision_heads < 0) cg::fail("--text-heads and --vision-heads must be positive");
    cg::LoadOptions load;
    load.vocab = vocab;
    load.device = cg::parse_device(device);
    if (precision == "fp32") {
      load.dtype = torch::kFloat;
    } else if (precision == "bf16") {
      load.dtype = torch::kBFloat16;
    } else if (precision == "fp16" && load.device.is_cuda()) {
      load.dtype = torch::kHalf;
    } else {
      cg::fail("--precision ", precision, " is not one of fp32, bf16", load.device.is_cuda() ? ", fp16" : " (fp16 needs --device cuda)");
    }
    load.text_heads = text_heads;
    load.vision_heads = vision_heads;
    return load;
  }
};

