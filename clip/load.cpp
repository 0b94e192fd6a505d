#include "clip/load.h"

#include <array>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "clip/hf_names.h"
#include "core/device.h"
#include "core/error.h"
#include "core/json_fields.h"
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
  if (c.image_tower && (c.vision_heads <= 0 || vision_width % c.vision_heads != 0)) {
    fail(source, ": vision width ", vision_width, " is not divisible by ", c.vision_heads,
         " attention heads");
  }
  if (c.text_tower && (c.transformer_heads <= 0 || c.transformer_width % c.transformer_heads != 0)) {
    fail(source, ": text width ", c.transformer_width, " is not divisible by ", c.transformer_heads,
         " attention heads");
  }
}

}  // namespace

std::string find_vocab(const std::string& explicit_vocab, const std::string& model_path_text,
                       ModelFamily family) {
  if (!explicit_vocab.empty()) {
    if (!path_exists(explicit_vocab)) fail("vocabulary ", explicit_vocab, ": no such file or directory");
    return explicit_vocab;
  }
  const fs::path model_path(model_path_text);
  // A model folder holds both the weights and the vocabulary; CLIP's BPE is the fallback for CLIP models
  // only.
  const fs::path dir = model_path.parent_path();
  if (std::string found = Tokenizer::vocabulary_in(dir.string()); !found.empty()) return found;
  if (family == ModelFamily::Clip && path_exists(clip_cache() / "bpe_simple_vocab_16e6.txt.gz"))
    return (clip_cache() / "bpe_simple_vocab_16e6.txt.gz").string();
  return "";
}

