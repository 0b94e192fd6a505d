// The toy world's trainers: the bundled CLIP, VQGAN and diffusion model, each trained from scratch (or
// fine-tuned) on rendered scenes, resumable from a state file. clipguide_toyworld's train commands parse
// their options into these and make one call.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>

#include "toyworld/train.h"

namespace clipguide::toyworld {

// What every trainer takes, and the bookkeeping they share.
struct TrainRun {
  std::string out, state, device_spec;
  torch::Device device = torch::kCPU;
  int64_t steps = 4000, batch = 0, seed = 0, threads = 1, every = 100;
  double lr = 1e-3, minutes = 0;
  std::function<bool()> should_stop;               // polled before each step; the state is saved then
  std::function<void(const std::string&)> report;  // progress lines

  void say(const std::string& line) const {
    if (report) report(line);
  }

  // Checks the settings, sets the CPU threads, resolves the device and the state file, makes the folder.
  void prepare();
  TrainSchedule schedule(int64_t warmup) const;
  // Whether the run should stop before `step`: done, out of its minutes, or asked to (the state is saved
  // then).
  bool stop_before(int64_t step, double elapsed_minutes) const;
  // The bundled weights: fp16 safetensors with the checkpoint's own names.
  void write_model(torch::nn::Module& model, int64_t step) const;
};

struct ClipTraining {
  ToyClipShape shape;
  std::string precision = "fp32";  // or bf16: CPU autocast of the towers' matmuls
  std::string from;                // fine-tune this CLIP folder (its shape and vocabulary)
  double adversarial = 0;          // L2 radius of adversarial training images; 0: off
  int64_t adversarial_steps = 1;
  double blur = 1;  // blur training images by a random factor up to this; 1: off
};
void train_clip(const TrainRun& run, const ClipTraining& options);

struct VqganTraining {
  ToyVqganShape shape;
  int64_t restart_every = 50;  // restart codes unused for this many steps
  double object_weight = 0;    // extra reconstruction weight on objects and their rims
};
void train_vqgan(const TrainRun& run, const VqganTraining& options);

struct DiffusionTraining {
  ToyUNetShape shape;
  std::string noise_schedule = "cosine", respacing = "ddim25";
  std::string from;  // fine-tune this diffusion folder
  std::string clip;  // condition on this CLIP folder's caption embeddings
  double ema = 0.998, cond_drop = 0.1, cond_lr = 1;
};
void train_diffusion(const TrainRun& run, const DiffusionTraining& options);

}  // namespace clipguide::toyworld
