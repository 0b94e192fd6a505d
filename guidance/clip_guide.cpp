#include "guidance/clip_guide.h"

#include <cmath>

#include "clip/device.h"
#include "clip/error.h"
#include "clip/image.h"
#include "clip/score.h"

namespace clipguide {

namespace {

torch::Tensor l2_normalize(const torch::Tensor& x) { return x / x.norm(2, -1, true).clamp_min(1e-12); }

// Value of `forward`, gradient of `backward` (Crowson's ReplaceGrad).
torch::Tensor replace_grad(const torch::Tensor& forward, const torch::Tensor& backward) {
  return backward + (forward - backward).detach();
}

// Features [N, E] against targets [T, E], all normalized -> distances [T, N].
torch::Tensor distance(const torch::Tensor& f, const torch::Tensor& e, GuideLoss kind) {
  if (kind == GuideLoss::Cosine) return 1 - torch::matmul(e, f.t());
  return (f.unsqueeze(0) - e.unsqueeze(1)).norm(2, -1).div(2).arcsin().pow(2).mul(2);  // 2 arcsin(|a - b| / 2)^2
}

// Hasler & Susstrunk (2003) colourfulness over all pixels.
torch::Tensor colourfulness(const torch::Tensor& x) {
  const torch::Tensor r = x.select(1, 0), g = x.select(1, 1), b = x.select(1, 2);
  const torch::Tensor rg = r - g, yb = 0.5 * (r + g) - b;
  return torch::sqrt(rg.var(false) + yb.var(false) + 1e-12) + 0.3 * torch::sqrt(rg.mean().pow(2) + yb.mean().pow(2) + 1e-12);
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

}  // namespace

GuideLoss parse_guide_loss(const std::string& name) {
  if (name == "spherical") return GuideLoss::Spherical;
  if (name == "cosine") return GuideLoss::Cosine;
  fail("--loss ", name, " is not one of spherical, cosine");
}

const char* guide_loss_name(GuideLoss loss) { return loss == GuideLoss::Cosine ? "cosine" : "spherical"; }

void ClipGuideOptions::validate() const {
  cutouts.validate();
  if (cuda_graph && !built_with_cuda()) fail("--cuda-graph needs a build with CUDA (scripts/setup --torch pip)");
  for (double w : {tv_weight, range_weight, saturation_weight, init_weight}) {
    if (!std::isfinite(w)) fail("regulariser weights must be finite numbers");
  }
}

torch::Tensor tv_loss(const torch::Tensor& x) {
  const torch::Tensor p = torch::nn::functional::pad(x, torch::nn::functional::PadFuncOptions({0, 1, 0, 1}).mode(torch::kReplicate));
  const int64_t H = x.size(2), W = x.size(3);
  const torch::Tensor dx = p.narrow(2, 0, H).narrow(3, 1, W) - p.narrow(2, 0, H).narrow(3, 0, W);
  const torch::Tensor dy = p.narrow(2, 1, H).narrow(3, 0, W) - p.narrow(2, 0, H).narrow(3, 0, W);
  return (dx.pow(2) + dy.pow(2)).mean();
}

torch::Generator make_generator(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

torch::Tensor clamp_grad_rms(const torch::Tensor& grad, double max_rms) {
  if (max_rms <= 0) return grad;
  const torch::Tensor rms = grad.pow(2).mean().sqrt();
  return grad * (max_rms / rms.clamp_min(max_rms));
}

ClipGuide::ClipGuide(std::vector<GuideModel> models, PromptSchedule text, std::vector<Prompt> image_prompts,
                     ClipGuideOptions options)
    : models_(std::move(models)), schedule_(std::move(text)), options_(std::move(options)) {
  options_.validate();
  if (models_.empty()) fail("guidance needs at least one CLIP model");
  for (const auto& m : models_) {
    if (!std::isfinite(m.weight)) fail(m.name, ": model weight must be a finite number");
    if (m.cutn < 0 || m.cutn > 4096) fail(m.name, ": cutn must be between 1 and 4096");
    if (options_.cuda_graph && !m.clip->model->parameters().front().is_cuda()) {
      fail(m.name, ": --cuda-graph captures CUDA work; load the model with --device cuda");
    }
  }
  if (schedule_.segments.empty() && image_prompts.empty()) fail("guidance needs a text prompt or an image prompt");
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
      for (size_t i = 0; i < segment.size(); ++i) targets[i].embeds.push_back(e[static_cast<int64_t>(i)].to(device));
    }
    segments_.push_back(std::move(targets));
  }
  for (const auto& p : image_prompts) {
    Target t{"image " + p.text, p.weight, p.stop, {}};
    const Image img = read_image(p.text);
    for (size_t m = 0; m < models_.size(); ++m) {
      const int64_t res = models_[m].clip->model->config().image_resolution;
      const auto param = models_[m].clip->model->parameters().front();
      const torch::Tensor pixels = preprocess(img, res).unsqueeze(0).to(param.device(), param.scalar_type());
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
        Target t{a.label + " -> " + b.label, (1 - f) * a.weight + f * b.weight, (1 - f) * a.stop + f * b.stop, {}};
        if (std::isinf(a.stop) || std::isinf(b.stop)) t.stop = std::min(a.stop, b.stop);
        for (size_t m = 0; m < a.embeds.size(); ++m) t.embeds.push_back(l2_normalize((1 - f) * a.embeds[m] + f * b.embeds[m]));
        out.push_back(std::move(t));
      }
    } else {
      out = segments_[pos.segment];
    }
  }
  out.insert(out.end(), image_targets_.begin(), image_targets_.end());
  return out;
}

