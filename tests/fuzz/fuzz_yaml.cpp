// A taming VQGAN .yaml config.
#include "generators/vqgan.h"
#include "tests/fuzz/fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const clipguide::fuzz::MemFile file(std::string(reinterpret_cast<const char*>(data), size));
  return clipguide::fuzz::run_input([&] { clipguide::VqganConfig::from_yaml(file.path()).describe(); });
}
