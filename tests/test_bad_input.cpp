// Checkpoints whose tensors do not fit the model, and other bad input at the load_clip level.
#include "clip/error.h"
#include "clip/load.h"
#include "clip/safetensors.h"
#include "fixtures.h"

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
  EXPECT_NE(load_error("openai/clip-vit-base-patch32").find("models--openai--clip-vit-base-patch32"), std::string::npos);
  EXPECT_NE(load_error("no-such-model").find("ViT-L/14@336px"), std::string::npos);
}

TEST(Names, FormatIsDetectedByContentNotExtension) {
  TempDir dir;
  std::filesystem::copy_file(fixtures() / "clip" / "vit-tiny.openai.safetensors", dir / "weights.pt");
  LoadOptions options;
  options.vocab = (fixtures() / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz").string();
  const LoadedClip clip = load_clip((dir / "weights.pt").string(), options);
  EXPECT_EQ(clip.format, "safetensors");
}

}  // namespace
}  // namespace clipguide::test
