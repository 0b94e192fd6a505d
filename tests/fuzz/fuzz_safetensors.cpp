// safetensors: header length, JSON header, dtypes, shapes, offsets, coverage of the data.
#include "io/safetensors.h"
#include "tests/fuzz/fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return clipguide::fuzz::run_input([&] {
    const clipguide::ByteSpan bytes{data, size};
    clipguide::parse_safetensors(bytes, "input");
  });
}