namespace {

// A Hugging Face hidden_act or open_clip activation name -> one of kActivations.
std::string activation_name(const std::string& name, const std::string& where) {
  if (name == "quick_gelu" || name == "gelu") return name;
  if (name == "gelu_pytorch_tanh" || name == "gelu_new" || name == "gelu_tanh") return "gelu_tanh";
  fail(where, " '", name, "' is not supported (supported: quick_gelu, gelu, gelu_pytorch_tanh)");
}

std::array<float, 3> channel_values(const nlohmann::json& j, const char* key, const std::array<float, 3>& now,
                                    const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return now;
  const auto& v = j[key];
  std::array<float, 3> out = now;
  if (v.is_array() && v.size() == 3) {
    for (size_t i = 0; i < 3; ++i) read_field(nlohmann::json{{key, v[i]}}, key, out[i], where);
    return out;
  }
  if (!v.is_number()) fail(where, ".", key, " must be a number or a list of 3 numbers");
  read_field(j, key, out[0], where);
  return {out[0], out[0], out[0]};
}

void apply_hf_config(const nlohmann::json& config, const std::string& source, ClipConfig& c) {
  // A tower saved alone (CLIPTextModel's config, as Stable Diffusion's text_encoder/ holds it) keeps its
  // fields at the top level.
  const bool alone = !config.contains("text_config") && !config.contains("vision_config");
  auto tower = [&](const char* key, int64_t& heads, std::string& act, double& eps) {
    const std::string where = cat(source, ": config.json", alone ? "" : cat(" ", key));
    const nlohmann::json& t = alone ? config : object_field(config, key, cat(source, ": config.json"));
    read_field(t, "num_attention_heads", heads, where);
    read_field(t, "hidden_act", act, where);
    read_field(t, "layer_norm_eps", eps, where);
    act = activation_name(act, where + ".hidden_act");
  };
  if (!alone || !c.image_tower)
    tower("text_config", c.transformer_heads, c.text_activation, c.text_layer_norm_eps);
  if (!alone || c.image_tower)
    tower("vision_config", c.vision_heads, c.vision_activation, c.vision_layer_norm_eps);
}

// preprocessor_config.json (CLIPImageProcessor, SiglipImageProcessor): mean, std, resample, centre crop or
// not.
void apply_hf_preprocessor(const nlohmann::json& j, const std::string& source, Preprocessing& p) {
  const std::string where = cat(source, ": preprocessor_config.json");
  p.mean = channel_values(j, "image_mean", p.mean, where);
  p.std = channel_values(j, "image_std", p.std, where);
  int resample = 3;
  read_field(j, "resample", resample, where);
  if (resample != 2 && resample != 3)
    fail(where, ".resample ", resample, " is not supported (2 bilinear, 3 bicubic)");
  p.interpolation = resample == 2 ? Interpolation::Bilinear : Interpolation::Bicubic;
  bool crop =
      j.contains("crop_size");  // CLIPImageProcessor resizes the short side and crops; Siglip's squashes
  read_field(j, "do_center_crop", crop, where);
  p.resize = crop ? ResizeMode::Shortest : ResizeMode::Squash;
}

// timm's SigLIP image towers, as open_clip names them in vision_cfg.timm_model_name: the heads and activation
// the weights cannot tell (Ref: timm 1.0 models/vision_transformer.py, the *_siglip_* models with the 'map'
// attention-pool head).
struct TimmSiglipTrunk {
  const char* name;
  int64_t heads;
  const char* activation;
};
constexpr TimmSiglipTrunk kTimmSiglipTrunks[] = {
    {"vit_base_patch32_siglip_256", 12, "gelu_tanh"},
    {"vit_base_patch16_siglip_224", 12, "gelu"},
    {"vit_base_patch16_siglip_256", 12, "gelu"},
    {"vit_base_patch16_siglip_384", 12, "gelu"},
    {"vit_base_patch16_siglip_512", 12, "gelu"},
    {"vit_large_patch16_siglip_256", 16, "gelu"},
    {"vit_large_patch16_siglip_384", 16, "gelu"},
    {"vit_large_patch16_siglip_512", 16, "gelu_tanh"},
    {"vit_so400m_patch14_siglip_224", 16, "gelu"},
    {"vit_so400m_patch14_siglip_378", 16, "gelu"},
    {"vit_so400m_patch14_siglip_384", 16, "gelu"},
    {"vit_so400m_patch16_siglip_256", 16, "gelu_tanh"},
    {"vit_so400m_patch16_siglip_384", 16, "gelu_tanh"},
    {"vit_so400m_patch16_siglip_512", 16, "gelu_tanh"},
    {"vit_giantopt_patch16_siglip_256", 16, "gelu_tanh"},
    {"vit_giantopt_patch16_siglip_384", 16, "gelu_tanh"},
};

// A timm image tower: SigLIP's attention-pool ViT only, without a projection after it (timm_pool "map",
// timm_proj "none"). A name not in the table takes the heads from vision_cfg.head_width (open_clip's field,
// 64 by default) and timm's default exact GELU, and says so.
void apply_timm_trunk(const nlohmann::json& vision, const std::string& name, const std::string& where,
                      ClipConfig& c) {
  std::string pool = "avg", proj = "linear";  // open_clip's CLIPVisionCfg defaults
  read_field(vision, "timm_pool", pool, where);
  read_field(vision, "timm_proj", proj, where);
  if (!c.siglip() || pool != "map" || (proj != "none" && !proj.empty())) {
    fail(where, ": the timm image tower '", name, "' (timm_pool '", pool, "', timm_proj '", proj,
         "') is not supported; supported: timm's SigLIP ViTs with timm_pool 'map' and timm_proj 'none'");
  }
  for (const auto& t : kTimmSiglipTrunks) {
    if (name == t.name) {
      c.vision_heads = t.heads;
      c.vision_activation = t.activation;
      return;
    }
  }
  c.vision_activation = "gelu";
  warn(where, ".timm_model_name '", name, "' is not a timm SigLIP model known here: assuming ",
       c.vision_heads,
       " heads (width / head_width) and exact GELU; --vision-heads and --activation override");
}

// open_clip_config.json: model_cfg (as open_clip's CLIP(**model_cfg) takes it) and preprocess_cfg.
void apply_open_clip_config(const nlohmann::json& j, const std::string& source, ClipConfig& c) {
  const std::string file = cat(source, ": open_clip_config.json");
  const nlohmann::json& model = object_field(j, "model_cfg", file);
  const std::string where = file + " model_cfg";
  const nlohmann::json& vision = object_field(model, "vision_cfg", where);
  const nlohmann::json& text = object_field(model, "text_cfg", where);
  bool quick_gelu = false;  // open_clip's default is exact GELU; the OpenAI-trained models set quick_gelu
  read_field(model, "quick_gelu", quick_gelu, where);
  c.vision_activation = c.text_activation = quick_gelu ? "quick_gelu" : "gelu";
  auto approximate = [&](const nlohmann::json& tower, const std::string& tower_where, std::string& act) {
    const nlohmann::json& kwargs = object_field(tower, "act_kwargs", tower_where);
    std::string approx = "none";
    read_field(kwargs, "approximate", approx, tower_where + ".act_kwargs");
    if (approx == "tanh" && act == "gelu") act = "gelu_tanh";
  };
  approximate(vision, where + ".vision_cfg", c.vision_activation);
  approximate(text, where + ".text_cfg", c.text_activation);
  int64_t head_width = 64;
  read_field(vision, "head_width", head_width, where + ".vision_cfg");
  if (head_width <= 0) fail(where, ".vision_cfg.head_width must be positive");
  c.vision_heads = (c.vision_resnet ? c.vision_width * 32 : c.vision_width) / head_width;
  c.vision_layer_norm_eps = c.text_layer_norm_eps =
      1e-5;  // torch's LayerNorm default, as open_clip builds it
  std::string timm_name;
  read_field(vision, "timm_model_name", timm_name, where + ".vision_cfg");
  if (!timm_name.empty()) {
    c.vision_layer_norm_eps = 1e-6;  // timm's LayerNorm default
    apply_timm_trunk(vision, timm_name, where + ".vision_cfg", c);
  }
  c.transformer_heads = 8;  // open_clip's CLIPTextCfg default
  read_field(text, "heads", c.transformer_heads, where + ".text_cfg");
  const nlohmann::json& norm = object_field(text, "norm_kwargs", where + ".text_cfg");
  read_field(norm, "eps", c.text_layer_norm_eps, where + ".text_cfg.norm_kwargs");
  // The text tower's pooling must be the one the weights' family computes: CLIP's end token behind a causal
  // mask, or SigLIP's last token without one.
  std::string pool = "argmax";
  read_field(text, "pool_type", pool, where + ".text_cfg");
  bool no_causal_mask = false;
  read_field(text, "no_causal_mask", no_causal_mask, where + ".text_cfg");
  const bool siglip_text = pool == "last" && no_causal_mask;
  if (siglip_text != c.siglip() || (!c.siglip() && pool != "argmax")) {
    fail(where, ".text_cfg: a text tower pooled by '", pool, no_causal_mask ? "' without a causal mask" : "'",
         " is not supported with ", c.siglip() ? "SigLIP" : "CLIP", "'s weights (",
         c.siglip() ? "SigLIP" : "CLIP", " pools ",
         c.siglip() ? "the last token without a causal mask)" : "the end token behind a causal mask)");
  }
  const nlohmann::json& pre = object_field(j, "preprocess_cfg", file);
  const std::string pre_where = file + " preprocess_cfg";
  Preprocessing& p = c.preprocess;
  p.mean = channel_values(pre, "mean", p.mean, pre_where);
  p.std = channel_values(pre, "std", p.std, pre_where);
  std::string interpolation = "bicubic", resize = "shortest";
  read_field(pre, "interpolation", interpolation, pre_where);
  read_field(pre, "resize_mode", resize, pre_where);
  if (interpolation == "random") interpolation = "bicubic";  // open_clip's inference transform does the same
  p.interpolation = parse_name(kInterpolations, interpolation, (pre_where + ".interpolation").c_str());
  p.resize = parse_name(kResizeModes, resize, (pre_where + ".resize_mode").c_str());
  int fill = 0;
  read_field(pre, "fill_color", fill, pre_where);
  if (fill < 0 || fill > 255) fail(pre_where, ".fill_color ", fill, " is not a level 0-255");
  p.fill = static_cast<uint8_t>(fill);
}

}  // namespace

