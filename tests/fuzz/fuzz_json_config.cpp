// JSON configs: a Hugging Face CLIP config.json (first byte 'c'), open_clip's open_clip_config.json ('o'), a
// Hugging Face preprocessor_config.json ('p'), a diffusers scheduler_config.json ('s': read for the scheduler
// the input's length picks, which then plans 1 to 64 steps) or a guided-diffusion flags file (otherwise),
// applied to the configs of the fixture-sized models.
#include "clip/load.h"
#include "generators/sd_scheduler.h"
#include "generators/unet.h"
#include "tests/fuzz/fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  return clipguide::fuzz::run_input([&] {
    if (data[0] == 'c' || data[0] == 'o' || data[0] == 'p') {
      clipguide::ClipConfig config;
      config.vision_width = config.transformer_width = 64;
      clipguide::ModelConfigFiles files;
      (data[0] == 'p' ? files.preprocessor_json : files.config_json) = text;
      files.config_name = data[0] == 'o' ? "open_clip_config.json" : "config.json";
      clipguide::apply_model_config(files, "model", config);
    } else if (data[0] == 's') {
      const auto kind = clipguide::kSdSchedulers[size % std::size(clipguide::kSdSchedulers)].value;
      clipguide::SdScheduler scheduler(
          kind, clipguide::read_sd_scheduler_config(text, "scheduler_config.json", kind));
      scheduler.set_timesteps(1 + static_cast<int64_t>(size % 64));
    } else {
      clipguide::UNetConfig config;
      config.channel_mult = {1, 2};
      config.attention_levels = {false, true};
      clipguide::LoadedUNet out;
      clipguide::apply_unet_flags(text, "flags.json", config, out);
    }
  });
}