torch::Tensor ClipGuide::encode(size_t model, const torch::Tensor& pixels01) const {
  ClipModel& clip = *models_[model].clip->model;
  const auto dtype = clip.parameters().front().scalar_type();
  return l2_normalize(clip.encode_image(normalize_pixels(pixels01).to(dtype)).to(torch::kFloat));
}

torch::Tensor ClipGuide::model_terms(size_t model, const torch::Tensor& cutouts, const torch::Tensor& targets,
                                     const torch::Tensor& weights, const torch::Tensor& stops) const {
  const torch::Tensor d = distance(encode(model, cutouts), targets, options_.loss) * weights.sign().unsqueeze(1);  // [T, N]
  return weights.abs() * replace_grad(d, torch::max(d, stops.unsqueeze(1))).mean(1);                           // [T]
}

CutoutLossGraph& ClipGuide::graph_for(size_t model, const torch::Tensor& cutouts, int64_t targets) const {
  auto& graph = graphs_[{model, cutouts.size(0), targets}];
  if (!graph) {
    const int64_t dim = models_[model].clip->model->config().embed_dim;
    graph = std::make_unique<CutoutLossGraph>(
        // The graph lives in graphs_, so it cannot outlive the guide it calls back into.
        [this, model](const torch::Tensor& c, const torch::Tensor& e, const torch::Tensor& w, const torch::Tensor& s) {
          return model_terms(model, c, e, w, s);
        },
        cutouts, targets, dim);
  }
  return *graph;
}

