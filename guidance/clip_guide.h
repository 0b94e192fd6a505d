// The CLIP guide: a differentiable image-prompt loss that any generator or sampler can follow through its
// gradient. image [1, 3, H, W] in [0, 1] -> cutouts -> CLIP image embeddings -> distance to cached prompt
// embeddings, plus image regularisers. Ref: Crowson's VQGAN+CLIP notebook (Prompt, spherical_dist_loss,
// replace_grad) and Disco Diffusion (tv_loss, range_loss).
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "clip/load.h"
#include "core/random.h"
#include "guidance/cuda_graph.h"
#include "guidance/cutouts.h"
#include "prompts/prompt.h"

namespace clipguide {

// The distance a prompt's term follows: spherical (Crowson's 2 arcsin(|a - b| / 2)^2), cosine (1 - cos), or
// sigmoid, SigLIP's own pairwise loss -log sigmoid(exp(logit_scale) * cos + logit_bias) for SigLIP models
// (CLIP models of the same ensemble, which have no trained bias, keep the spherical distance).
enum class GuideLoss { Spherical, Cosine, Sigmoid };
// "spherical", "cosine" or "sigmoid"; anything else is an Error listing them.
inline constexpr Named<GuideLoss> kGuideLosses[] = {
    {GuideLoss::Spherical, "spherical"}, {GuideLoss::Cosine, "cosine"}, {GuideLoss::Sigmoid, "sigmoid"}};
inline GuideLoss parse_guide_loss(const std::string& name) { return parse_name(kGuideLosses, name, "loss"); }
inline const char* guide_loss_name(GuideLoss loss) { return name_of(kGuideLosses, loss); }

// One CLIP model of the ensemble, with its own weight and cutout count.
struct GuideModel {
  std::shared_ptr<LoadedClip> clip;
  std::string name;  // for labels: the path or name given
  double weight = 1.0;
  int64_t cutn = 0;  // 0: the guide's CutoutOptions::cutn
};

struct ClipGuideOptions {
  CutoutOptions cutouts;
  GuideLoss loss = GuideLoss::Spherical;
  double tv_weight = 0;     // total variation (Disco Diffusion's tv_loss)
  double range_weight = 0;  // squared excess outside [0, 1]
  double saturation_weight =
      0;                   // Hasler-Susstrunk colourfulness; positive mutes colours, negative boosts them
  double init_weight = 0;  // pixel MSE to the init image (set_init_image)
  bool truncate = false;   // prompts longer than the context are truncated instead of failing
  // Each model's cutouts -> CLIP -> loss -> gradient as one captured CUDA graph, replayed every step (models
  // on CUDA, a build with CUDA). The cutouts are made eagerly as ever, so the numbers are those of the eager
  // step.
  bool cuda_graph = false;

  void validate() const;
};

// Named parts of a batch's loss (each prompt, each regulariser), kept as tensors on the loss's device until a
// caller reads them: reading is a device synchronisation, best done once per step, for logging.
struct LossParts {
  std::vector<std::string> names;
  torch::Tensor values;  // [B, P], detached; undefined while there are none

  size_t size() const { return names.size(); }
  // One part, per sample [B] (or a scalar, the same for every sample).
  void add(const std::string& name, const torch::Tensor& per_sample);
  // The parts of `more`, scaled, added to the parts of the same name here (appended where new).
  void accumulate(const LossParts& more, double scale = 1.0);
  // Sample `b`'s parts as (name, value): one read back from the device.
  std::vector<std::pair<std::string, double>> read(int64_t b = 0) const;
};

// The loss of one evaluation of a batch: each sample's differentiable total [B] and its parts.
struct GuideResult {
  torch::Tensor total;  // [B]
  LossParts parts;
};

class ClipGuide {
 public:
  // Text prompts (a schedule; one segment for a fixed prompt) and image prompts, embedded once per model,
  // without gradients. A zero or negative total weight is allowed: positive and negative prompts are separate
  // terms.
  ClipGuide(std::vector<GuideModel> models, PromptSchedule text, std::vector<Prompt> image_prompts,
            ClipGuideOptions options);

  // Pixel MSE target for init_weight; [1, 3, H, W] in [0, 1] (the same for every sample of a batch).
  void set_init_image(const torch::Tensor& image);

  // Each image's loss at `step` of the prompt schedule, for a batch `images` [B, 3, H, W] in [0, 1]:
  // differentiable in the images, sample b's total depending on image b alone. Every sample gets its own
  // cutouts, drawn from `rng` only, sample after sample (a batch of one draws what a lone image draws).
  GuideResult loss(const torch::Tensor& images, torch::Generator& rng, int64_t step = 0) const;
  // d total / d images, [B, 3, H, W] float32 (each sample's gradient of its own loss), with the loss (total
  // detached). Both are scaled by `scale` and averaged over `batches` draws of cutouts, one batch of cutouts
  // in memory at a time (guided diffusion's cutn_batches).
  std::pair<torch::Tensor, GuideResult> gradient(const torch::Tensor& images, torch::Generator& rng,
                                                 int64_t step = 0, double scale = 1,
                                                 int64_t batches = 1) const;
  // How well each whole image fits the prompts at `step`, without cutouts or augmentation: the weighted mean
  // cosine similarity over prompts and models (negative prompts subtract), [B] float32. For reranking.
  torch::Tensor scores(const torch::Tensor& images, int64_t step = 0) const;
  // scores() of one image [1, 3, H, W], read back.
  double score(const torch::Tensor& image, int64_t step = 0) const;
  // What a CLIP-conditioned generator is conditioned on at `step`: the weighted sum of the prompts'
  // embeddings (text and image, negative weights subtract) for model `model`, renormalized, [1, E] on that
  // model's device; zeros when the weights cancel or are all zero (the unconditional prediction).
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
  // The captured graph for model `model` at these shapes (B samples' cutouts), made on first use (a cache:
  // loss() stays const).
  CutoutLossGraph& graph_for(size_t model, const torch::Tensor& cutouts, int64_t targets,
                             int64_t batch) const;

  std::vector<GuideModel> models_;
  PromptSchedule schedule_;
  std::vector<std::vector<Target>> segments_;  // text targets per schedule segment
  std::vector<Target> image_targets_;
  ClipGuideOptions options_;
  torch::Tensor init_image_;
  mutable std::map<std::tuple<size_t, int64_t, int64_t, int64_t>, std::unique_ptr<CutoutLossGraph>>
      graphs_;  // (model, N, T, B)
};

// Disco Diffusion's tv_loss: mean squared neighbour differences, edges replicated (in the image's own units),
// per sample of x [B, C, H, W] -> [B].
torch::Tensor tv_loss_per_sample(const torch::Tensor& x);
// The same over the whole batch: tv_loss_per_sample(x).mean().
torch::Tensor tv_loss(const torch::Tensor& x);

// Scales each sample of `grad` [B, ...] down so that its root mean square is at most `max_rms` (0:
// unchanged).
torch::Tensor clamp_grad_rms(const torch::Tensor& grad, double max_rms);

}  // namespace clipguide
