// Checkpoints whose tensors do not fit the model, and other bad input at the load_clip level.
#include <c10/core/CPUAllocator.h>

#include <cstring>
#include <filesystem>

#include "clip/load.h"
#include "core/error.h"
#include "fixtures.h"
#include "generators/unet.h"
#include "generators/vqgan.h"
#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "io/state_dict.h"

namespace clipguide::test {
namespace {

std::string load_error(const std::string& path) {
  try {
    load_clip(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(StateDict, MissingUnexpectedAndMisShapedKeysAreNamed) {
  TempDir dir;
  TensorMap sd = read_safetensors((fixtures() / "clip" / "vit-tiny.openai.safetensors").string()).tensors;
  const std::string missing = "visual.ln_post.bias";
  sd.erase(missing);
  sd["visual.extra_head.weight"] = torch::zeros({2});
  sd["transformer.resblocks.0.ln_1.bias"] = torch::zeros({3});
  const std::string path = (dir / "edited.safetensors").string();
  write_file_atomic(path, serialize_safetensors(sd, {}));
  const std::string msg = load_error(path);
  EXPECT_NE(msg.find("edited.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("missing: " + missing), std::string::npos) << msg;
  EXPECT_NE(msg.find("unexpected: visual.extra_head.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("mis-shaped: transformer.resblocks.0.ln_1.bias"), std::string::npos) << msg;
}

TEST(StateDict, NotAClipIsReported) {
  const std::string msg = load_error((fixtures() / "diffusion" / "unet-tiny.safetensors").string());
  EXPECT_NE(msg.find("unet-tiny.safetensors"), std::string::npos) << msg;
  EXPECT_NE(msg.find("is missing"), std::string::npos) << msg;
}

TEST(Names, UnknownNamesSayWhereWeLooked) {
  EXPECT_NE(load_error("ViT-B-32").find(".cache/clip/ViT-B-32.pt"), std::string::npos);
  EXPECT_NE(load_error("openai/clip-vit-base-patch32").find("models--openai--clip-vit-base-patch32"),
            std::string::npos);
  EXPECT_NE(load_error("no-such-model").find("ViT-L/14@336px"), std::string::npos);
}

// Points HOME (and so ~/.cache) at a temporary folder for one test.
class ScopedHome {
 public:
  explicit ScopedHome(const std::filesystem::path& home)
      : old_(std::getenv("HOME") ? std::getenv("HOME") : "") {
    ::setenv("HOME", home.c_str(), 1);
    ::unsetenv("HF_HOME");
    ::unsetenv("HF_HUB_CACHE");
  }
  ~ScopedHome() { ::setenv("HOME", old_.c_str(), 1); }

 private:
  std::string old_;
};

TEST(Names, OpenAINamesResolveInTheClipCache) {
  TempDir dir;
  ScopedHome home(dir.path());
  std::filesystem::create_directories(dir / ".cache/clip");
  std::filesystem::copy_file(fixtures() / "clip" / "vit-tiny.openai.jit.pt", dir / ".cache/clip/ViT-B-32.pt");
  std::filesystem::copy_file(fixtures() / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz",
                             dir / ".cache/clip/bpe_simple_vocab_16e6.txt.gz");
  for (const char* name : {"ViT-B-32", "ViT-B/32"}) {
    const LoadedClip clip = load_clip(name);
    EXPECT_EQ(clip.path, (dir / ".cache/clip/ViT-B-32.pt").string());
    EXPECT_EQ(clip.format, "TorchScript archive");
    EXPECT_EQ(clip.vocab_path,
              (dir / ".cache/clip/bpe_simple_vocab_16e6.txt.gz").string());  // found in ~/.cache/clip
  }
}

TEST(Names, HubIdsResolveInTheHuggingFaceCacheWithTheirVocabulary) {
  TempDir dir;
  ScopedHome home(dir.path());
  const auto repo = dir / ".cache/huggingface/hub/models--someone--tiny-clip";
  const auto snapshot = repo / "snapshots" / "0123abcd";
  std::filesystem::create_directories(snapshot);
  std::filesystem::create_directories(repo / "refs");
  write_bytes(repo / "refs" / "main", "0123abcd");
  for (const char* f : {"model.safetensors", "config.json"})
    std::filesystem::copy_file(fixtures() / "clip" / "vit-tiny.hf" / f, snapshot / f);
  for (const char* f : {"vocab.json", "merges.txt"})
    std::filesystem::copy_file(fixtures() / "tokenizer" / "hf-tokenizer" / f, snapshot / f);
  const LoadedClip clip = load_clip("someone/tiny-clip");
  EXPECT_EQ(clip.path, (snapshot / "model.safetensors").string());
  EXPECT_EQ(clip.vocab_path, snapshot.string());  // vocab.json + merges.txt beside the weights
  EXPECT_NE(clip.format.find("Hugging Face names"), std::string::npos);
}

TEST(Names, FormatIsDetectedByContentNotExtension) {
  TempDir dir;
  std::filesystem::copy_file(fixtures() / "clip" / "vit-tiny.openai.safetensors", dir / "weights.pt");
  LoadOptions options;
  options.vocab = (fixtures() / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz").string();
  const LoadedClip clip = load_clip((dir / "weights.pt").string(), options);
  EXPECT_EQ(clip.format, "safetensors");
}

// A module as large as its config says: what a hostile checkpoint's names and shapes make a loader build.
struct Square : torch::nn::Module {
  explicit Square(int64_t n) { register_parameter("w", torch::zeros({n, n})); }
  static double parameter_elements(int64_t n) { return static_cast<double>(n) * static_cast<double>(n); }
  void load_weights(const TensorMap& sd, const std::string& source) {
    StrictLoad how;
    how.source = source;
    how.what = "a square";
    load_strict(*this, sd, how);
  }
};

TEST(StateDict, ShapesDescribingAFarLargerModelThanTheFileHoldsAreRefusedBeforeTheMemoryIsTaken) {
  const TensorMap sd = {{"w", torch::zeros({16, 16})}};
  EXPECT_NO_THROW(build_strict<Square>(int64_t{16}, sd, "small.safetensors"));
  try {
    build_strict<Square>(int64_t{1} << 15, sd, "hostile.safetensors");  // 4 GiB of fp32 from 1 KiB of weights
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("hostile.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("more than 64 MiB"), std::string::npos) << e.what();
  }
}

// Each fixture CLIP's own config fits its weights; the same config with its vision tower and embedding 256
// times wider (as a hostile file's conv1 and projection shapes would make it) is refused from the config
// alone.
TEST(StateDict, AClipWiderThanItsWeightsIsRefusedFromItsConfigAlone) {
  const auto manifest = read_json(fixtures() / "clip" / "clip-manifest.json");
  for (const auto& f : clip_model_files()) {
    const Checkpoint ckpt = read_checkpoint((fixtures() / "clip" / f.file).string());
    LoadOptions options;
    options.text_heads = manifest["models"][f.model]["config"]["transformer_heads"].get<int64_t>();
    ClipConfig config = clip_model_from_tensors(ckpt.tensors, ckpt.configs, ckpt.path, options)->config();
    EXPECT_NO_THROW(check_model_size(ClipModel::parameter_elements(config), ckpt.tensors, f.file)) << f.file;
    config.vision_width *= 256;
    config.embed_dim *= 256;
    EXPECT_THROW(check_model_size(ClipModel::parameter_elements(config), ckpt.tensors, f.file), Error)
        << f.file;
  }
}

// parameter_elements, which build_strict checks before allocating, is what constructing each fixture model
// allocates, element for element: CLIPs (ViT and ResNet), the VQGAN and the diffusion UNet.
TEST(StateDict, EachModelsParameterCountFromItsConfigIsWhatConstructingItAllocates) {
  auto allocated = [](torch::nn::Module& m) {
    double n = 0;
    for (const auto& p : m.parameters()) n += static_cast<double>(p.numel());
    for (const auto& b : m.buffers()) n += static_cast<double>(b.numel());
    return n;
  };
  const auto manifest = read_json(fixtures() / "clip" / "clip-manifest.json");
  for (const auto& f : clip_model_files()) {
    const Checkpoint ckpt = read_checkpoint((fixtures() / "clip" / f.file).string());
    LoadOptions options;
    options.text_heads = manifest["models"][f.model]["config"]["transformer_heads"].get<int64_t>();
    const auto model = clip_model_from_tensors(ckpt.tensors, ckpt.configs, ckpt.path, options);
    EXPECT_EQ(ClipModel::parameter_elements(model->config()), allocated(*model)) << f.file;
  }
  const auto vqgans = read_json(fixtures() / "vqgan" / "vqgan-manifest.json");
  for (const auto& [name, m] : vqgans["models"].items()) {
    const LoadedVqgan v =
        load_vqgan((fixtures() / "vqgan" / m["ckpt"].get<std::string>()).string(), "", torch::kCPU);
    EXPECT_EQ(Vqgan::parameter_elements(v.model->config()), allocated(*v.model)) << name;
  }
  const auto unets = read_json(fixtures() / "diffusion" / "diffusion-manifest.json");
  for (const auto& [name, m] : unets["models"].items()) {
    const LoadedUNet u =
        load_unet((fixtures() / "diffusion" / m["safetensors"].get<std::string>()).string(),
                  (fixtures() / "diffusion" / m["flags"].get<std::string>()).string(), torch::kCPU);
    EXPECT_EQ(UNetModel::parameter_elements(u.model->config()), allocated(*u.model)) << name;
  }
}

// A host program keeps its own CPU allocator and its own random stream across a clipguide model load.
struct HostAllocator final : c10::Allocator {
  explicit HostAllocator(c10::Allocator* base) : base(base) {}
  c10::DataPtr allocate(size_t bytes) const {
    ++calls;
    return base->allocate(bytes);
  }
  c10::DataPtr allocate(size_t bytes) { return static_cast<const HostAllocator*>(this)->allocate(bytes); }
  void copy_data(void* dest, const void* src, std::size_t count) const { std::memcpy(dest, src, count); }
  c10::DeleterFnPtr raw_deleter() const { return base->raw_deleter(); }
  c10::Allocator* base;
  mutable int64_t calls = 0;
};

TEST(Host, LoadingAModelLeavesTheHostsAllocatorAndSeedAlone) {
  c10::Allocator* before = c10::GetCPUAllocator();
  static HostAllocator host(before);
  c10::SetCPUAllocator(&host);
  torch::manual_seed(1234);
  const torch::Tensor expected = [] {
    torch::manual_seed(1234);
    return torch::rand({8});
  }();
  torch::manual_seed(1234);
  LoadOptions options;
  options.vocab = (fixtures() / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz").string();
  const LoadedClip clip =
      load_clip((fixtures() / "clip" / clip_model_files().front().file).string(), options);
  const torch::Tensor after = torch::rand({8});
  EXPECT_EQ(c10::GetCPUAllocator(), &host) << "clipguide replaced the host's CPU allocator";
  EXPECT_GT(host.calls, 0) << "the model's memory did not come from the host's allocator";
  EXPECT_TRUE(torch::equal(after, expected)) << "loading a model drew from or reseeded the global generator";
  c10::SetCPUAllocator(before);
}

TEST(Config, DeeplyNestedYamlIsAnErrorNotAStackOverflow) {
  TempDir dir;
  const std::string path = (dir / "deep.yaml").string();
  write_file_atomic(path, std::string(100000, '['));
  try {
    VqganConfig::from_yaml(path);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nesting deeper than"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace clipguide::test