GuideResult ClipGuide::loss(const torch::Tensor& image, torch::Generator& rng, int64_t step) const {
  TORCH_CHECK(image.dim() == 4 && image.size(0) == 1 && image.size(1) == 3, "the guide takes one image [1, 3, H, W]");
  const std::vector<Target> targets = targets_at(step);
  GuideResult out;
  out.total = torch::zeros({}, image.options().dtype(torch::kFloat));
  torch::Tensor parts;  // [T]: each target's term summed over the models, read back once at the end
  std::vector<double> weights, stops;
  for (const Target& t : targets) weights.push_back(t.weight), stops.push_back(t.stop);
  for (size_t m = 0; m < models_.size() && !targets.empty(); ++m) {
    CutoutOptions cut = options_.cutouts;
    if (models_[m].cutn > 0) cut.cutn = models_[m].cutn;
    const int64_t res = models_[m].clip->model->config().image_resolution;
    const torch::Tensor cutouts = make_cutouts(image, res, cut, rng);  // [cutn, 3, res, res]
    std::vector<torch::Tensor> embeds;
    for (const Target& t : targets) embeds.push_back(t.embeds[m]);
    const auto on_device = torch::TensorOptions().dtype(torch::kFloat).device(cutouts.device());
    const torch::Tensor e = torch::stack(embeds);                                  // [T, E]
    const torch::Tensor w = torch::tensor(weights, torch::kDouble).to(on_device);  // [T]
    const torch::Tensor s = torch::tensor(stops, torch::kDouble).to(on_device);    // [T]
    torch::Tensor terms, total;
    if (options_.cuda_graph) {
      // The graph gives the terms and their gradient at the cutouts; the cutouts' own gradient (to the image) runs
      // eagerly through a surrogate whose value is zero and whose gradient is the graph's.
      const GraphedLoss g = graph_for(m, cutouts, e.size(0)).run(cutouts, e, w, s);
      const torch::Tensor surrogate = (cutouts * g.grad).sum();
      terms = g.terms;
      total = terms.sum() + surrogate - surrogate.detach();
    } else {
      terms = model_terms(m, cutouts, e, w, s);
      total = terms.sum();
    }
    out.total = out.total + models_[m].weight * total;
    parts = parts.defined() ? parts + models_[m].weight * terms.detach() : models_[m].weight * terms.detach();
  }
  if (parts.defined()) {
    const torch::Tensor part_values = parts.to(torch::kCPU, torch::kDouble);
    for (size_t t = 0; t < targets.size(); ++t) out.parts.emplace_back(targets[t].label, part_values[t].item<double>());
  }
  const torch::Tensor x = image.to(torch::kFloat);
  auto add = [&](const char* name, double weight, const std::function<torch::Tensor()>& term) {
    if (weight == 0) return;
    const torch::Tensor v = weight * term();
    out.total = out.total + v;
    out.parts.emplace_back(name, v.item<double>());
  };
  add("tv", options_.tv_weight, [&] { return tv_loss(x); });
  add("range", options_.range_weight, [&] { return (x - x.clamp(0, 1)).pow(2).mean(); });
  add("saturation", options_.saturation_weight, [&] { return colourfulness(x); });
  if (init_image_.defined()) {
    add("init", options_.init_weight, [&] { return (x - init_image_.to(x.device())).pow(2).mean(); });
  }
  return out;
}

std::pair<torch::Tensor, GuideResult> ClipGuide::gradient(const torch::Tensor& image, torch::Generator& rng,
                                                          int64_t step) const {
  torch::AutoGradMode enable(true);
  const torch::Tensor x = image.detach().to(torch::kFloat).requires_grad_(true);
  GuideResult result = loss(x, rng, step);
  torch::Tensor grad = torch::autograd::grad({result.total}, {x})[0];
  result.total = result.total.detach();
  return {grad, std::move(result)};
}

double ClipGuide::score(const torch::Tensor& image, int64_t step) const {
  torch::NoGradGuard no_grad;
  const std::vector<Target> targets = targets_at(step);
  double sum = 0, norm = 0;
  for (size_t m = 0; m < models_.size(); ++m) {
    const int64_t res = models_[m].clip->model->config().image_resolution;
    const torch::Tensor f = encode(m, whole_image(image.to(torch::kFloat), res))[0];  // [E]
    for (const Target& t : targets) {
      sum += models_[m].weight * t.weight * (f * t.embeds[m]).sum().item<double>();
      norm += std::abs(models_[m].weight * t.weight);
    }
  }
  return norm > 0 ? sum / norm : 0.0;
}

torch::Tensor ClipGuide::condition(size_t model, int64_t step) const {
  TORCH_CHECK(model < models_.size(), "no guide model ", model);
  const int64_t dim = models_[model].clip->model->config().embed_dim;
  torch::Tensor sum = torch::zeros({dim}, models_[model].clip->model->parameters().front().device());
  for (const Target& t : targets_at(step)) sum = sum + t.weight * t.embeds[model];
  const double norm = sum.norm().item<double>();
  return (norm > 1e-6 ? sum / norm : sum).unsqueeze(0);
}

}  // namespace clipguide
