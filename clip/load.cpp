#include "clip/load.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "clip/hf_names.h"
#include "core/device.h"
#include "core/error.h"
#include "core/random.h"
#include "io/checkpoint.h"
#include "io/state_dict.h"

namespace clipguide {
namespace fs = std::filesystem;

namespace {

fs::path home() {
  const char* h = std::getenv("HOME");
  return h != nullptr ? fs::path(h) : fs::path("/");
}

fs::path clip_cache() { return home() / ".cache" / "clip"; }

fs::path hf_hub_cache() {
  if (const char* c = std::getenv("HF_HUB_CACHE")) return c;
  if (const char* h = std::getenv("HF_HOME")) return fs::path(h) / "hub";
  return home() / ".cache" / "huggingface" / "hub";
}

bool path_exists(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

void check_heads(const ClipConfig& c, const std::string& source) {
  const int64_t vision_width = c.vision_resnet ? c.vision_width * 32 : c.vision_width;
  if (c.vision_heads <= 0 || vision_width % c.vision_heads != 0) {
    fail(source, ": vision width ", vision_width, " is not divisible by ", c.vision_heads,
         " attention heads");
  }
  if (c.transformer_heads <= 0 || c.transformer_width % c.transformer_heads != 0) {
    fail(source, ": text width ", c.transformer_width, " is not divisible by ", c.transformer_heads,
         " attention heads");
  }
}

std::string find_vocab(const std::string& explicit_vocab, const fs::path& model_path) {
  if (!explicit_vocab.empty()) {
    if (!path_exists(explicit_vocab)) fail("vocabulary ", explicit_vocab, ": no such file or directory");
    return explicit_vocab;
  }
  const fs::path dir =
      model_path.parent_path();  // a Hugging Face folder holds both the weights and the vocabulary
  if (path_exists(dir / "vocab.json") && path_exists(dir / "merges.txt")) return dir.string();
  if (path_exists(dir / "bpe_simple_vocab_16e6.txt.gz"))
    return (dir / "bpe_simple_vocab_16e6.txt.gz").string();
  if (path_exists(clip_cache() / "bpe_simple_vocab_16e6.txt.gz"))
    return (clip_cache() / "bpe_simple_vocab_16e6.txt.gz").string();
  return "";
}

}  // namespace

void apply_hf_config(const std::string& text, const std::string& source, ClipConfig& c) {
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail(source, ": config.json is not valid JSON (", e.what(), ")");
  }
  auto tower = [&](const char* key, int64_t& heads, std::string& act, double& eps) {
    if (!config.is_object() || !config.contains(key) || !config[key].is_object()) return;
    const auto& t = config[key];
    if (t.contains("num_attention_heads") && t["num_attention_heads"].is_number_integer())
      heads = t["num_attention_heads"].get<int64_t>();
    if (t.contains("hidden_act") && t["hidden_act"].is_string()) act = t["hidden_act"].get<std::string>();
    if (t.contains("layer_norm_eps") && t["layer_norm_eps"].is_number())
      eps = t["layer_norm_eps"].get<double>();
  };
  tower("text_config", c.transformer_heads, c.text_activation, c.text_layer_norm_eps);
  tower("vision_config", c.vision_heads, c.vision_activation, c.vision_layer_norm_eps);
  for (const std::string* act : {&c.text_activation, &c.vision_activation}) {
    if (*act != "quick_gelu" && *act != "gelu") {
      fail(source, ": config.json hidden_act '", *act, "' is not supported (supported: quick_gelu, gelu)");
    }
  }
}

const Tokenizer& LoadedClip::require_tokenizer() const {
  if (!tokenizer) {
    fail("no tokenizer vocabulary found for ", path,
         ": looked next to the model (vocab.json + merges.txt or "
         "bpe_simple_vocab_16e6.txt.gz) and in ",
         clip_cache().string(), "; give a vocabulary file");
  }
  return *tokenizer;
}

const std::vector<KnownModel>& known_openai_models() {
  // The SHA-256 is the path component of each file's download URL in openai/CLIP clip/clip.py.
  static const std::vector<KnownModel> models = {
      {"RN50", "RN50.pt", "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762"},
      {"RN101", "RN101.pt", "8fa8567bab74a42d41c5915025a8e4538c3bdbe8804a470a72f30b0d94fab599"},
      {"RN50x4", "RN50x4.pt", "7e526bd135e493cef0776de27d5f42653e6b4c8bf9e0f653bb11773263205fdd"},
      {"RN50x16", "RN50x16.pt", "52378b407f34354e150460fe41077663dd5b39c54cd0bfd2b27167a4a06ec9aa"},
      {"RN50x64", "RN50x64.pt", "be1cfb55d75a9666199fb2206c106743da0f6468c9d327f3e0d0a543a9919d9c"},
      {"ViT-B/32", "ViT-B-32.pt", "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"},
      {"ViT-B/16", "ViT-B-16.pt", "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f"},
      {"ViT-L/14", "ViT-L-14.pt", "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"},
      {"ViT-L/14@336px", "ViT-L-14-336px.pt",
       "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02"},
  };
  return models;
}

std::optional<KnownModel> known_model_by_sha256(const std::string& sha256) {
  for (const auto& m : known_openai_models()) {
    if (sha256 == m.sha256) return m;
  }
  return std::nullopt;
}

std::string resolve_model_path(const std::string& name) {
  if (path_exists(name)) return name;
  for (const auto& m : known_openai_models()) {
    const std::string file_stem = fs::path(m.file).stem().string();
    if (name == m.name || name == file_stem) {
      const fs::path p = clip_cache() / m.file;
      if (path_exists(p)) return p.string();
      fail("model '", name, "' not found: looked for ", p.string(),
           "; get it with Python CLIP (python -c \"import clip; "
           "clip.load('",
           m.name, "')\") or pass the path of the file");
    }
  }
  const size_t slash = name.find('/');
  if (slash != std::string::npos && slash > 0 && name.find('/', slash + 1) == std::string::npos) {
    const fs::path repo =
        hf_hub_cache() / ("models--" + name.substr(0, slash) + "--" + name.substr(slash + 1));
    std::string revision;
    std::ifstream ref(repo / "refs" / "main");
    if (ref && std::getline(ref, revision) && path_exists(repo / "snapshots" / revision / "config.json")) {
      return (repo / "snapshots" / revision).string();
    }
    std::error_code ec;
    if (fs::is_directory(repo / "snapshots", ec)) {
      for (const auto& snap : fs::directory_iterator(repo / "snapshots", ec)) {
        if (path_exists(snap.path() / "config.json")) return snap.path().string();
      }
    }
    fail("model '", name, "' not found: looked in ", (repo / "snapshots").string(),
         "; get it with `huggingface-cli download ", name, "` or pass the path of the model folder");
  }
  std::string names;
  for (const auto& m : known_openai_models()) names += cat(names.empty() ? "" : ", ", m.name);
  fail("model '", name,
       "' not found: it is not a file or folder, a Hugging Face id (org/name), or one of the "
       "OpenAI names [",
       names, "]");
}

std::shared_ptr<ClipModel> clip_model_from_tensors(TensorMap sd, const std::string& config_json,
                                                   const std::string& source, const LoadOptions& options) {
  if (has_hf_clip_names(sd)) sd = hf_to_openai_names(sd);
  ClipConfig config;
  try {
    config = ClipConfig::from_state_dict(sd);
  } catch (const Error& e) {
    fail(source, ": ", SafeText{e.what()});
  } catch (const c10::Error& e) {
    fail(source, ": cannot infer the CLIP architecture: ", e.what_without_backtrace());
  }
  if (!config_json.empty()) apply_hf_config(config_json, source, config);
  if (options.text_heads > 0) config.transformer_heads = options.text_heads;
  if (options.vision_heads > 0) config.vision_heads = options.vision_heads;
  check_heads(config, source);
  auto model = build_strict<ClipModel>(config, sd, source);
  model->to(options.device, options.dtype);
  return model;
}

std::shared_ptr<ClipModel> replicate(ClipModel& model, const torch::Device& device) {
  std::shared_ptr<ClipModel> copy;
  {
    const GlobalGeneratorScope kept;  // the constructor's initial weights, overwritten below
    copy = std::make_shared<ClipModel>(model.config());
  }
  const torch::NoGradGuard no_grad;
  const auto params = model.named_parameters(), buffers = model.named_buffers();
  for (auto& p : copy->named_parameters()) p.value().copy_(params[p.key()]);
  for (auto& b : copy->named_buffers()) b.value().copy_(buffers[b.key()]);
  copy->to(device, model.parameters().front().scalar_type());
  for (auto& p : copy->parameters()) p.requires_grad_(false);
  return copy;
}

namespace {

// The settings' devices, every setting checked on the way (check() and resolve() both parse through here).
std::vector<torch::Device> checked_devices(const ModelSettings& s, bool several_devices) {
  if (s.text_heads < 0 || s.vision_heads < 0) fail("text_heads and vision_heads must be positive");
  if (s.threads < 0) fail("threads must be positive");
  std::vector<torch::Device> devices = parse_devices(s.device);
  if (devices.size() > 1 && !several_devices) fail("device ", s.device, ": this job runs on one device");
  if (parse_precision(s.precision) == torch::kHalf && !devices.front().is_cuda())
    fail("precision fp16 needs a CUDA device");
  return devices;
}

}  // namespace

void ModelSettings::check(bool several_devices) const { checked_devices(*this, several_devices); }

LoadOptions ModelSettings::resolve(bool several_devices) const {
  const std::vector<torch::Device> devices = checked_devices(*this, several_devices);
  set_cpu_threads(threads);
  LoadOptions load;
  load.vocab = vocab;
  load.device = devices.front();
  load.more_devices.assign(devices.begin() + 1, devices.end());
  load.dtype = parse_precision(precision);
  warn_if_bf16_is_emulated(load.device, load.dtype);
  load.text_heads = text_heads;
  load.vision_heads = vision_heads;
  return load;
}

LoadedClip load_clip(const std::string& path_or_name, const LoadOptions& options) {
  const std::string path = resolve_model_path(path_or_name);
  Checkpoint ckpt = read_checkpoint(path);
  LoadedClip out;
  out.path = ckpt.path;
  out.format = ckpt.format;
  for (const auto& kv : ckpt.tensors)
    ++out.checkpoint_dtypes[std::string(c10::toString(kv.second.scalar_type()))];
  if (has_hf_clip_names(ckpt.tensors)) out.format += " (Hugging Face names)";
  out.model = clip_model_from_tensors(std::move(ckpt.tensors), ckpt.config_json, ckpt.path, options);
  for (const auto& p : out.model->parameters()) out.parameter_count += p.numel();
  for (const torch::Device& device : options.more_devices)
    out.replicas.push_back(replicate(*out.model, device));
  out.vocab_path = find_vocab(options.vocab, fs::path(ckpt.path));
  if (!out.vocab_path.empty()) {
    out.tokenizer = std::make_shared<Tokenizer>(Tokenizer::from_path(out.vocab_path));
    if (out.tokenizer->max_id() >= out.model->config().vocab_size) {
      fail(out.vocab_path, ": vocabulary has ids up to ", out.tokenizer->max_id(),
           " but the model's token embedding has ", out.model->config().vocab_size,
           " rows; it is not this model's vocabulary");
    }
  }
  return out;
}

}  // namespace clipguide
