// The prompt language: weighted items, image prompts, trailing numbers, story schedules.
#include "prompts/prompt.h"
#include "tests/fuzz/fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string spec(reinterpret_cast<const char*>(data), size);
  clipguide::fuzz::run_input([&] { clipguide::parse_prompts(spec); });
  clipguide::fuzz::run_input([&] { clipguide::parse_image_prompt(spec); });
  clipguide::fuzz::run_input([&] { clipguide::split_trailing_numbers(spec, 2); });
  return clipguide::fuzz::run_input([&] {
    const auto schedule = clipguide::PromptSchedule::parse(spec, 7, size % 2 == 1);
    for (int64_t step : {0, 6, 7, 100, 1000000}) schedule.at(step);
  });
}
