// The image decoders (PNG through stb_image, JPEG through libjpeg-turbo), CLIP preprocessing of what they
// return, and the PNG text-chunk reader behind --replay. Decoding is capped at 4 megapixels here to keep runs
// fast; the cap's own check is the same at any size.
#include "io/image.h"
#include "tests/fuzz/fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  clipguide::fuzz::run_input([&] {
    clipguide::ImageLimits limits;
    limits.max_pixels = 4 << 20;
    const clipguide::Image image = clipguide::decode_image(data, size, "input", limits);
    clipguide::preprocess(image, 8);
  });
  return clipguide::fuzz::run_input(
      [&] { clipguide::read_png_text(std::string(reinterpret_cast<const char*>(data), size), "input"); });
}