void apply_model_config(const ModelConfigFiles& configs, const std::string& source, ClipConfig& config) {
  if (!configs.config_json.empty()) {
    const nlohmann::json j = parse_json_object(configs.config_json, source, configs.config_name);
    if (configs.config_name == "open_clip_config.json") {
      apply_open_clip_config(j, source, config);
    } else {
      apply_hf_config(j, source, config);
    }
  }
  if (!configs.preprocessor_json.empty()) {
    const nlohmann::json j = parse_json_object(configs.preprocessor_json, source, "preprocessor_config.json");
    const nlohmann::json& image =
        j.contains("image_processor") ? object_field(j, "image_processor", source) : j;
    apply_hf_preprocessor(image, source, config.preprocess);
  }
}

const Tokenizer& LoadedClip::require_tokenizer() const {
  if (!tokenizer) {
    fail("no tokenizer vocabulary found for ", path,
         ": looked next to the model (vocab.json + merges.txt, bpe_simple_vocab_16e6.txt.gz, spiece.model or "
         "tokenizer.model) and, for CLIP models, in ",
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

const std::vector<OpenClipPretrained>& open_clip_pretrained() {
  // open_clip 3.3.0's pretrained.py hf_hub entries.
  static const std::vector<OpenClipPretrained> table = {
      {"ViT-B-32", "laion2b_s34b_b79k", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"},
      {"ViT-B-32", "datacomp_xl_s13b_b90k", "laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K"},
      {"ViT-B-16", "laion2b_s34b_b88k", "laion/CLIP-ViT-B-16-laion2B-s34B-b88K"},
      {"ViT-B-16", "datacomp_xl_s13b_b90k", "laion/CLIP-ViT-B-16-DataComp.XL-s13B-b90K"},
      {"ViT-L-14", "laion2b_s32b_b82k", "laion/CLIP-ViT-L-14-laion2B-s32B-b82K"},
      {"ViT-L-14", "datacomp_xl_s13b_b90k", "laion/CLIP-ViT-L-14-DataComp.XL-s13B-b90K"},
      {"ViT-H-14", "laion2b_s32b_b79k", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"},
      {"ViT-g-14", "laion2b_s34b_b88k", "laion/CLIP-ViT-g-14-laion2B-s34B-b88K"},
      {"ViT-bigG-14", "laion2b_s39b_b160k", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k"},
      {"ViT-L-14-quickgelu", "dfn2b", "apple/DFN2B-CLIP-ViT-L-14"},
      {"ViT-H-14-quickgelu", "dfn5b", "apple/DFN5B-CLIP-ViT-H-14"},
      {"ViT-H-14-378-quickgelu", "dfn5b", "apple/DFN5B-CLIP-ViT-H-14-378"},
      {"ViT-B-16-SigLIP", "webli", "timm/ViT-B-16-SigLIP"},
      {"ViT-SO400M-14-SigLIP", "webli", "timm/ViT-SO400M-14-SigLIP"},
      {"ViT-SO400M-14-SigLIP-384", "webli", "timm/ViT-SO400M-14-SigLIP-384"},
      {"ViT-B-16-SigLIP2", "webli", "timm/ViT-B-16-SigLIP2"},
      {"ViT-SO400M-14-SigLIP2", "webli", "timm/ViT-SO400M-14-SigLIP2"},
  };
  return table;
}

std::string resolve_model_path(const std::string& name_given, const std::string& pretrained) {
  if (path_exists(name_given)) return name_given;  // a path; a pretrained tag applies to model names
  if (!pretrained.empty()) {
    std::string tags;
    for (const auto& p : open_clip_pretrained()) {
      if (name_given != p.model) continue;
      if (pretrained == p.tag) return resolve_model_path(p.repo);
      tags += cat(tags.empty() ? "" : ", ", p.tag);
    }
    if (!tags.empty())
      fail("open_clip model ", name_given, " has no pretrained tag '", pretrained, "' here (known: ", tags,
           ")");
    std::string models;
    for (const auto& p : open_clip_pretrained()) {
      if (models.find(p.model) == std::string::npos) models += cat(models.empty() ? "" : ", ", p.model);
    }
    fail("pretrained '", pretrained, "' names open_clip weights, but ", name_given,
         " is not one of the open_clip models known here [", models,
         "]; give the hub id (org/name) or the path");
  }
  const std::string name = name_given.rfind("hf-hub:", 0) == 0 ? name_given.substr(7) : name_given;
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
    // A snapshot with a model config: Hugging Face's config.json or open_clip's open_clip_config.json.
    auto has_config = [](const fs::path& dir) {
      return path_exists(dir / "config.json") || path_exists(dir / "open_clip_config.json");
    };
    if (ref && std::getline(ref, revision) && has_config(repo / "snapshots" / revision)) {
      return (repo / "snapshots" / revision).string();
    }
    std::error_code ec;
    if (fs::is_directory(repo / "snapshots", ec)) {
      for (const auto& snap : fs::directory_iterator(repo / "snapshots", ec)) {
        if (has_config(snap.path())) return snap.path().string();
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

std::shared_ptr<ClipModel> clip_model_from_tensors(TensorMap sd, const ModelConfigFiles& configs,
                                                   const std::string& source, const LoadOptions& options) {
  if (has_hf_clip_names(sd)) {
    sd = hf_to_openai_names(sd);
  } else if (has_open_clip_timm_names(sd)) {
    sd = open_clip_timm_to_openai_names(sd);
  }
  ClipConfig config;
  try {
    config = ClipConfig::from_state_dict(sd);
  } catch (const Error& e) {
    fail(source, ": ", SafeText{e.what()});
  } catch (const c10::Error& e) {
    fail(source, ": cannot infer the CLIP architecture: ", e.what_without_backtrace());
  }
  apply_model_config(configs, source, config);
  if (!options.activation.empty()) {
    config.vision_activation = config.text_activation = activation_name(options.activation, "activation");
  }
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
  if (!s.activation.empty()) activation_name(s.activation, "activation");
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
  load.pretrained = pretrained;
  load.vocab = vocab;
  load.device = devices.front();
  load.more_devices.assign(devices.begin() + 1, devices.end());
  load.dtype = parse_precision(precision);
  warn_if_bf16_is_emulated(load.device, load.dtype);
  load.text_heads = text_heads;
  load.vision_heads = vision_heads;
  load.activation = activation;
  return load;
}

LoadedClip load_clip(const std::string& path_or_name, const LoadOptions& options) {
  const std::string path = resolve_model_path(path_or_name, options.pretrained);
  Checkpoint ckpt = read_checkpoint(path);
  LoadedClip out;
  out.path = ckpt.path;
  out.format = ckpt.format;
  for (const auto& kv : ckpt.tensors)
    ++out.checkpoint_dtypes[std::string(c10::toString(kv.second.scalar_type()))];
  if (has_hf_clip_names(ckpt.tensors)) out.format += " (Hugging Face names)";
  if (has_open_clip_timm_names(ckpt.tensors)) out.format += " (open_clip names, timm image tower)";
  if (is_open_clip_weights_file(ckpt.path) && ckpt.configs.config_json.empty() &&
      options.activation.empty()) {
    fail(
        ckpt.path,
        ": open_clip weights without open_clip_config.json beside them; their activation (GELU or QuickGELU) "
        "cannot be told from the weights: put the model's open_clip_config.json beside the file, or give the "
        "activation (--activation gelu or quick_gelu) and the heads (--text-heads, --vision-heads)");
  }
  out.model = clip_model_from_tensors(std::move(ckpt.tensors), ckpt.configs, ckpt.path, options);
  for (const auto& p : out.model->parameters()) out.parameter_count += p.numel();
  for (const torch::Device& device : options.more_devices)
    out.replicas.push_back(replicate(*out.model, device));
  out.vocab_path = find_vocab(options.vocab, ckpt.path, out.model->config().family);
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
