// Training the toy world's CLIP and VQGAN with libtorch: batches, losses, one optimizer step at a time, and
// the files they are saved as (the same names and formats as the real models, so the ordinary loaders read
// them). Ref: Radford et al. 2021 (symmetric contrastive loss, learned temperature, openai/CLIP
// initialize_parameters); Esser et al. 2021 / taming-transformers VQModel (codebook + commitment losses,
// straight-through estimator); dead-code restarts as in Dhariwal et al. 2020 (Jukebox) and Zeghidour et al.
// 2021; the simple DDPM loss of Ho et al. 2020 with the cosine schedule of Nichol & Dhariwal 2021
// (openai/improved-diffusion, guided-diffusion).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "clip/model.h"
#include "clip/tokenizer.h"
#include "generators/diffusion.h"
#include "generators/optimizer.h"
#include "generators/unet.h"
#include "generators/vqgan.h"
#include "toyworld/world.h"

namespace clipguide::toyworld {

// ---- data ----

// The data for step `step` of a run seeded `seed`: the same pair always gives the same batch, so a resumed
// run sees exactly what an uninterrupted one would.
std::mt19937_64 step_rng(uint64_t seed, int64_t step);

// Captions to train the vocabulary on: `count` of them from every template, seeded.
std::vector<std::string> caption_corpus(int64_t count, uint64_t seed);

struct ClipBatch {
  torch::Tensor images;  // [B, 3, 64, 64] in [0, 1]
  torch::Tensor tokens;  // [B, context] int64
  torch::Tensor
      targets;  // [B texts, B images] 1 where caption i describes image j (the diagonal and any other)
};
// Groups of kGroup hard negatives: a scene, the same scene with each other shape (a line-up that differs only
// in shape), then with other object colours and another background; a group shares its caption template.
// `batch` must be a multiple of kGroup.
constexpr int64_t kGroup = 8;
ClipBatch clip_batch(std::mt19937_64& rng, const Tokenizer& tokenizer, int64_t context, int64_t batch);

// `batch` random scenes of the whole world, held-out pairs included (the CLIP never sees them; the VQGAN and
// the diffusion model learn pictures), rendered: [B, 3, 64, 64] in [0, 1]. With `captions`, each scene's
// caption in a random template is appended to it (drawn after the scenes, so the pictures are the same either
// way).
torch::Tensor picture_batch(std::mt19937_64& rng, int64_t batch,
                            std::vector<std::string>* captions = nullptr);

// ---- toy CLIP ----

struct ToyClipShape {
  int64_t vision_width = 128, vision_layers = 4, patch = 8;
  int64_t text_width = 128, text_layers = 3, context = 32;
  int64_t embed_dim = 128;
};
ClipConfig toy_clip_config(const ToyClipShape& shape, int64_t vocab_size);
// A model with openai/CLIP's initialisation (normal weights scaled by width and depth, temperature 1/0.07).
std::shared_ptr<ClipModel> init_clip(const ClipConfig& config, uint64_t seed);

// Symmetric contrastive loss over a batch, with soft targets: text i's target is spread over every image it
// describes, and image j's over every caption describing it (no false negatives from repeated captions).
torch::Tensor contrastive_loss(const torch::Tensor& image_features, const torch::Tensor& text_features,
                               const torch::Tensor& logit_scale_exp, const torch::Tensor& targets);

// One batch's training loss: both towers' forward pass (under bf16 autocast on the model's device when
// `bf16`, as train-clip
// --precision bf16 runs them), then contrastive_loss in fp32 (bf16 logits at temperature 100 would be off by
// about 0.4). `images` normalized, on the model's device, like `tokens` and `targets`.
torch::Tensor clip_batch_loss(ClipModel& model, const torch::Tensor& images, const torch::Tensor& tokens,
                              const torch::Tensor& targets, bool bf16);

// Adversarial training images (Madry et al. 2018; the random start and single step of Wong et al. 2020): each
// image moved by at most `eps` in L2 (pixels in [0, 1]) in the direction that most raises the batch's
// contrastive loss, found by `steps` normalized gradient ascent steps of 2.5 * eps / steps from a random
// point of the ball, and kept in [0, 1]. A CLIP trained on these has smoother image gradients, which is what
// guidance follows. `images01` on the model's device; the model's parameters get no gradient.
torch::Tensor adversarial_images(ClipModel& model, const torch::Tensor& images01, const torch::Tensor& tokens,
                                 const torch::Tensor& targets, double eps, int64_t steps, bool bf16,
                                 torch::Generator& gen);

// Random crops of 80-100% of the side, resampled back to 64 px, and pixel noise: what the CLIP sees in
// training resembles what guidance's cutouts show it. max_blur > 1 also blurs each image as blur_images does,
// to a side of 64 / f px for f drawn from [1, max_blur] (as a diffusion sampler's early predictions are
// blurred); 1 draws nothing more, so runs without it are reproduced exactly.
torch::Tensor augment_images(const torch::Tensor& images, std::mt19937_64& rng, double max_blur = 1);

struct TrainSchedule {
  int64_t steps = 1000, warmup = 100;
  double lr = 1e-3, final_lr_fraction = 0.05;  // cosine from lr down to lr * final_lr_fraction
  double lr_at(int64_t step) const;
};

// ---- toy VQGAN ----

struct ToyVqganShape {
  int64_t ch = 32, z_channels = 64, embed_dim = 32, n_embed = 512, num_res_blocks = 1;
  std::vector<int64_t> ch_mult = {1, 1, 2, 2};  // three downsamplings: f8
  bool attention = true;                        // attention at the lowest resolution
};
VqganConfig toy_vqgan_config(const ToyVqganShape& shape);
std::shared_ptr<Vqgan> init_vqgan(const VqganConfig& config, uint64_t seed);

struct VqganLosses {
  torch::Tensor total;
  double l1 = 0, l2 = 0, codebook = 0, commitment = 0;
  torch::Tensor indices;  // [B, h, w] the codes used
};
// Per-pixel loss weights [B, 1, H, W]: 1 + object_weight on the objects and a pixel around them (pixels
// unlike the image's median colour), so small shapes count as much as the plain background that fills most of
// the image.
torch::Tensor object_weights(const torch::Tensor& images01, double object_weight);
// Reconstruction (L1 + L2, weighted by object_weights when object_weight > 0) + codebook ||sg(z) - q||^2 +
// beta * commitment ||z - sg(q)||^2, straight-through. The reported l1 and l2 are unweighted.
VqganLosses vqgan_losses(Vqgan& model, const torch::Tensor& images01, double beta = 0.25,
                         double object_weight = 0);

// Counts code use and, every `every` steps, moves codes unused since the last restart onto encoder outputs
// from the current batch (plus a little noise), so the whole codebook stays in use.
class DeadCodeRestarter {
 public:
  DeadCodeRestarter(int64_t n_embed, int64_t every)
      : counts_(torch::zeros({n_embed}, torch::kLong)), every_(every) {}
  // Returns how many codes were restarted this step.
  int64_t update(Vqgan& model, const torch::Tensor& indices, const torch::Tensor& images01, int64_t step,
                 std::mt19937_64& rng);
  int64_t used_last_window() const { return used_; }

