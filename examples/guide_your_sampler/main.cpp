// guide_your_sampler: a plain DDIM loop of your own over any torch::nn::Module that predicts noise, with
// clipguide asked for two things only: the CLIP guidance gradient of a batch, and the reranking of the
// finished candidates. Everything else (schedule, sampler, denoiser) is yours.
//
//   guide_your_sampler CLIP [--vocab V] [-p PROMPT] [-n 4] [--size 64] [--steps 25] [--scale 2] [--seed 0]
//                      [--out best.ppm]
//
// The denoiser here is a small random-weight network standing in for yours: swap in any module whose
// forward(x [B, 3, H, W] in [-1, 1], t [B]) returns the predicted noise.
#include <clipguide/guidance/clip_guide.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>

namespace cg = clipguide;

struct StandInDenoiser : torch::nn::Module {
  torch::nn::Conv2d in{nullptr}, out{nullptr};
  StandInDenoiser() {
    in = register_module("in", torch::nn::Conv2d(torch::nn::Conv2dOptions(4, 32, 3).padding(1)));
    out = register_module("out", torch::nn::Conv2d(torch::nn::Conv2dOptions(32, 3, 3).padding(1)));
  }
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t) {
    const torch::Tensor time =
        (t.to(torch::kFloat) / 1000).view({-1, 1, 1, 1}).expand({x.size(0), 1, x.size(2), x.size(3)});
    return 0.1 * out(torch::silu(in(torch::cat({x, time}, 1))));
  }
};

// The cosine schedule's alpha_bar (Nichol & Dhariwal 2021) at step t of 1000.
double alpha_bar(double t) {
  const double f = std::cos((t / 1000 + 0.008) / 1.008 * M_PI / 2);
  return std::min(f * f / 0.9999, 0.9999);  // normalised to alpha_bar(0) ≈ 1, never exactly 1
}

int main(int argc, char** argv) {
  std::string clip_path, vocab, prompt = "a red circle", out_path = "best.ppm";
  int64_t n = 4, size = 64, steps = 25, seed = 0;
  double scale = 2.0;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const char* v = i + 1 < argc ? argv[i + 1] : "";
    if (a == "--vocab")
      vocab = v, ++i;
    else if (a == "-p")
      prompt = v, ++i;
    else if (a == "-n")
      n = std::stoll(v), ++i;
    else if (a == "--size")
      size = std::stoll(v), ++i;
    else if (a == "--steps")
      steps = std::stoll(v), ++i;
    else if (a == "--scale")
      scale = std::stod(v), ++i;
    else if (a == "--seed")
      seed = std::stoll(v), ++i;
    else if (a == "--out")
      out_path = v, ++i;
    else
      clip_path = a;
  }
  if (clip_path.empty()) {
    std::cerr << "usage: guide_your_sampler CLIP [--vocab V] [-p PROMPT] [-n N] [--size S] [--steps K] "
                 "[--scale G] [--seed S] [--out FILE.ppm]\n";
    return 2;
  }
  try {
    torch::manual_seed(seed);  // your program's own randomness: clipguide never touches the global seed
    torch::nn::AnyModule denoiser(std::make_shared<StandInDenoiser>());

    // 1. clipguide: a guide for the prompt with one CLIP model (add more for an ensemble).
    cg::LoadOptions load;
    load.vocab = vocab;
    auto clip = std::make_shared<cg::LoadedClip>(cg::load_clip(clip_path, load));
    cg::ClipGuideOptions options;
    options.cutouts.cutn = 8;
    const cg::ClipGuide guide({{clip, clip_path, 1.0, 0}}, cg::PromptSchedule::parse(prompt, 0, false), {},
                              options);
    torch::Generator cutout_rng = cg::make_generator(seed);

    // 2. Your sampler: DDIM (eta 0) over `steps` of 1000, all n candidates in one batch.
    torch::NoGradGuard no_grad;
    torch::Tensor x = torch::randn({n, 3, size, size});
    torch::Tensor x0;
    for (int64_t i = 0; i < steps; ++i) {
      const double t = 999.0 * (steps - i) / steps, t_prev = 999.0 * (steps - i - 1) / steps;
      const double ab = alpha_bar(t), ab_prev = alpha_bar(t_prev);
      torch::Tensor eps = denoiser.forward(x, torch::full({n}, t));
      x0 = ((x - std::sqrt(1 - ab) * eps) / std::sqrt(ab)).clamp(-1, 1);
      if (scale != 0) {
        // The guidance gradient of every candidate at once, d loss / d image01 [n, 3, H, W]: step the
        // predicted image down it, and re-derive the noise that goes with it.
        const auto [grad, loss] = guide.gradient((x0 + 1) / 2, cutout_rng, i);
        x0 = (x0 - scale * grad / grad.pow(2).mean({1, 2, 3}, true).sqrt().clamp_min(1e-8) * 0.05)
                 .clamp(-1, 1);
        eps = (x - std::sqrt(ab) * x0) / std::sqrt(1 - ab);
        if (i % 5 == 0 || i == steps - 1) {  // the losses stay tensors until read, here every fifth step
          std::printf("step %3lld  mean loss %.4f\n", static_cast<long long>(i),
                      loss.total.mean().item<double>());
        }
      }
      x = std::sqrt(ab_prev) * x0 + std::sqrt(1 - ab_prev) * eps;
    }

    // 3. clipguide again: rank the finished candidates by how well they fit the prompt.
    const torch::Tensor images = (x0 + 1) / 2;
    const torch::Tensor scores = guide.scores(images);  // [n]
    const torch::Tensor order = scores.argsort(0, true);
    for (int64_t r = 0; r < n; ++r) {
      const int64_t c = order[r].item<int64_t>();
      std::printf("rank %lld: candidate %lld, CLIP score %.6f\n", static_cast<long long>(r + 1),
                  static_cast<long long>(c), scores[c].item<double>());
    }
    std::printf("mean CLIP score %.6f\n", scores.mean().item<double>());

    // The best as a binary PPM, written here without clipguide.
    const torch::Tensor best = images[order[0].item<int64_t>()]
                                   .mul(255)
                                   .round()
                                   .clamp(0, 255)
                                   .to(torch::kUInt8)
                                   .permute({1, 2, 0})
                                   .contiguous();
    std::ofstream ppm(out_path, std::ios::binary);
    ppm << "P6\n" << size << " " << size << "\n255\n";
    ppm.write(reinterpret_cast<const char*>(best.data_ptr<uint8_t>()), best.numel());
    if (!ppm) throw std::runtime_error("cannot write " + out_path);
  } catch (const std::exception& e) {
    std::cerr << "guide_your_sampler: error: " << cg::error_line(e) << "\n";
    return 1;
  }
  return 0;
}
