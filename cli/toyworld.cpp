// clipguide_toyworld: the toy world's programs — training the bundled CLIP and VQGAN, measuring them,
// rendering scenes and judging images by their pixels. The training commands double as examples of training
// with the library.
//
//   clipguide_toyworld train-clip  --out models/toyworld/clip [--minutes 40] [--precision bf16] [--state
//   FILE] ...
//                                  [--from DIR] [--adversarial EPS] [--blur F]   (fine-tuning an existing
//                                  CLIP)
//   clipguide_toyworld train-vqgan --out models/toyworld/vqgan [--minutes 30] [--state FILE] ...
//   clipguide_toyworld train-diffusion --out models/toyworld/diffusion [--minutes 60] [--state FILE] ...
//                                  [--from DIR] [--clip DIR] [--cond-lr F]   (a CLIP-conditioned fine-tune)
//   clipguide_toyworld eval [--model DIR] [--images 1000] [--seed S] [--blur-size 32]
//   clipguide_toyworld render --out DIR [--count N] [--seed S] [--classes | --only "COLOUR SHAPE BACKGROUND"]
//   clipguide_toyworld judge IMAGE.png...
#include <array>
#include <chrono>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli/common.h"
#include "clip/load.h"
#include "clip/score.h"
#include "core/device.h"
#include "core/error.h"
#include "core/file_io.h"
#include "core/names.h"
#include "generators/vqgan.h"
#include "guidance/clip_guide.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "jobs/bundled.h"
#include "toyworld/eval.h"
#include "toyworld/train.h"
#include "toyworld/trainers.h"
#include "toyworld/world.h"

namespace tw = clipguide::toyworld;
namespace fs = std::filesystem;

