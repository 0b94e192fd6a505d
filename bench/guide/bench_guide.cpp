// bench/guide, our side: median seconds per guidance step (cutouts -> CLIP encode -> spherical loss to the cached
// text -> backward to the image -> Adam step) on a raw-pixel image, in fp32 and bf16, the bf16 image gradient's
// cosine to the fp32 one, and a VQGAN decode + backward. Prints one JSON object.
//
//   bench_guide CLIP.safetensors VOCAB SIZE CUTN STEPS [vqgan]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "clip/device.h"
#include "clip/load.h"
#include "generators/guided_run.h"
#include "generators/pixels.h"
#include "generators/vqgan.h"

namespace cg = clipguide;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

cg::ClipGuideOptions guide_options(int64_t cutn) {
  cg::ClipGuideOptions options;
  options.cutouts.cutn = cutn;
  options.cutouts.augments = cg::parse_augments("flip,noise");  // what the Python side does too
  return options;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: bench_guide CLIP.safetensors VOCAB SIZE CUTN STEPS [vqgan]\n");
    return 2;
  }
  const std::string weights = argv[1], vocab = argv[2];
  const int64_t size = std::stoll(argv[3]), cutn = std::stoll(argv[4]), steps = std::stoll(argv[5]);
  const bool with_vqgan = argc > 6 && std::string(argv[6]) == "vqgan";
  cg::set_cpu_threads(0);  // OMP_NUM_THREADS, as the Python side
  nlohmann::json out;
  torch::Tensor grads[2];
  for (int precision = 0; precision < 2; ++precision) {
    cg::LoadOptions load;
    load.vocab = vocab;
    load.dtype = precision == 0 ? torch::kFloat : torch::kBFloat16;
    std::vector<cg::GuideModel> models = {{std::make_shared<cg::LoadedClip>(cg::load_clip(weights, load)), weights, 1.0, 0}};
    auto guide = std::make_shared<cg::ClipGuide>(models, cg::PromptSchedule::parse("an oil painting of a lighthouse", 0, false),
                                                 std::vector<cg::Prompt>{}, guide_options(cutn));
    cg::OptimizerOptions adam;
    adam.lr = 0.05;
    cg::GuidedRun run(std::make_shared<cg::PixelGenerator>(size, size, cg::PixelParam::Raw, std::nullopt, 0, torch::kCPU), guide,
                      adam, 0.0, 0);
    run.step();  // warm-up
    std::vector<double> times;
    for (int64_t i = 0; i < steps; ++i) {
      const auto start = std::chrono::steady_clock::now();
      run.step();
      times.push_back(seconds_since(start));
    }
    out[precision == 0 ? "fp32_step_s" : "bf16_step_s"] = median(times);
    // The image gradient at a fixed image and cutout stream, for the bf16-vs-fp32 cosine.
    auto rng = cg::make_generator(123);
    auto fixed = cg::make_generator(7);
    const torch::Tensor image = torch::rand({1, 3, size, size}, fixed);
    grads[precision] = guide->gradient(image, rng).first;
  }
  out["bf16_grad_cosine"] = torch::cosine_similarity(grads[0].flatten(), grads[1].flatten(), 0).item<double>();
  if (with_vqgan) {
    // taming's f16 ImageNet VQGAN shape (vqgan_imagenet_f16_16384): ch 128, ch_mult 1,1,2,2,4, 2 res blocks,
    // attention at resolution 16 (the last level), z 256 channels.
    cg::VqganConfig c;
    c.embed_dim = 256;
    c.n_embed = 16384;
    c.z_channels = 256;
    c.ch = 128;
    c.ch_mult = {1, 1, 2, 2, 4};
    c.num_res_blocks = 2;
    c.attn_levels = {false, false, false, false, true};
    torch::manual_seed(0);
    cg::Vqgan vqgan(c);
    for (auto& p : vqgan.parameters()) p.requires_grad_(false);
    torch::Tensor z = torch::randn({1, 256, size / 16, size / 16}).requires_grad_(true);
    std::vector<double> times;
    for (int i = 0; i < 4; ++i) {
      const auto start = std::chrono::steady_clock::now();
      const torch::Tensor img = vqgan.decode(vqgan.quantize(z).z_q);
      img.square().mean().backward();
      if (i > 0) times.push_back(seconds_since(start));  // the first is a warm-up
      z.mutable_grad() = torch::Tensor();
    }
    out["vqgan_decode_backward_s"] = median(times);
  }
  out["threads"] = torch::get_num_threads();
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
