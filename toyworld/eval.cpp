#include "toyworld/eval.h"

#include "clip/embed.h"
#include "guidance/cutouts.h"
#include "io/image.h"
#include "toyworld/train.h"
#include "toyworld/world.h"

namespace clipguide::toyworld {

namespace {

// L2-normalized features, in batches, without gradients.
torch::Tensor image_features(ClipModel& model, const torch::Tensor& images01) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> parts;
  const auto dtype = model.parameters().front().scalar_type();
  const auto device = model.parameters().front().device();
  for (int64_t i = 0; i < images01.size(0); i += 128) {
    const torch::Tensor x =
        normalize_pixels(images01.narrow(0, i, std::min<int64_t>(128, images01.size(0) - i)));
    parts.push_back(model.encode_image(x.to(device, dtype)).to(torch::kCPU, torch::kFloat));
  }
  const torch::Tensor f = torch::cat(parts);
  return f / f.norm(2, -1, true);
}

// L2-normalized, all in one batch.
torch::Tensor text_features(LoadedClip& clip, const std::vector<std::string>& texts) {
  EmbedOptions options;
  options.normalize = true;
  options.batch_size = static_cast<int64_t>(texts.size());
  return embed_texts(clip, texts, options);
}

}  // namespace

torch::Tensor blur_images(const torch::Tensor& images, int64_t size) {
  const int64_t side = images.size(-1);
  return size <= 0 || size >= side ? images : resample(resample(images, size), side);
}

ZeroShot zero_shot(LoadedClip& clip, int64_t images, uint64_t seed, int64_t blur_size) {
  ClipModel& model = *clip.model;
  // The prompt grid: index (c * kShapes + s) * kColours + b, with c != b.
  std::vector<std::string> prompts;
  std::vector<std::array<int, 3>> labels;
  for (int c = 0; c < kColours; ++c) {
    for (int s = 0; s < kShapes; ++s) {
      for (int b = 0; b < kColours; ++b) {
        if (b == c) continue;
        prompts.push_back(prompt_for(static_cast<Colour>(c), static_cast<Shape>(s), static_cast<Colour>(b)));
        labels.push_back({c, s, b});
      }
    }
  }
  const torch::Tensor text = text_features(clip, prompts);
  std::mt19937_64 rng = step_rng(seed, 0);
  std::vector<Scene> scenes;
  for (int64_t i = 0; i < images; ++i) {
    // Cycle through the 48 colour+shape classes so every one, held-out ones included, is measured.
    const auto c = static_cast<Colour>(i % (kColours * kShapes) / kShapes);
    const auto s = static_cast<Shape>(i % kShapes);
    scenes.push_back(random_single_object(c, s, rng));
  }
  const torch::Tensor img = image_features(model, blur_images(render_batch(scenes), blur_size));
  const double scale = model.logit_scale_exp().item<double>();
  const torch::Tensor probs = torch::softmax(scale * torch::matmul(img, text.t()), 1);  // [images, prompts]
  auto p = probs.accessor<float, 2>();
  ZeroShot out;
  out.images = images;
  int64_t colour = 0, shape = 0, background = 0, joint = 0;
  for (int64_t i = 0; i < images; ++i) {
    std::array<double, kColours> pc{}, pb{};
    std::array<double, kShapes> ps{};
    std::array<double, kColours * kShapes> pj{};
    for (size_t k = 0; k < labels.size(); ++k) {
      const auto& [c, s, b] = labels[k];
      pc[c] += p[i][static_cast<int64_t>(k)];
      ps[s] += p[i][static_cast<int64_t>(k)];
      pb[b] += p[i][static_cast<int64_t>(k)];
      pj[c * kShapes + s] += p[i][static_cast<int64_t>(k)];
    }
    auto argmax = [](const auto& a) {
      return static_cast<int>(std::max_element(a.begin(), a.end()) - a.begin());
    };
    const Object& o = scenes[static_cast<size_t>(i)].objects[0];
    colour += argmax(pc) == static_cast<int>(o.colour);
    shape += argmax(ps) == static_cast<int>(o.shape);
    background += argmax(pb) == static_cast<int>(scenes[static_cast<size_t>(i)].background);
    if (is_held_out(o.colour, o.shape)) {
      ++out.held_out_images;
      joint += argmax(pj) == static_cast<int>(o.colour) * kShapes + static_cast<int>(o.shape);
    }
  }
  const auto n = static_cast<double>(images);
  out.colour = static_cast<double>(colour) / n;
  out.shape = static_cast<double>(shape) / n;
  out.background = static_cast<double>(background) / n;
  out.held_out_joint =
      out.held_out_images ? static_cast<double>(joint) / static_cast<double>(out.held_out_images) : 0;
  return out;
}

RerankResult rerank_classes(LoadedClip& clip, uint64_t seed, int64_t blur_size) {
  std::mt19937_64 rng = step_rng(seed, 1);
  std::vector<std::string> prompts;
  std::vector<Scene> scenes;
  for (int c = 0; c < kColours; ++c) {
    for (int s = 0; s < kShapes; ++s) {
      scenes.push_back(random_single_object(static_cast<Colour>(c), static_cast<Shape>(s), rng));
      prompts.push_back(prompt_for(static_cast<Colour>(c), static_cast<Shape>(s), std::nullopt));
    }
  }
  const torch::Tensor images01 = blur_images(render_batch(scenes), blur_size);
  const torch::Tensor sim =
      torch::matmul(text_features(clip, prompts), image_features(*clip.model, images01).t());
  const torch::Tensor best = sim.argmax(1);
  RerankResult out;
  out.classes = static_cast<int64_t>(prompts.size());
  for (int64_t k = 0; k < out.classes; ++k) out.top1 += best[k].item<int64_t>() == k;
  return out;
}

Reconstruction reconstruction(Vqgan& model, int64_t images, uint64_t seed) {
  std::mt19937_64 rng = step_rng(seed, 2);
  SceneOptions options;
  options.two_object_rate = 0;  // the judge reads one object
  options.allow_held_out = true;
  std::vector<Scene> scenes;
  for (int64_t i = 0; i < images; ++i) scenes.push_back(sample_scene(rng, options));
  const torch::Tensor x = render_batch(scenes);
  torch::NoGradGuard no_grad;
  const auto device = model.codebook().device();
  std::vector<torch::Tensor> parts;
  for (int64_t i = 0; i < images; i += 32) {
    const torch::Tensor b = x.narrow(0, i, std::min<int64_t>(32, images - i)).to(device);
    parts.push_back(((model.decode(model.quantize(model.encode(b * 2 - 1)).z_q) + 1) / 2).clamp(0, 1).cpu());
  }
  const torch::Tensor rec = torch::cat(parts);
  Reconstruction out;
  out.images = images;
  out.l1 = (rec - x).abs().mean().item<double>();
  int64_t same = 0;
  for (int64_t i = 0; i < images; ++i) {
    const Judgement a = judge(x[i]), b = judge(rec[i]);
    same += a.background == b.background && a.found_object == b.found_object && a.colour == b.colour &&
            a.shape == b.shape;
  }
  out.judged_same = static_cast<double>(same) / static_cast<double>(images);
  return out;
}

}  // namespace clipguide::toyworld