namespace {

void add_train_options(cxxopts::Options& opts, tw::TrainRun& t, const std::string& out_default,
                       const std::string& out_help, const std::string& batch_help,
                       const std::string& batch_default, const std::string& seed_default) {
  // clang-format off: one option a line
  opts.add_options()("out", out_help, cxxopts::value(t.out)->default_value(out_default))(
      "state", "resumable training state (default: OUT/train-state.safetensors; kept out of git)",
      cxxopts::value(t.state))("steps", "optimizer steps (the learning-rate schedule's length)",
                               cxxopts::value(t.steps)->default_value("4000"))(
      "minutes", "stop (and save) after this many minutes of training in all, 0: no limit",
      cxxopts::value(t.minutes)->default_value("0"))("batch", batch_help,
                                                     cxxopts::value(t.batch)->default_value(batch_default))(
      "lr", "peak learning rate (warmup, then cosine down to 5% of it)",
      cxxopts::value(t.lr)->default_value("1e-3"))("seed", "seed of the initialisation and of every batch",
                                                   cxxopts::value(t.seed)->default_value(seed_default))(
      "every", "report and save the state every this many steps",
      cxxopts::value(t.every)->default_value("100"))("threads", "CPU threads (model and scene rendering)",
                                                     cxxopts::value(t.threads)->default_value("1"))(
      "device", "cpu, cuda, cuda:N or auto", cxxopts::value(t.device_spec)->default_value("cpu"));
  // clang-format on
}

// Runs a trainer with Ctrl-C saving its state and progress lines on stderr.
template <class Options>
int run_training(void (*train)(const tw::TrainRun&, const Options&), tw::TrainRun t, const Options& options) {
  InterruptScope interrupt;
  t.should_stop = [] { return InterruptScope::requested(); };
  t.report = [](const std::string& line) { std::cerr << line << "\n"; };
  train(t, options);
  return 0;
}

int train_clip(int argc, char** argv) {
  cxxopts::Options opts("clipguide_toyworld train-clip",
                        "train the toy CLIP (OpenAI ViT names) on the toy world");
  tw::TrainRun t;
  tw::ToyClipShape shape;
  std::string precision, from;
  double adversarial = 0, blur = 1;
  int64_t adversarial_steps = 1;
  add_train_options(opts, t, "models/toyworld/clip",
                    "folder for model.safetensors, vocab.json and merges.txt",
                    "images per step, a multiple of 8 (groups of hard negatives)", "128", "1");
  // clang-format off: one option a line
  opts.add_options()("vision-width", "ViT width", cxxopts::value(shape.vision_width)->default_value("128"))(
      "vision-layers", "ViT layers", cxxopts::value(shape.vision_layers)->default_value("4"))(
      "text-width", "text transformer width", cxxopts::value(shape.text_width)->default_value("128"))(
      "text-layers", "text transformer layers", cxxopts::value(shape.text_layers)->default_value("3"))(
      "precision",
      "fp32, or bf16 (CPU autocast: the towers' matmuls in bf16; weights, optimizer and loss "
      "fp32)",
      cxxopts::value(precision)->default_value("fp32"))(
      "from",
      "fine-tune: start from this CLIP folder's weights, architecture and vocabulary (the shape "
      "flags are ignored)",
      cxxopts::value(from))(
      "blur",
      "also blur training images by a random factor up to this (area-averaged down, resampled up; "
      "1: off)",
      cxxopts::value(blur)->default_value("1"))(
      "adversarial",
      "train on adversarial images: the L2 radius of their perturbation, pixels in [0, 1] "
      "(0: off)",
      cxxopts::value(adversarial)->default_value("0"))("adversarial-steps",
                                                       "gradient steps that find each adversarial image",
                                                       cxxopts::value(adversarial_steps)->default_value("1"));
  // clang-format on
  if (!parse_or_help(opts, argc, argv)) return 0;
  return run_training(tw::train_clip, t, {shape, precision, from, adversarial, adversarial_steps, blur});
}

int train_vqgan(int argc, char** argv) {
  cxxopts::Options opts("clipguide_toyworld train-vqgan",
                        "train the toy VQGAN (taming names, f8) on the toy world");
  tw::TrainRun t;
  int64_t restart_every = 0;
  double object_weight = 0;
  tw::ToyVqganShape shape;
  add_train_options(opts, t, "models/toyworld/vqgan", "folder for model.safetensors and model.yaml",
                    "images per step", "16", "2");
  // clang-format off: one option a line
  opts.add_options()("ch", "channels at full resolution (doubled at the two lowest levels)",
                     cxxopts::value(shape.ch)->default_value("32"))(
      "res-blocks", "residual blocks per level", cxxopts::value(shape.num_res_blocks)->default_value("1"))(
      "n-embed", "codebook entries", cxxopts::value(shape.n_embed)->default_value("512"))(
      "object-weight", "extra reconstruction weight on objects and their rims (0: plain mean)",
      cxxopts::value(object_weight)->default_value("0"))("restart-every",
                                                         "restart codes unused for this many steps",
                                                         cxxopts::value(restart_every)->default_value("50"));
  // clang-format on
  if (!parse_or_help(opts, argc, argv)) return 0;
  return run_training(tw::train_vqgan, t, {shape, restart_every, object_weight});
}

int train_diffusion(int argc, char** argv) {
  cxxopts::Options opts(
      "clipguide_toyworld train-diffusion",
      "train the toy diffusion model (guided-diffusion UNet names, noise prediction) on the toy world");
  tw::TrainRun t;
  tw::ToyUNetShape shape;
  std::string noise_schedule, respacing, from, clip_dir;
  double ema = 0, cond_drop = 0, cond_lr = 1;
  add_train_options(opts, t, "models/toyworld/diffusion",
                    "folder for model.safetensors (the moving average) and model.json (flags)",
                    "images per step", "64", "3");
  // clang-format off: one option a line
  opts.add_options()("size", "image size: 32 (the scenes area-averaged down) or 64",
                     cxxopts::value(shape.image_size)->default_value("32"))(
      "channels", "UNet channels at full resolution", cxxopts::value(shape.channels)->default_value("32"))(
      "res-blocks", "residual blocks per level", cxxopts::value(shape.res_blocks)->default_value("1"))(
      "noise-schedule", "linear or cosine", cxxopts::value(noise_schedule)->default_value("cosine"))(
      "respacing",
      "the sampling steps written into the flags (guided-diffusion's timestep_respacing; "
      "ddim25 starts at step 960, where the cosine schedule's pred_xstart is still well "
      "conditioned)",
      cxxopts::value(respacing)->default_value("ddim25"))(
      "ema", "decay of the weights' moving average (the saved model)",
      cxxopts::value(ema)->default_value("0.998"))(
      "from",
      "fine-tune: start from this diffusion folder's weights, architecture and schedule (the shape "
      "flags are ignored)",
      cxxopts::value(from))(
      "clip",
      "condition on this CLIP folder's embeddings of each scene's caption (unCLIP's clip_emb, for "
      "classifier-free guidance); the projection trains on them standardised, and the saved weights "
      "take them raw",
      cxxopts::value(clip_dir))(
      "cond-drop", "with --clip: share of captions replaced by no condition (the unconditional prediction)",
      cxxopts::value(cond_drop)->default_value("0.1"))(
      "cond-lr", "with --clip: the CLIP projection's learning rate, as a multiple of --lr",
      cxxopts::value(cond_lr)->default_value("1"));
  // clang-format on
  if (!parse_or_help(opts, argc, argv)) return 0;
  return run_training(tw::train_diffusion, t,
                      {shape, noise_schedule, respacing, from, clip_dir, ema, cond_drop, cond_lr});
}

int eval(int argc, char** argv) {
  cxxopts::Options opts(
      "clipguide_toyworld eval",
      "zero-shot classification, class reranking and VQGAN reconstruction of fresh renders");
  std::string model, vqgan;
  int64_t images = 0, seed = 0, blur_size = 0;
  // clang-format off: one option a line
  opts.add_options()("model", "a CLIP (default: the bundled toy CLIP)", cxxopts::value(model))(
      "blur-size",
      "show the CLIP the renders as if made at this size (32: the bundled diffusion model's), "
      "0: as rendered",
      cxxopts::value(blur_size)->default_value("0"))(
      "vqgan", "a VQGAN whose reconstructions to judge (default: the bundled toy VQGAN)",
      cxxopts::value(vqgan))("images", "renders to classify", cxxopts::value(images)->default_value("1000"))(
      "seed", "seed of the renders (training draws from seeds 1 and 2; the trainer's own checks use 999)",
      cxxopts::value(seed)->default_value("2026"));
  // clang-format on
  if (!parse_or_help(opts, argc, argv)) return 0;
  if (images < 1) cg::fail("--images must be at least 1");
  if (blur_size < 0 || blur_size > tw::kImageSize)
    cg::fail("--blur-size must be between 0 and ", tw::kImageSize);
  cg::LoadedClip clip = cg::load_clip(model.empty() ? cg::bundled_clip() : model);
  const tw::ZeroShot zs = tw::zero_shot(clip, images, static_cast<uint64_t>(seed), blur_size);
  const tw::RerankResult rr = tw::rerank_classes(clip, static_cast<uint64_t>(seed), blur_size);
  nlohmann::json out{{"model", clip.path},
                     {"blur_size", blur_size},
                     {"images", zs.images},
                     {"colour", zs.colour},
                     {"shape", zs.shape},
                     {"background", zs.background},
                     {"held_out_images", zs.held_out_images},
                     {"held_out_joint", zs.held_out_joint},
                     {"rerank_classes", rr.classes},
                     {"rerank_top1", rr.top1}};
  const cg::LoadedVqgan v = cg::load_vqgan(vqgan.empty() ? cg::bundled_vqgan() : vqgan,
                                           vqgan.empty() ? cg::bundled_vqgan_config() : "", torch::kCPU);
  const tw::Reconstruction rec = tw::reconstruction(*v.model, 256, static_cast<uint64_t>(seed));
  out["vqgan"] = v.path;
  out["reconstruction_l1"] = rec.l1;
  out["reconstruction_judged_same"] = rec.judged_same;
  std::cout << out.dump() << "\n";
  return 0;
}

// Writes one render per colour+shape class (CLASS.png: red-circle.png ...), or one plain image per colour, or
// `count` random scenes with their captions in captions.txt.
int render(int argc, char** argv) {
  cxxopts::Options opts("clipguide_toyworld render", "render toy-world scenes to PNG files");
  std::string out, only;
  int64_t count = 0, seed = 0;
  bool classes = false, backgrounds = false;
  // clang-format off: one option a line
  opts.add_options()("out", "folder to write into", cxxopts::value(out))(
      "backgrounds", "one plain image of each colour instead (COLOUR.png: generate's starting points)",
      cxxopts::value(backgrounds))("count", "random scenes to render",
                                   cxxopts::value(count)->default_value("8"))(
      "classes", "one single-object render per colour+shape class instead", cxxopts::value(classes))(
      "only", "\"COLOUR SHAPE BACKGROUND\": every random scene one such object (size, place and tint random)",
      cxxopts::value(only))("seed", "seed", cxxopts::value(seed)->default_value("7"));
  // clang-format on
  if (!parse_or_help(opts, argc, argv)) return 0;
  if (out.empty()) cg::fail("--out DIR is required");
  if (count < 0 || count > 100000) cg::fail("--count must be between 0 and 100000");
  fs::create_directories(out);
  std::mt19937_64 rng = tw::step_rng(static_cast<uint64_t>(seed), 0);
  auto write = [&](const tw::Scene& scene, const std::string& name) {
    const torch::Tensor img = (tw::render(scene).permute({1, 2, 0}) * 255)
                                  .round()
                                  .to(torch::kUInt8)
                                  .contiguous();  // [3, H, W] -> [H, W, 3]
    cg::write_file_atomic((fs::path(out) / name).string(), cg::encode_png(img, {}));
  };
  // The renderer's truth beside the captions: each scene's background and objects.
  std::string captions, truth;
  auto record = [&](const tw::Scene& scene, const std::string& name) {
    nlohmann::json objects = nlohmann::json::array();
    for (const tw::Object& o : scene.objects)
      objects.push_back({{"colour", tw::name(o.colour)}, {"shape", tw::name(o.shape)}});
    truth += nlohmann::json{{"file", name}, {"background", tw::name(scene.background)}, {"objects", objects}}
                 .dump() +
             "\n";
  };
  std::optional<std::array<int, 3>> fixed;  // colour, shape, background
  if (!only.empty()) {
    const std::vector<std::string> words = cg::split(only, ' ');
    auto find = [&](const std::string& word, int n, auto type) {
      for (int i = 0; i < n; ++i)
        if (tw::name(static_cast<decltype(type)>(i)) == word) return i;
      cg::fail("--only ", only, ": ", word, " is not a toy-world ", n == tw::kShapes ? "shape" : "colour");
    };
    if (words.size() != 3) cg::fail("--only takes \"COLOUR SHAPE BACKGROUND\", got ", only);
    fixed = {find(words[0], tw::kColours, tw::Colour{}), find(words[1], tw::kShapes, tw::Shape{}),
             find(words[2], tw::kColours, tw::Colour{})};
    if ((*fixed)[0] == (*fixed)[2])
      cg::fail("--only ", only, ": an object cannot have the background's colour");
  }
  if (backgrounds) {
    for (int c = 0; c < tw::kColours; ++c) {
      tw::Scene plain;
      plain.background = static_cast<tw::Colour>(c);
      write(plain, tw::name(plain.background) + ".png");
    }
    return 0;
  }
  if (classes) {
    for (int c = 0; c < tw::kColours; ++c) {
      for (int s = 0; s < tw::kShapes; ++s) {
        const auto scene =
            tw::random_single_object(static_cast<tw::Colour>(c), static_cast<tw::Shape>(s), rng);
        const std::string name =
            cg::cat(tw::name(static_cast<tw::Colour>(c)), "-", tw::name(static_cast<tw::Shape>(s)), ".png");
        write(scene, name);
        record(scene, name);
        captions += name + "\t" + tw::describe(scene, 0, rng).text + "\n";
      }
    }
  } else {
    tw::SceneOptions options;
    options.allow_held_out = true;
    for (int64_t i = 0; i < count; ++i) {
      const tw::Scene scene =
          fixed
              ? tw::single_object_scene(
                    static_cast<tw::Colour>((*fixed)[2]), static_cast<tw::Colour>((*fixed)[0]),
                    static_cast<tw::Shape>((*fixed)[1]),
                    static_cast<tw::Size>(std::uniform_int_distribution<int>(0, tw::kSizes - 1)(rng)),
                    static_cast<tw::Position>(std::uniform_int_distribution<int>(0, tw::kPositions - 1)(rng)),
                    rng)
              : tw::sample_scene(rng, options);
      const std::string name = cg::cat("scene-", i, ".png");
      write(scene, name);
      record(scene, name);
      captions += name + "\t" + tw::describe(scene, -1, rng).text + "\n";
    }
  }
  cg::write_file_atomic((fs::path(out) / "captions.txt").string(), captions);
  cg::write_file_atomic((fs::path(out) / "scenes.jsonl").string(), truth);
  return 0;
}

// One JSON line per image: what the pixel judge sees (no CLIP involved).
int judge(int argc, char** argv) {
  if (argc < 2) cg::fail("give one or more PNG files to judge");
  for (int i = 1; i < argc; ++i) {
    const cg::Image img = cg::read_image(argv[i]);
    const torch::Tensor t =
        cg::to_rgb_tensor(img).permute({2, 0, 1}).to(torch::kFloat).div(255);  // [H, W, 3] -> [3, H, W]
    const tw::Judgement j = tw::judge(t);
    nlohmann::json line{
        {"image", argv[i]}, {"background", tw::name(j.background)}, {"object", j.found_object}};
    if (j.found_object) {
      line["colour"] = tw::name(j.colour);
      line["shape"] = tw::name(j.shape);
      line["pixels"] = j.object_pixels;
      line["fill"] = j.fill;
      line["solidity"] = j.solidity;
      line["turn"] = j.turn;
      line["hole"] = j.hole;
    }
    std::cout << line.dump() << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string usage =
      "usage: clipguide_toyworld train-clip|train-vqgan|train-diffusion|eval|render|judge [OPTIONS] (--help "
      "after a command for its options)";
  if (argc < 2) {
    std::cerr << usage << "\n";
    return 2;
  }
  const std::string command = argv[1];
  try {
    if (command == "train-clip") return train_clip(argc - 1, argv + 1);
    if (command == "train-vqgan") return train_vqgan(argc - 1, argv + 1);
    if (command == "train-diffusion") return train_diffusion(argc - 1, argv + 1);
    if (command == "eval") return eval(argc - 1, argv + 1);
    if (command == "render") return render(argc - 1, argv + 1);
    if (command == "judge") return judge(argc - 1, argv + 1);
    cg::warn("clipguide_toyworld: unknown command '", command, "'; ", usage);
    return 2;
  } catch (const std::exception& e) {
    cg::warn("clipguide_toyworld ", command, ": ", cg::error_line(e));
    return 1;
  }
}
