// Ref: openai/CLIP notebooks/Prompt_Engineering_for_ImageNet.ipynb (zeroshot_classifier); Hessel et al. 2021,
// CLIPScore (w = 2.5, max(cos, 0)).
#include "clip/score.h"

#include <algorithm>
#include <filesystem>
#include <future>
#include <thread>

#include "clip/embed.h"
#include "clip/error.h"
#include "clip/file_io.h"
#include "clip/image.h"
#include "clip/sha256.h"

namespace clipguide {
namespace fs = std::filesystem;

namespace {

struct MetricInfo {
  Metric metric;
  const char* name;
  const char* definition;
};

constexpr MetricInfo kMetrics[] = {
    {Metric::Cosine, "cosine", "cos(image, text): cosine similarity of the CLIP embeddings, in [-1, 1]"},
    {Metric::Logit, "logit", "exp(logit_scale) * cos(image, text): CLIP's logits (100 * cos for OpenAI models)"},
    {Metric::ClipScore, "clipscore", "2.5 * max(cos(image, text), 0): CLIPScore, Hessel et al. 2021"},
    {Metric::Probs, "probs", "softmax over the prompts of exp(logit_scale) * cos: zero-shot class probabilities"},
};

const MetricInfo& info(Metric metric) {
  for (const auto& m : kMetrics) {
    if (m.metric == metric) return m;
  }
  fail("unknown metric");
}

torch::Tensor normalize(const torch::Tensor& x) { return x / x.norm(2, -1, true); }

std::string apply_template(const std::string& tmpl, const std::string& prompt) {
  const size_t at = tmpl.find("{}");
  if (at == std::string::npos) fail("--template '", tmpl, "' has no {} for the prompt");
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
  torch::Tensor cached, pixels;
};

// Decodes and preprocesses paths[begin, end) on `workers` threads, keeping input order.
std::vector<Item> decode_range(const std::vector<std::string>& paths, size_t begin, size_t end, int64_t n_px,
                               int64_t dim, int workers, const EmbeddingCache* cache) {
  std::vector<Item> items(end - begin);
  auto work = [&](size_t first) {
    for (size_t i = first; i < items.size(); i += static_cast<size_t>(workers)) {
      Item& item = items[i];
      item.path = paths[begin + i];
      try {
        const MappedFile file(item.path);
        if (cache != nullptr) {
          item.sha256 = sha256_hex(file.bytes().data, file.size());
          if (auto hit = cache->lookup(item.sha256, dim)) {
            item.cached = *hit;
            continue;
          }
        }
        item.pixels = preprocess(decode_image(file.bytes().data, file.size(), item.path), n_px);
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

Metric parse_metric(const std::string& name) {
  for (const auto& m : kMetrics) {
    if (name == m.name) return m.metric;
  }
  fail("--metric ", name, " is not one of cosine, logit, clipscore, probs");
}

const char* metric_name(Metric metric) { return info(metric).name; }
const char* metric_definition(Metric metric) { return info(metric).definition; }

torch::Tensor apply_metric(const torch::Tensor& image, const torch::Tensor& text, Metric metric, double logit_scale) {
  const torch::Tensor cos = torch::matmul(image.to(torch::kFloat), text.to(torch::kFloat).t());  // [I, P]
  switch (metric) {
    case Metric::Cosine: return cos;
    case Metric::Logit: return logit_scale * cos;
    case Metric::ClipScore: return 2.5 * cos.clamp_min(0);
    case Metric::Probs: return torch::softmax(logit_scale * cos, 1);
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
    if (fs::is_directory(input, ec)) {
      std::vector<std::string> found;
      for (auto it = fs::recursive_directory_iterator(input, fs::directory_options::skip_permission_denied, ec);
           it != fs::recursive_directory_iterator(); it.increment(ec)) {
        if (ec) fail(input, ": cannot list folder: ", ec.message());
        if (it->is_regular_file(ec) && is_image_file(it->path())) found.push_back(it->path().string());
      }
      std::sort(found.begin(), found.end());
      out.insert(out.end(), found.begin(), found.end());
    } else {
      out.push_back(input);  // a file given by name is read whatever its extension; decoding says if it is no image
    }
  }
  return out;
}

void stream_image_features(LoadedClip& clip, const std::vector<std::string>& paths, int64_t batch_size, int workers,
                           bool normalize_features, const std::function<void(const ImageBatch&)>& on_batch,
                           const EmbeddingCache* cache) {
  TORCH_CHECK(batch_size > 0 && workers > 0, "batch size and workers must be positive");
  torch::NoGradGuard no_grad;
  const int64_t n_px = clip.model->config().image_resolution, dim = clip.model->config().embed_dim;
  const auto param = clip.model->parameters().front();
  auto launch = [&](size_t begin) {
    const size_t end = std::min(paths.size(), begin + static_cast<size_t>(batch_size));
    return std::async(std::launch::async, [&paths, begin, end, n_px, dim, workers, cache] {
      return decode_range(paths, begin, end, n_px, dim, workers, cache);
    });
  };
  if (paths.empty()) return;
  std::future<std::vector<Item>> next = launch(0);
  for (size_t begin = 0; begin < paths.size(); begin += static_cast<size_t>(batch_size)) {
    std::vector<Item> items = next.get();
    if (begin + batch_size < paths.size()) next = launch(begin + batch_size);
    // Encode the images that were not cached, in one forward pass.
    std::vector<torch::Tensor> pixels;
    for (const Item& item : items) {
      if (item.pixels.defined()) pixels.push_back(item.pixels);
    }
    torch::Tensor encoded;
    if (!pixels.empty()) {
      encoded = clip.model->encode_image(torch::stack(pixels).to(param.device(), param.scalar_type())).to(torch::kCPU, torch::kFloat);
    }
    ImageBatch batch;
    std::vector<torch::Tensor> rows;
    int64_t next_encoded = 0;
    for (const Item& item : items) {
      if (!item.error.empty()) {
        batch.errors.emplace_back(item.path, item.error);
        continue;
      }
      torch::Tensor row = item.cached.defined() ? item.cached : encoded[next_encoded++];
      if (cache != nullptr && !item.cached.defined()) cache->store(item.sha256, row);
      batch.paths.push_back(item.path);
      rows.push_back(row);
    }
    batch.features = rows.empty() ? torch::empty({0, dim}) : torch::stack(rows);
    if (normalize_features) batch.features = normalize(batch.features);
    on_batch(batch);
  }
}

}  // namespace clipguide
