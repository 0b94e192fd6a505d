// The allow-listed unpickler, over a stream of pickles, and the legacy torch.save layout built on it.
#include "io/pickle.h"
#include "io/torch_file.h"
#include "tests/fuzz/fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const clipguide::ByteSpan bytes{data, size};
  clipguide::fuzz::run_input([&] {
    clipguide::PickleArena arena;
    for (size_t pos = 0; pos < size;) clipguide::parse_pickle(bytes, &pos, arena, "input");
  });
  return clipguide::fuzz::run_input([&] {
    if (clipguide::looks_like_legacy_torch(bytes)) clipguide::read_torch_legacy(bytes, "input");
  });
}
