#include "guidance/clip_guide.h"

#include <algorithm>
#include <cmath>

#include "clip/score.h"
#include "core/device.h"
#include "core/error.h"
#include "io/image.h"

namespace clipguide {

namespace {

torch::Tensor l2_normalize(const torch::Tensor& x) { return x / x.norm(2, -1, true).clamp_min(1e-12); }

// Value of `forward`, gradient of `backward` (Crowson's ReplaceGrad).
torch::Tensor replace_grad(const torch::Tensor& forward, const torch::Tensor& backward) {
  return backward + (forward - backward).detach();
}

// `clip`'s features [N, E] against targets [T, E], all normalized -> distances [T, N].
torch::Tensor distance(const ClipModel& clip, const torch::Tensor& f, const torch::Tensor& e,
                       GuideLoss kind) {
  if (kind == GuideLoss::Cosine) return 1 - torch::matmul(e, f.t());
  if (kind == GuideLoss::Sigmoid && clip.config().siglip()) {
    const torch::Tensor logits =
        apply_metric(e, f, Metric::Logit, clip.logit_scale_exp(), clip.logit_bias_tensor());
    return torch::softplus(-logits);  // -log sigmoid(logit)
  }
  return (f.unsqueeze(0) - e.unsqueeze(1)).norm(2, -1).div(2).arcsin().pow(2).mul(2);  // 2 arcsin(|a - b| /
                                                                                       // 2)^2
}

// Hasler & Susstrunk (2003) colourfulness over each sample's pixels: x [B, 3, H, W] -> [B].
torch::Tensor colourfulness(const torch::Tensor& x) {
  const torch::Tensor r = x.select(1, 0).flatten(1), g = x.select(1, 1).flatten(1),
                      b = x.select(1, 2).flatten(1);
  const torch::Tensor rg = r - g, yb = 0.5 * (r + g) - b;  // [B, HW]
  return torch::sqrt(rg.var(1, false) + yb.var(1, false) + 1e-12) +
         0.3 * torch::sqrt(rg.mean(1).pow(2) + yb.mean(1).pow(2) + 1e-12);
}

// Pixels in [0, 1] [N, 3, S, S] -> L2-normalized image features [N, E], float32.
torch::Tensor encode_normalized(ClipModel& clip, const torch::Tensor& pixels01) {
  const auto dtype = clip.parameters().front().scalar_type();
  const Preprocessing& p = clip.config().preprocess;
  return l2_normalize(
      clip.encode_image(normalize_pixels(pixels01, p.mean, p.std).to(dtype)).to(torch::kFloat));
}

// One model's loss terms [T, B] for the cutouts of B samples [B * n, 3, S, S] (sample after sample) and
// targets [T, E] with weights and stops [T]: the signed distances, floored at the stops for the gradient
// only, averaged over each sample's cutouts, times |weight|.
torch::Tensor model_terms(ClipModel& clip, GuideLoss kind, int64_t batch, const torch::Tensor& cutouts,
                          const torch::Tensor& targets, const torch::Tensor& weights,
                          const torch::Tensor& stops) {
  const torch::Tensor d = distance(clip, encode_normalized(clip, cutouts), targets, kind) *
                          weights.sign().unsqueeze(1);  // [T, B * n]
  const torch::Tensor floored = replace_grad(d, torch::max(d, stops.unsqueeze(1)));
  return weights.abs().unsqueeze(1) * floored.view({targets.size(0), batch, -1}).mean(2);  // [T, B]
}

// The whole image, padded with its edge to a square, at the model's resolution.
torch::Tensor whole_image(const torch::Tensor& image, int64_t size) {
  CutoutOptions overview;
  overview.cutn = 1;
  overview.overview = true;
  overview.augments.clear();
  torch::Generator unused = make_generator(0);
  return make_cutouts(image, size, overview, unused);
}

// Each image of `images` [B, 3, H, W], whole, at `size`: [B, 3, size, size].
torch::Tensor whole_images(const torch::Tensor& images, int64_t size) {
  std::vector<torch::Tensor> each;
  for (int64_t b = 0; b < images.size(0); ++b) each.push_back(whole_image(images.narrow(0, b, 1), size));
  return torch::cat(each);
}

}  // namespace

void ClipGuideOptions::validate() const {
  cutouts.validate();
  if (cuda_graph && !built_with_cuda())
    fail("cuda_graph needs a build with CUDA (scripts/setup --torch pip builds one)");
  for (double w : {tv_weight, range_weight, saturation_weight, init_weight}) {
    if (!std::isfinite(w)) fail("regulariser weights must be finite numbers");
  }
}

torch::Tensor tv_loss_per_sample(const torch::Tensor& x) {
  const torch::Tensor p = torch::nn::functional::pad(
      x, torch::nn::functional::PadFuncOptions({0, 1, 0, 1}).mode(torch::kReplicate));
  const int64_t H = x.size(2), W = x.size(3);
  const torch::Tensor dx = p.narrow(2, 0, H).narrow(3, 1, W) - p.narrow(2, 0, H).narrow(3, 0, W);
  const torch::Tensor dy = p.narrow(2, 1, H).narrow(3, 0, W) - p.narrow(2, 0, H).narrow(3, 0, W);
  return (dx.pow(2) + dy.pow(2)).mean({1, 2, 3});
}

torch::Tensor tv_loss(const torch::Tensor& x) { return tv_loss_per_sample(x).mean(); }

void LossParts::add(const std::string& name, const torch::Tensor& per_sample) {
  torch::Tensor column = per_sample.detach().to(torch::kFloat).reshape({-1, 1});  // [B, 1]
  if (values.defined()) {
    column = column.to(values.device());
    const int64_t rows = std::max(values.size(0), column.size(0));
    values = torch::cat({values.expand({rows, -1}), column.expand({rows, 1})}, 1);
  } else {
    values = column;
  }
  names.push_back(name);
}

void LossParts::accumulate(const LossParts& more, double scale) {
  for (size_t j = 0; j < more.names.size(); ++j) {
    const torch::Tensor column = more.values.select(1, static_cast<int64_t>(j)) * scale;  // [B]
    const auto it = std::find(names.begin(), names.end(), more.names[j]);
    if (it == names.end()) {
      add(more.names[j], column);
      continue;
    }
    torch::Tensor updated = values.clone();  // never in place: `values` may be shared with a copied result
    updated.select(1, it - names.begin()).add_(column.to(updated.device()));
    values = updated;
  }
}

std::vector<std::pair<std::string, double>> LossParts::read(int64_t b) const {
  std::vector<std::pair<std::string, double>> out;
  if (names.empty()) return out;
  const torch::Tensor row = values[b].to(torch::kCPU, torch::kDouble);  // the one read-back
  for (size_t i = 0; i < names.size(); ++i)
    out.emplace_back(names[i], row[static_cast<int64_t>(i)].item<double>());
  return out;
}

torch::Tensor clamp_grad_rms(const torch::Tensor& grad, double max_rms) {
  if (max_rms <= 0) return grad;
  std::vector<int64_t> shape(grad.dim(), 1);  // per sample: [B, 1, 1, ...]
  shape[0] = grad.size(0);
  const torch::Tensor rms = grad.pow(2).reshape({grad.size(0), -1}).mean(1).sqrt().view(shape);
  return grad * (max_rms / rms.clamp_min(max_rms));
}

ClipGuide::ClipGuide(std::vector<GuideModel> models, PromptSchedule text, std::vector<Prompt> image_prompts,
                     ClipGuideOptions options)
    : models_(std::move(models)), schedule_(std::move(text)), options_(std::move(options)) {
  options_.validate();
  if (models_.empty()) fail("guidance needs at least one CLIP model");
  for (const auto& m : models_) {
    if (!std::isfinite(m.weight)) fail(m.name, ": model weight must be a finite number");
    if (m.cutn != 0) check_cutn(m.cutn, message(m.name, ": cutn"));
    if (options_.cuda_graph && !m.clip->model->parameters().front().is_cuda()) {
      fail(m.name, ": --cuda-graph captures CUDA work; load the model with --device cuda");
    }
  }
  if (schedule_.segments.empty() && image_prompts.empty())
    fail("guidance needs a text prompt or an image prompt");
  torch::NoGradGuard no_grad;
  for (const auto& segment : schedule_.segments) {
    std::vector<Target> targets(segment.size());
    std::vector<std::string> texts;
    for (size_t i = 0; i < segment.size(); ++i) {
      targets[i] = {segment[i].text, segment[i].weight, segment[i].stop, {}};
      texts.push_back(segment[i].text);
    }
    for (const auto& m : models_) {
      const torch::Tensor e = embed_prompts(*m.clip, texts, {}, options_.truncate);  // [P, E], normalized
      const auto device = m.clip->model->parameters().front().device();
      for (size_t i = 0; i < segment.size(); ++i)
        targets[i].embeds.push_back(e[static_cast<int64_t>(i)].to(device));
    }
    segments_.push_back(std::move(targets));
  }
  for (const auto& p : image_prompts) {
    Target t{"image " + p.text, p.weight, p.stop, {}};
    const Image img = read_image(p.text);
    for (size_t m = 0; m < models_.size(); ++m) {
      const ClipConfig& config = models_[m].clip->model->config();
      const auto param = models_[m].clip->model->parameters().front();
      const torch::Tensor pixels = preprocess(img, config.image_resolution, config.preprocess)
                                       .unsqueeze(0)
                                       .to(param.device(), param.scalar_type());
      t.embeds.push_back(l2_normalize(models_[m].clip->model->encode_image(pixels).to(torch::kFloat))[0]);
    }
    image_targets_.push_back(std::move(t));
  }
}

void ClipGuide::set_init_image(const torch::Tensor& image) { init_image_ = image.detach().to(torch::kFloat); }

std::vector<ClipGuide::Target> ClipGuide::targets_at(int64_t step) const {
  std::vector<Target> out;
  if (!segments_.empty()) {
    const auto pos = schedule_.at(step);
    if (pos.toward_next > 0) {
      // Blend prompt i of this segment into prompt i of the next: embeddings slerp-free (lerp + renormalize).
      const double f = pos.toward_next;
      for (size_t i = 0; i < segments_[pos.segment].size(); ++i) {
        const Target& a = segments_[pos.segment][i];
        const Target& b = segments_[pos.segment + 1][i];
        Target t{
            a.label + " -> " + b.label, (1 - f) * a.weight + f * b.weight, (1 - f) * a.stop + f * b.stop, {}};
        if (std::isinf(a.stop) || std::isinf(b.stop)) t.stop = std::min(a.stop, b.stop);
        for (size_t m = 0; m < a.embeds.size(); ++m)
          t.embeds.push_back(l2_normalize((1 - f) * a.embeds[m] + f * b.embeds[m]));
        out.push_back(std::move(t));
      }
    } else {
      out = segments_[pos.segment];
    }
  }
  out.insert(out.end(), image_targets_.begin(), image_targets_.end());
  return out;
}

CutoutLossGraph& ClipGuide::graph_for(size_t model, const torch::Tensor& cutouts, int64_t targets,
                                      int64_t batch) const {
  auto& graph = graphs_[{model, cutouts.size(0), targets, batch}];
  if (!graph) {
    const int64_t dim = models_[model].clip->model->config().embed_dim;
    graph = std::make_unique<CutoutLossGraph>(
        [clip = models_[model].clip, kind = options_.loss, batch](
            const torch::Tensor& c, const torch::Tensor& e, const torch::Tensor& w, const torch::Tensor& s) {
          return model_terms(*clip->model, kind, batch, c, e, w, s);
        },
        cutouts, targets, dim);
  }
  return *graph;
}

GuideResult ClipGuide::loss(const torch::Tensor& images, torch::Generator& rng, int64_t step) const {
  TORCH_CHECK(images.dim() == 4 && images.size(0) >= 1 && images.size(1) == 3,
              "the guide takes images [B, 3, H, W]");
  const int64_t B = images.size(0);
  const std::vector<Target> targets = targets_at(step);
  GuideResult out;
  out.total = torch::zeros({B}, images.options().dtype(torch::kFloat));
  torch::Tensor parts;  // [T, B]: each target's term summed over the models
  std::vector<double> weights, stops;
  for (const Target& t : targets) weights.push_back(t.weight), stops.push_back(t.stop);
  for (size_t m = 0; m < models_.size() && !targets.empty(); ++m) {
    CutoutOptions cut = options_.cutouts;
    if (models_[m].cutn > 0) cut.cutn = models_[m].cutn;
    const int64_t res = models_[m].clip->model->config().image_resolution;
    std::vector<torch::Tensor> per_sample;  // each sample's cutouts, drawn in turn
    for (int64_t b = 0; b < B; ++b) per_sample.push_back(make_cutouts(images.narrow(0, b, 1), res, cut, rng));
    const torch::Tensor cutouts =
        B == 1 ? per_sample.front() : torch::cat(per_sample);  // [B * cutn, 3, res, res]
    std::vector<torch::Tensor> embeds;
    for (const Target& t : targets) embeds.push_back(t.embeds[m]);
    const auto on_device = torch::TensorOptions().dtype(torch::kFloat).device(cutouts.device());
    const torch::Tensor e = torch::stack(embeds);                                  // [T, E]
    const torch::Tensor w = torch::tensor(weights, torch::kDouble).to(on_device);  // [T]
    const torch::Tensor s = torch::tensor(stops, torch::kDouble).to(on_device);    // [T]
    torch::Tensor terms, total;                                                    // [T, B], [B]
    if (options_.cuda_graph) {
      // The graph gives the terms and their gradient at the cutouts; the cutouts' own gradient (to the
      // images) runs eagerly through a surrogate per sample whose value is zero and whose gradient is the
      // graph's.
      const GraphedLoss g = graph_for(m, cutouts, e.size(0), B).run(cutouts, e, w, s);
      const torch::Tensor surrogate = (cutouts * g.grad).view({B, -1}).sum(1);
      terms = g.terms;
      total = terms.sum(0) + surrogate - surrogate.detach();
    } else {
      terms = model_terms(*models_[m].clip->model, options_.loss, B, cutouts, e, w, s);
      total = terms.sum(0);
    }
    out.total = out.total + models_[m].weight * total.to(out.total.device());
    const torch::Tensor weighted = models_[m].weight * terms.detach().to(out.total.device());
    parts = parts.defined() ? parts + weighted : weighted;
  }
  for (size_t t = 0; t < targets.size() && parts.defined(); ++t)
    out.parts.add(targets[t].label, parts[static_cast<int64_t>(t)]);
  const torch::Tensor x = images.to(torch::kFloat);
  auto add = [&](const char* name, double weight, const std::function<torch::Tensor()>& per_sample) {
    if (weight == 0) return;
    const torch::Tensor v = weight * per_sample();  // [B]
    out.total = out.total + v;
    out.parts.add(name, v);
  };
  add("tv", options_.tv_weight, [&] { return tv_loss_per_sample(x); });
  add("range", options_.range_weight, [&] { return (x - x.clamp(0, 1)).pow(2).mean({1, 2, 3}); });
  add("saturation", options_.saturation_weight, [&] { return colourfulness(x); });
  if (init_image_.defined()) {
    add("init", options_.init_weight, [&] {
      return (x - init_image_.to(x.device())).pow(2).mean({1, 2, 3});
    });
  }
  return out;
}

std::pair<torch::Tensor, GuideResult> ClipGuide::gradient(const torch::Tensor& images, torch::Generator& rng,
                                                          int64_t step, double scale, int64_t batches) const {
  TORCH_CHECK(batches >= 1, "gradient needs at least one batch of cutouts");
  torch::AutoGradMode enable(true);
  const torch::Tensor x = images.detach().to(torch::kFloat).requires_grad_(true);
  const double share = scale / static_cast<double>(batches);
  torch::Tensor grad;
  GuideResult summary;
  for (int64_t b = 0; b < batches; ++b) {
    const GuideResult r = loss(x, rng, step);
    // Samples are independent: the gradient of the sum is each sample's own.
    const torch::Tensor g = torch::autograd::grad({r.total.sum() * share}, {x})[0];
    grad = grad.defined() ? grad + g : g;
    const torch::Tensor total = r.total.detach() * share;
    summary.total = summary.total.defined() ? summary.total + total : total;
    summary.parts.accumulate(r.parts, share);
  }
  return {grad, std::move(summary)};
}

torch::Tensor ClipGuide::scores(const torch::Tensor& images, int64_t step) const {
  TORCH_CHECK(images.dim() == 4 && images.size(0) >= 1 && images.size(1) == 3,
              "scores takes images [B, 3, H, W]");
  torch::NoGradGuard no_grad;
  const std::vector<Target> targets = targets_at(step);
  torch::Tensor sum = torch::zeros({images.size(0)}, images.options().dtype(torch::kFloat));
  double norm = 0;
  for (size_t m = 0; m < models_.size(); ++m) {
    const int64_t res = models_[m].clip->model->config().image_resolution;
    const torch::Tensor f =
        encode_normalized(*models_[m].clip->model, whole_images(images.to(torch::kFloat), res));  // [B, E]
    for (const Target& t : targets) {
      sum = sum + models_[m].weight * t.weight * torch::matmul(f, t.embeds[m]).to(sum.device());
      norm += std::abs(models_[m].weight * t.weight);
    }
  }
  return norm > 0 ? sum / norm : sum;
}

double ClipGuide::score(const torch::Tensor& image, int64_t step) const {
  TORCH_CHECK(image.dim() == 4 && image.size(0) == 1, "score takes one image [1, 3, H, W]");
  return scores(image, step).item<double>();
}

torch::Tensor ClipGuide::condition(size_t model, int64_t step) const {
  TORCH_CHECK(model < models_.size(), "no guide model ", model);
  const int64_t dim = models_[model].clip->model->config().embed_dim;
  torch::Tensor sum = torch::zeros({dim}, models_[model].clip->model->parameters().front().device());
  for (const Target& t : targets_at(step)) sum = sum + t.weight * t.embeds[model];
  // Renormalized where the weights do not cancel; computed on the device, with no read-back.
  const torch::Tensor norm = sum.norm();
  return (sum / torch::where(norm > 1e-6, norm, torch::ones_like(norm))).unsqueeze(0);
}

}  // namespace clipguide
