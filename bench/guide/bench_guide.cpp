// bench/guide, our side: median seconds per guidance step (cutouts -> CLIP encode -> spherical loss to the
// cached text -> backward to the image -> Adam step) on a raw-pixel image, in fp32 and bf16, the bf16 image
// gradient's cosine to the fp32 one, and a VQGAN decode + backward. Prints one JSON object.
//
//   bench_guide CLIP.safetensors VOCAB SIZE CUTN STEPS [vqgan] [--device D] [--precisions fp32,bf16]
//   [--cuda-graph]
//               [--profile]
//
// --profile: where the timed steps' time goes, by operator (libtorch's record-function hooks; an op's time
// includes the ops it calls, and the backward of each autograd node is counted under the node), printed to
// stderr.
#include <ATen/record_function.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "clip/load.h"
#include "core/device.h"
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

// Inclusive wall time of the outermost operators on the calling thread, by name (--profile). Autograd's
// evaluate_function wrappers are looked through, so each backward node counts as one operator.
class OpProfile {
 public:
  OpProfile() {
    handle_ = at::addGlobalCallback(
        at::RecordFunctionCallback(&OpProfile::enter, &OpProfile::leave).needsInputs(false));
  }
  ~OpProfile() { at::removeCallback(handle_); }
  static void print(double total_s) {
    std::vector<std::pair<double, std::string>> rows;
    for (const auto& [name, s] : times()) rows.emplace_back(s, name);
    std::sort(rows.rbegin(), rows.rend());
    double gemm = 0;
    for (const auto& [s, name] : rows) {
      if (is_gemm(name)) gemm += s;
    }
    std::fprintf(stderr,
                 "profile: %.3f s in total; matrix products (mm, addmm, bmm, linear, convolutions, "
                 "attention) %.3f s (%.0f%%)\n",
                 total_s, gemm, 100 * gemm / total_s);
    for (size_t i = 0; i < rows.size() && i < 25; ++i) {
      std::fprintf(stderr, "  %7.3f s %5.1f%%  %s\n", rows[i].first, 100 * rows[i].first / total_s,
                   rows[i].second.c_str());
    }
  }

 private:
  struct Frame : at::ObserverContext {
    std::chrono::steady_clock::time_point start;
    bool counted = false;
  };
  static bool is_gemm(const std::string& name) {
    for (const char* k : {"mm", "addmm", "bmm", "linear", "conv", "Mm", "Addmm", "Bmm", "Convolution",
                          "attention", "Attention"}) {
      if (name.find(k) != std::string::npos) return true;
    }
    return false;
  }
  static std::map<std::string, double>& times() {
    static std::map<std::string, double> t;
    return t;
  }
  static int& depth() {
    thread_local int d = 0;
    return d;
  }
  static std::unique_ptr<at::ObserverContext> enter(const at::RecordFunction& fn) {
    auto frame = std::make_unique<Frame>();
    const std::string name = fn.name();
    const bool wrapper = name.rfind("autograd::engine::evaluate_function", 0) == 0;
    frame->counted = depth() == 0 && !wrapper;
    if (!wrapper) ++depth();
    frame->start = std::chrono::steady_clock::now();
    return frame;
  }
  static void leave(const at::RecordFunction& fn, at::ObserverContext* ctx) {
    auto* frame = static_cast<Frame*>(ctx);
    const std::string name = fn.name();
    if (name.rfind("autograd::engine::evaluate_function", 0) == 0) return;
    --depth();
    if (frame->counted) times()[name] += seconds_since(frame->start);
  }
  at::CallbackHandle handle_;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr,
                 "usage: bench_guide CLIP.safetensors VOCAB SIZE CUTN STEPS [vqgan] [--device D] "
                 "[--precisions fp32,bf16] [--cuda-graph] [--profile]\n");
    return 2;
  }
  const std::string weights = argv[1], vocab = argv[2];
  const int64_t size = std::stoll(argv[3]), cutn = std::stoll(argv[4]), steps = std::stoll(argv[5]);
  bool with_vqgan = false, cuda_graph = false, profile = false;
  std::string device_spec = "cpu", precisions = "fp32,bf16";
  for (int i = 6; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "vqgan")
      with_vqgan = true;
    else if (a == "--cuda-graph")
      cuda_graph = true;
    else if (a == "--profile")
      profile = true;
    else if (a == "--device" && i + 1 < argc)
      device_spec = argv[++i];
    else if (a == "--precisions" && i + 1 < argc)
      precisions = argv[++i];
  }
  cg::set_cpu_threads(0);   // OMP_NUM_THREADS, as the Python side
  cg::keep_freed_memory();  // as the CLI does
  const torch::Device device = cg::parse_device(device_spec);
  nlohmann::json out;
  std::map<std::string, torch::Tensor> grads;
  for (const std::string& precision : cg::split(precisions, ',')) {
    cg::LoadOptions load;
    load.vocab = vocab;
    load.device = device;
    load.dtype = cg::parse_precision(precision);
    cg::ClipGuideOptions options = guide_options(cutn);
    options.cuda_graph = cuda_graph;
    std::vector<cg::GuideModel> models = {
        {std::make_shared<cg::LoadedClip>(cg::load_clip(weights, load)), weights, 1.0, 0}};
    auto guide = std::make_shared<cg::ClipGuide>(
        models, cg::PromptSchedule::parse("an oil painting of a lighthouse", 0, false),
        std::vector<cg::Prompt>{}, options);
    cg::OptimizerOptions adam;
    adam.lr = 0.05;
    cg::GuidedRun run(
        std::make_shared<cg::PixelGenerator>(size, size, cg::PixelParam::Raw, std::nullopt, 0, device), guide,
        adam, 0.0, 0);
    run.step();  // warm-up (and, with --cuda-graph, the capture)
    std::vector<double> times;
    {
      std::optional<OpProfile> ops;
      if (profile) ops.emplace();
      for (int64_t i = 0; i < steps; ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        run.step();
        if (device.is_cuda()) run.image().sum().item<double>();  // the step's work done, not just queued
        times.push_back(seconds_since(t0));
      }
    }
    out[precision + "_step_s"] = median(times);
    if (profile) {
      double total = 0;
      for (double t : times) total += t;
      std::fprintf(stderr, "%s, %lld steps:\n", precision.c_str(), static_cast<long long>(steps));
      OpProfile::print(total);
    }
    // The image gradient at a fixed image and cutout stream, for the bf16-vs-fp32 cosine.
    auto rng = cg::make_generator(123);
    auto fixed = cg::make_generator(7);
    const torch::Tensor image = torch::rand({1, 3, size, size}, fixed).to(device);
    grads[precision] = guide->gradient(image, rng).first.to(torch::kCPU);
  }
  if (grads.count("fp32") && grads.count("bf16")) {
    out["bf16_grad_cosine"] =
        torch::cosine_similarity(grads["fp32"].flatten(), grads["bf16"].flatten(), 0).item<double>();
  }
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