 private:
  torch::Tensor counts_;
  int64_t every_;
  int64_t used_ = 0;
};

// ---- toy diffusion ----

struct ToyUNetShape {
  int64_t image_size = 32;  // the world's 64 px scenes, area-averaged down
  int64_t channels = 32, res_blocks = 1, head_channels = 32;
  std::vector<int64_t> channel_mult = {1, 2, 2};
  int64_t attention_below = 16;  // attention at every level of this resolution or less
};
UNetConfig toy_unet_config(const ToyUNetShape& shape);
// guided-diffusion's initialisation: PyTorch's defaults, with the last convolution of every ResBlock, every
// attention projection and the output convolution zeroed (zero_module), so each block starts as the identity;
// the CLIP-embedding projection is zeroed too, so a conditioned model starts as the unconditional one.
std::shared_ptr<UNetModel> init_unet(const UNetConfig& config, uint64_t seed);
// [B, 3, 64, 64] in [0, 1] -> [B, 3, size, size] in [-1, 1] (area-averaged, as the diffusion model sees
// them).
torch::Tensor diffusion_images(const torch::Tensor& images01, int64_t size);
// The simple DDPM loss: the mean squared error of the model's noise prediction at timesteps drawn uniformly
// from the (unrespaced) schedule, x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps. `clip_embed` [B,
// clip_dim] for a CLIP-conditioned model (rows of zeros train the unconditional prediction).
torch::Tensor diffusion_loss(UNetModel& model, const DiffusionSchedule& s, const torch::Tensor& x0,
                             torch::Generator& gen, const torch::Tensor& clip_embed = {});
// Caption embeddings standardised for training a CLIP-conditioned UNet. A CLIP's caption embeddings share
// most of their direction, so a projection fed them raw learns from their differences only faintly; training
// feeds (e - mean) / spread instead, and fold() rewrites the projection (W / spread, b - W mean / spread) so
// that the saved model takes raw embeddings, as the sampler gives them. unfold() is its inverse (a raw
// fine-tuning start).
struct ConditionStandard {
  torch::Tensor mean;  // [clip_dim]
  double spread = 1;   // the embeddings' RMS distance from their mean, per dimension
  static ConditionStandard of(const torch::Tensor& embeddings);  // from [N, clip_dim]
  // [B, clip_dim] -> standardised; rows of zeros (no condition) become -mean / spread, as fold() maps them.
  torch::Tensor apply(const torch::Tensor& embeddings) const;
  void fold(UNetModel& model) const;
  void unfold(UNetModel& model) const;
};
// The flags file load_unet reads beside the weights (script_util's model_flags and diffusion_flags).
std::string unet_flags_json(const UNetConfig& config, int64_t image_size, const std::string& noise_schedule,
                            int64_t diffusion_steps, const std::string& timestep_respacing);

// An exponential moving average of a model's parameters, kept in `average` (a model of the same
// architecture): average = decay * average + (1 - decay) * model, with decay warmed up as min(decay, (1 + n)
// / (10 + n)).
void update_average(torch::nn::Module& average, torch::nn::Module& model, double decay, int64_t updates);

// ---- files ----

// Parameters by checkpoint name, for saving (the names the loaders expect).
TensorMap named_weights(torch::nn::Module& model, torch::ScalarType dtype);
// A taming-style .yaml describing `config` (model.params.{embed_dim, n_embed, ddconfig}).
std::string vqgan_yaml(const VqganConfig& config, int64_t resolution);

}  // namespace clipguide::toyworld
