// Ref: openai/CLIP notebooks/Prompt_Engineering_for_ImageNet.ipynb (zeroshot_classifier); Hessel et al. 2021,
// CLIPScore (w = 2.5, max(cos, 0)).
#include "clip/score.h"

#include <algorithm>
#include <deque>
#include <filesystem>
#include <future>
#include <set>
#include <thread>

#include "clip/embed.h"
#include "core/error.h"
#include "core/file_io.h"
#include "io/image.h"
#include "io/sha256.h"

namespace clipguide {
namespace fs = std::filesystem;

namespace {

torch::Tensor normalize(const torch::Tensor& x) { return x / x.norm(2, -1, true); }

std::string apply_template(const std::string& tmpl, const std::string& prompt) {
  const size_t at = tmpl.find("{}");
  if (at == std::string::npos) fail("template '", tmpl, "' has no {} for the prompt");
  return tmpl.substr(0, at) + prompt + tmpl.substr(at + 2);
}

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

// One input image after the worker stage: cached features, preprocessed pixels, or an error.
struct Item {
  std::string path, sha256, error;
  size_t position = 0;  // in the input list
  torch::Tensor cached, pixels;
};

// Decodes and preprocesses paths[begin, end) on `workers` threads, keeping input order.
std::vector<Item> decode_range(const std::vector<std::string>& paths, size_t begin, size_t end, int64_t n_px,
                               const Preprocessing& how, int64_t dim, int workers,
                               const EmbeddingCache* cache) {
  std::vector<Item> items(end - begin);
  auto work = [&](size_t first) {
    for (size_t i = first; i < items.size(); i += static_cast<size_t>(workers)) {
      Item& item = items[i];
      item.path = paths[begin + i];
      item.position = begin + i;
      try {
        const MappedFile file(item.path);
        if (cache != nullptr) {
          item.sha256 = sha256_hex(file.bytes().data, file.size());
          if (auto hit = cache->lookup(item.sha256, dim)) {
            item.cached = *hit;
            continue;
          }
        }
        item.pixels = preprocess(decode_image(file.bytes().data, file.size(), item.path), n_px, how);
      } catch (const std::exception& e) {
        item.error = e.what();
      }
    }
  };
  std::vector<std::thread> threads;
  for (int w = 1; w < workers && static_cast<size_t>(w) < items.size(); ++w) threads.emplace_back(work, w);
  work(0);
  for (auto& t : threads) t.join();
  return items;
}

}  // namespace

const char* metric_definition(Metric metric) {
  switch (metric) {
    case Metric::Cosine:
      return "cos(image, text): cosine similarity of the CLIP embeddings, in [-1, 1]";
    case Metric::Logit:
      return "exp(logit_scale) * cos(image, text) + logit_bias: the model's logits (100 * cos for OpenAI "
             "models; SigLIP adds its learned bias)";
    case Metric::ClipScore:
      return "2.5 * max(cos(image, text), 0): CLIPScore, Hessel et al. 2021";
    case Metric::Probs:
      return "softmax over the prompts of the logits: zero-shot class probabilities (a softmax for SigLIP "
             "too; its own pairwise probability is sigmoid)";
    case Metric::Sigmoid:
      return "sigmoid(exp(logit_scale) * cos(image, text) + logit_bias): SigLIP's pairwise probability that "
             "the prompt matches the image, each pair on its own";
  }
  fail("unknown metric");
}

torch::Tensor apply_metric(const torch::Tensor& image, const torch::Tensor& text, Metric metric,
                           double logit_scale, double logit_bias) {
  return apply_metric(image, text, metric, torch::scalar_tensor(logit_scale),
                      torch::scalar_tensor(logit_bias));
}

torch::Tensor apply_metric(const torch::Tensor& image, const torch::Tensor& text, Metric metric,
                           const torch::Tensor& logit_scale, const torch::Tensor& logit_bias) {
  const torch::Tensor cos = torch::matmul(image.to(torch::kFloat), text.to(torch::kFloat).t());  // [I, P]
  switch (metric) {
    case Metric::Cosine:
      return cos;
    case Metric::Logit:
      return logit_scale * cos + logit_bias;
    case Metric::ClipScore:
      return 2.5 * cos.clamp_min(0);
    case Metric::Probs:
      return torch::softmax(logit_scale * cos + logit_bias, 1);
    case Metric::Sigmoid:
      return torch::sigmoid(logit_scale * cos + logit_bias);
  }
  fail("unknown metric");
}

torch::Tensor embed_prompts(LoadedClip& clip, const std::vector<std::string>& prompts,
                            const std::vector<std::string>& templates, bool truncate) {
  EmbedOptions options;
  options.normalize = true;
  options.truncate = truncate;
  auto encode = [&](const std::vector<std::string>& texts) { return embed_texts(clip, texts, options); };
  if (templates.empty()) return encode(prompts);
  std::vector<torch::Tensor> classes;
  for (const std::string& prompt : prompts) {
    std::vector<std::string> texts;
    for (const std::string& t : templates) texts.push_back(apply_template(t, prompt));
    classes.push_back(normalize(encode(texts).mean(0)));  // [T, E] -> [E]
  }
  return torch::stack(classes);
}

std::vector<std::string> collect_image_files(const std::vector<std::string>& inputs) {
  std::vector<std::string> out;
  for (const std::string& input : inputs) {
    std::error_code ec;
    if (!fs::is_directory(input, ec)) {
      out.push_back(
          input);  // a file given by name is read whatever its extension; decoding says if it is no image
      continue;
    }
    // Folders recursively, symlinked folders too (each real folder once, so a link loop ends). An image whose
    // link is broken is kept: reading it reports it, as --on-error says.
    std::vector<std::string> found;
    std::set<fs::path> seen;
    std::vector<fs::path> pending = {input};
    while (!pending.empty()) {
      const fs::path dir = pending.back();
      pending.pop_back();
      if (!seen.insert(fs::canonical(dir, ec)).second) continue;
      for (fs::directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
           !ec && it != end; it.increment(ec)) {
        std::error_code kind;
        if (it->is_directory(kind)) {
          pending.push_back(it->path());
        } else if (is_image_file(it->path()) && (it->is_regular_file(kind) || it->is_symlink(kind))) {
          found.push_back(it->path().string());
        }
      }
      if (ec) fail(dir.string(), ": cannot list folder: ", ec.message());
    }
    if (found.empty())
      fail(input, ": no PNG or JPEG files in this folder (searched recursively, by extension)");
    std::sort(found.begin(), found.end());
    out.insert(out.end(), found.begin(), found.end());
  }
  return out;
}

namespace {

// Images [B, 3, R, R] through `model` on its device and back as float32 features on the CPU. To CUDA, the
// batch goes from pinned memory without blocking, so the copy overlaps the previous batch's work on the GPU.
torch::Tensor encode_on(ClipModel& model, const std::vector<torch::Tensor>& pixels) {
  const torch::NoGradGuard no_grad;  // thread-local: a replica's worker thread needs its own
  const torch::Tensor param = model.parameters().front();
  torch::Tensor batch;
  if (param.is_cuda()) {
    const auto& first = pixels.front();
    batch = torch::empty({static_cast<int64_t>(pixels.size()), first.size(0), first.size(1), first.size(2)},
                         first.options().pinned_memory(true));
    torch::stack_out(batch, pixels);
    batch = batch.to(param.device(), /*non_blocking=*/true);
  } else {
    batch = torch::stack(pixels);
  }
  return model.encode_image(batch.to(param.scalar_type())).to(torch::kCPU, torch::kFloat);
}

}  // namespace

void stream_image_features(LoadedClip& clip, const std::vector<std::string>& paths, int64_t batch_size,
                           int workers, bool normalize_features,
                           const std::function<void(const ImageBatch&)>& on_batch,
                           const EmbeddingCache* cache) {
  TORCH_CHECK(batch_size > 0 && workers > 0, "batch size and workers must be positive");
  const torch::NoGradGuard no_grad;
  const int64_t n_px = clip.model->config().image_resolution, dim = clip.model->config().embed_dim;
  const Preprocessing how = clip.model->config().preprocess;
  std::vector<std::shared_ptr<ClipModel>> models = {clip.model};
  models.insert(models.end(), clip.replicas.begin(), clip.replicas.end());
  auto launch = [&](size_t begin) {
    const size_t end = std::min(paths.size(), begin + static_cast<size_t>(batch_size));
    return std::async(std::launch::async, [&paths, begin, end, n_px, how, dim, workers, cache] {
      return decode_range(paths, begin, end, n_px, how, dim, workers, cache);
    });
  };
  // A batch on its way: decoded items, and the features of those that were not cached (being encoded).
  struct InFlight {
    std::vector<Item> items;
    std::future<torch::Tensor> encoded;
  };
  // Finishes the oldest batch in flight: features in input order (cached or encoded), errors, then on_batch.
  auto finish = [&](InFlight& f) {
    const torch::Tensor encoded = f.encoded.valid() ? f.encoded.get() : torch::Tensor();
    ImageBatch batch;
    std::vector<torch::Tensor> rows;
    int64_t next_encoded = 0;
    for (const Item& item : f.items) {
      if (!item.error.empty()) {
        batch.errors.emplace_back(item.path, item.error);
        continue;
      }
      torch::Tensor row = item.cached.defined() ? item.cached : encoded[next_encoded++];
      if (cache != nullptr && !item.cached.defined()) cache->store(item.sha256, row);
      batch.paths.push_back(item.path);
      batch.positions.push_back(item.position);
      rows.push_back(row);
    }
    batch.features = rows.empty() ? torch::empty({0, dim}) : torch::stack(rows);
    if (normalize_features) batch.features = normalize(batch.features);
    on_batch(batch);
  };
  if (paths.empty()) return;
  // Batch k runs on model k mod D. With one model it is encoded here while batch k + 1 decodes; with several,
  // each on a thread of its own, up to D batches at once, and finished in input order.
  std::deque<InFlight> in_flight;
  std::future<std::vector<Item>> next = launch(0);
  size_t k = 0;
  for (size_t begin = 0; begin < paths.size(); begin += static_cast<size_t>(batch_size), ++k) {
    InFlight f{next.get(), {}};
    if (begin + batch_size < paths.size()) next = launch(begin + batch_size);
    std::vector<torch::Tensor> pixels;
    for (const Item& item : f.items) {
      if (item.pixels.defined()) pixels.push_back(item.pixels);
    }
    if (!pixels.empty()) {
      std::shared_ptr<ClipModel> model = models[k % models.size()];
      const auto policy = models.size() > 1 ? std::launch::async : std::launch::deferred;
      f.encoded =
          std::async(policy, [model, pixels = std::move(pixels)] { return encode_on(*model, pixels); });
    }
    in_flight.push_back(std::move(f));
    if (in_flight.size() >= models.size()) {
      finish(in_flight.front());
      in_flight.pop_front();
    }
  }
  for (; !in_flight.empty(); in_flight.pop_front()) finish(in_flight.front());
}

}  // namespace clipguide
