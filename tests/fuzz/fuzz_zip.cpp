// The zip reader (end record, zip64, central directory, local headers, CRC) and, on top of it, the PyTorch
// archive reader: data.pkl through the unpickler, storages cut into tensors.
#include "io/torch_file.h"
#include "io/zip.h"
#include "tests/fuzz/fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const clipguide::ByteSpan bytes{data, size};
  clipguide::fuzz::run_input([&] {
    const clipguide::ZipArchive zip(bytes, "input");
    for (const std::string& name : zip.names()) {
      clipguide::fuzz::run_input([&] { zip.read(name); });
    }
  });
  return clipguide::fuzz::run_input([&] { clipguide::read_torch_zip(bytes, "input"); });
}
