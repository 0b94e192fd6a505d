// The CLIP guide: a differentiable image-prompt loss that any generator or sampler can follow through its gradient.
// image [1, 3, H, W] in [0, 1] -> cutouts -> CLIP image embeddings -> distance to cached prompt embeddings, plus
// image regularisers. Ref: Crowson's VQGAN+CLIP notebook (Prompt, spherical_dist_loss, replace_grad) and
// Disco Diffusion (tv_loss, range_loss).
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "clip/load.h"
#include "guidance/cuda_graph.h"
#include "guidance/cutouts.h"
#include "prompts/prompt.h"

namespace clipguide {

enum class GuideLoss { Spherical, Cosine };
// "spherical" or "cosine"; anything else is an Error listing them.
GuideLoss parse_guide_loss(const std::string& name);
const char* guide_loss_name(GuideLoss loss);

// One CLIP model of the ensemble, with its own weight and cutout count.
struct GuideModel {
  std::shared_ptr<LoadedClip> clip;
  std::string name;       // for labels: the path or name given
  double weight = 1.0;
  int64_t cutn = 0;       // 0: the guide's CutoutOptions::cutn
};

struct ClipGuideOptions {
  CutoutOptions cutouts;
  GuideLoss loss = GuideLoss::Spherical;
  double tv_weight = 0;          // total variation (Disco Diffusion's tv_loss)
  double range_weight = 0;       // squared excess outside [0, 1]
  double saturation_weight = 0;  // Hasler-Susstrunk colourfulness; positive mutes colours, negative boosts them
  double init_weight = 0;        // pixel MSE to the init image (set_init_image)
  bool truncate = false;         // prompts longer than the context are truncated instead of failing
  // Each model's cutouts -> CLIP -> loss -> gradient as one captured CUDA graph, replayed every step (models on
  // CUDA, a build with CUDA). The cutouts are made eagerly as ever, so the numbers are those of the eager step.
  bool cuda_graph = false;

  void validate() const;
};

// The loss of one evaluation: the differentiable total and its parts by name (each prompt, each regulariser).
struct GuideResult {
  torch::Tensor total;
  std::vector<std::pair<std::string, double>> parts;
};

class ClipGuide {
 public:
  // Text prompts (a schedule; one segment for a fixed prompt) and image prompts, embedded once per model, without
  // gradients. A zero or negative total weight is allowed: positive and negative prompts are separate terms.
  ClipGuide(std::vector<GuideModel> models, PromptSchedule text, std::vector<Prompt> image_prompts,
            ClipGuideOptions options);

  // Pixel MSE target for init_weight; [1, 3, H, W] in [0, 1].
  void set_init_image(const torch::Tensor& image);

  // The loss at `step` of the prompt schedule; differentiable in `image`. Cutouts draw from `rng` only.
  GuideResult loss(const torch::Tensor& image, torch::Generator& rng, int64_t step = 0) const;
  // d loss / d image, [1, 3, H, W] float32, with the parts of the loss it came from.
  std::pair<torch::Tensor, GuideResult> gradient(const torch::Tensor& image, torch::Generator& rng, int64_t step = 0) const;
  // How well the whole image fits the prompts at `step`, without cutouts or augmentation: the weighted mean cosine
  // similarity over prompts and models (negative prompts subtract). For reranking candidates.
  double score(const torch::Tensor& image, int64_t step = 0) const;
  // What a CLIP-conditioned generator is conditioned on at `step`: the weighted sum of the prompts' embeddings (text and
  // image, negative weights subtract) for model `model`, renormalized, [1, E] on that model's device; zeros when the
  // weights cancel or are all zero (the unconditional prediction).
  torch::Tensor condition(size_t model, int64_t step = 0) const;

  const std::vector<GuideModel>& models() const { return models_; }
  const ClipGuideOptions& options() const { return options_; }

 private:
  struct Target {
    std::string label;
    double weight = 1, stop = 0;
    std::vector<torch::Tensor> embeds;  // per model, [E] L2-normalized float32 on the model's device
  };
  std::vector<Target> targets_at(int64_t step) const;
  torch::Tensor encode(size_t model, const torch::Tensor& pixels01) const;  // -> [N, E] normalized float32
  // Model `model`'s loss terms [T] for cutouts [N, 3, S, S] and targets [T, E] with weights and stops [T]: the
  // signed distances, floored at the stops for the gradient only, averaged over the cutouts, times |weight|.
  torch::Tensor model_terms(size_t model, const torch::Tensor& cutouts, const torch::Tensor& targets,
                            const torch::Tensor& weights, const torch::Tensor& stops) const;
  // The captured graph for model `model` at these shapes, made on first use (a cache: loss() stays const).
  CutoutLossGraph& graph_for(size_t model, const torch::Tensor& cutouts, int64_t targets) const;

  std::vector<GuideModel> models_;
  PromptSchedule schedule_;
  std::vector<std::vector<Target>> segments_;  // text targets per schedule segment
  std::vector<Target> image_targets_;
  ClipGuideOptions options_;
  torch::Tensor init_image_;
  mutable std::map<std::tuple<size_t, int64_t, int64_t>, std::unique_ptr<CutoutLossGraph>> graphs_;  // (model, N, T)
};

// Disco Diffusion's tv_loss: mean squared neighbour differences, edges replicated (in the image's own units).
torch::Tensor tv_loss(const torch::Tensor& x);

// Scales `grad` down so that its root mean square is at most `max_rms` (0: unchanged).
torch::Tensor clamp_grad_rms(const torch::Tensor& grad, double max_rms);

// A CPU generator for a run's cutout stream.
torch::Generator make_generator(uint64_t seed);

}  // namespace clipguide
