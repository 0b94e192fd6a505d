// JSON configs: a Hugging Face CLIP config.json (first byte 'c') or a guided-diffusion flags file
// (otherwise), applied to the configs of the fixture-sized models.
#include "clip/load.h"
#include "generators/unet.h"
#include "tests/fuzz/fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  return clipguide::fuzz::run_input([&] {
    if (data[0] == 'c') {
      clipguide::ClipConfig config;
      clipguide::apply_hf_config(text, "config.json", config);
    } else {
      clipguide::UNetConfig config;
      config.channel_mult = {1, 2};
      config.attention_levels = {false, true};
      clipguide::LoadedUNet out;
      clipguide::apply_unet_flags(text, "flags.json", config, out);
    }
  });
}
