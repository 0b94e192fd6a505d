// Ref: Pillow src/libImaging/Resample.c (precompute_coeffs, normalize_coeffs_8bpc, ImagingResampleHorizontal/
// Vertical_8bpc), Geometry.c (ImagingScaleAffine, the NEAREST path), Convert.c (rgbA2rgba / rgba2rgbA
// premultiplication), PIL/Image.py (resize); torchvision transforms/functional.py (resize, center_crop).
#include "io/image.h"

#include <jerror.h>
#include <jpeglib.h>
#include <stb_image.h>
#include <stb_image_write.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstring>

#include "core/error.h"
#include "core/file_io.h"

namespace clipguide {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

void check_size(int64_t width, int64_t height, const std::string& name, const ImageLimits& limits) {
  if (width <= 0 || height <= 0) fail(name, ": image has no pixels (", width, "x", height, ")");
  // Each side first, so the product cannot overflow (PNG sides go up to 2^31 - 1).
  if (width > limits.max_pixels || height > limits.max_pixels || width * height > limits.max_pixels) {
    fail(name, ": image is ", width, "x", height, " pixels, over the limit of ", limits.max_pixels,
         " pixels");
  }
}

Image decode_png(const uint8_t* data, size_t size, const std::string& name, const ImageLimits& limits) {
  if (size < 33) fail(name, ": PNG is truncated");
  auto be32 = [&](size_t o) {
    return (uint32_t{data[o]} << 24) | (uint32_t{data[o + 1]} << 16) | (uint32_t{data[o + 2]} << 8) |
           data[o + 3];
  };
  if (std::memcmp(data + 12, "IHDR", 4) != 0) fail(name, ": PNG does not start with an IHDR chunk");
  check_size(be32(16), be32(20), name, limits);
  const uint8_t color_type = data[25];
  int w = 0, h = 0, n = 0;
  stbi_uc* pixels =
      stbi_load_from_memory(data, static_cast<int>(std::min<size_t>(size, INT32_MAX)), &w, &h, &n, 0);
  if (pixels == nullptr) fail(name, ": cannot decode PNG (", stbi_failure_reason(), ")");
  Image img;
  img.width = w;
  img.height = h;
  img.channels = n;
  img.pixels.assign(pixels, pixels + static_cast<size_t>(w) * h * n);
  stbi_image_free(pixels);
  static const Image::Mode by_channels[] = {Image::Mode::L, Image::Mode::L, Image::Mode::LA, Image::Mode::RGB,
                                            Image::Mode::RGBA};
  img.mode = color_type == 3 ? Image::Mode::P : by_channels[n];
  return img;
}

struct JpegError {
  jpeg_error_mgr mgr;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

void jpeg_error_exit(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<JpegError*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, err->message);
  std::longjmp(err->jump, 1);
}

void jpeg_emit_message(j_common_ptr cinfo, int level) {
  // A premature end of data is a truncated file: PIL refuses it, and so do we.
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_error_exit(cinfo);
}

Image decode_jpeg(const uint8_t* data, size_t size, const std::string& name, const ImageLimits& limits) {
  jpeg_decompress_struct cinfo{};
  JpegError err{};
  cinfo.err = jpeg_std_error(&err.mgr);
  err.mgr.error_exit = jpeg_error_exit;
  err.mgr.emit_message = jpeg_emit_message;
  Image img;
  // No C++ objects with destructors may be created between setjmp and the last libjpeg call.
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    fail(name, ": cannot decode JPEG (", err.message, ")");
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&cinfo, TRUE);
  const bool gray = cinfo.jpeg_color_space == JCS_GRAYSCALE;
  const bool cmyk = cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK;
  const int64_t w = cinfo.image_width, h = cinfo.image_height;
  if (!cmyk && w > 0 && h > 0 && w * h <= limits.max_pixels) {
    cinfo.out_color_space = gray ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&cinfo);
    img.width = static_cast<int>(cinfo.output_width);
    img.height = static_cast<int>(cinfo.output_height);
    img.channels = cinfo.output_components;
    img.pixels.resize(static_cast<size_t>(img.width) * img.height * img.channels);
    while (cinfo.output_scanline < cinfo.output_height) {
      JSAMPROW row =
          img.pixels.data() + static_cast<size_t>(cinfo.output_scanline) * img.width * img.channels;
      jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
  }
  jpeg_destroy_decompress(&cinfo);
  if (cmyk) fail(name, ": CMYK JPEGs are not supported");
  check_size(w, h, name, limits);
  img.mode = gray ? Image::Mode::L : Image::Mode::RGB;
  return img;
}

double bicubic(double x) {  // a = -0.5
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Per output index: first input index, tap count, and ksize fixed-point weights.
struct Coeffs {
  int ksize = 0;
  std::vector<int> xmin, count;
  std::vector<int32_t> k;
};

double bilinear(double x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

Coeffs precompute_coeffs(int in_size, int out_size, Interpolation interpolation) {
  Coeffs c;
  const bool cubic = interpolation == Interpolation::Bicubic;
  const double scale = static_cast<double>(in_size) / out_size;
  const double filterscale = std::max(scale, 1.0);
  const double support = (cubic ? 2.0 : 1.0) * filterscale;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.xmin.resize(out_size);
  c.count.resize(out_size);
  c.k.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> w(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    double ww = 0.0;
    const double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    for (int x = 0; x < xmax; ++x) {
      const double t = (x + xmin - center + 0.5) * ss;
      w[x] = cubic ? bicubic(t) : bilinear(t);
      ww += w[x];
    }
    for (int x = 0; x < xmax; ++x) {
      if (ww != 0.0) w[x] /= ww;
      const double v = w[x] * (1 << kPrecisionBits);
      c.k[static_cast<size_t>(xx) * c.ksize + x] = static_cast<int32_t>(w[x] < 0 ? -0.5 + v : 0.5 + v);
    }
    c.xmin[xx] = xmin;
    c.count[xx] = xmax;
  }
  return c;
}

uint8_t clip8(int32_t v) {
  v >>= kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// Horizontal pass, channels unrolled: each output pixel accumulates `count` taps of CH interleaved channels.
template <int CH>
void resample_rows(const Image& in, Image& out, const Coeffs& c) {
  for (int y = 0; y < out.height; ++y) {
    const uint8_t* row = &in.pixels[static_cast<size_t>(y) * in.width * CH];
    uint8_t* dst = &out.pixels[static_cast<size_t>(y) * out.width * CH];
    for (int x = 0; x < out.width; ++x) {
      const int32_t* k = &c.k[static_cast<size_t>(x) * c.ksize];
      const uint8_t* src = row + static_cast<size_t>(c.xmin[x]) * CH;
      int32_t acc[CH];
      for (int b = 0; b < CH; ++b) acc[b] = 1 << (kPrecisionBits - 1);
      for (int t = 0; t < c.count[x]; ++t) {
        for (int b = 0; b < CH; ++b) acc[b] += src[t * CH + b] * k[t];
      }
      for (int b = 0; b < CH; ++b) dst[x * CH + b] = clip8(acc[b]);
    }
  }
}

// One separable pass along x (horizontal) or y, with Pillow's integer arithmetic.
Image resample_pass(const Image& in, int out_size, bool horizontal, Interpolation interpolation) {
  const Coeffs c = precompute_coeffs(horizontal ? in.width : in.height, out_size, interpolation);
  Image out = in;
  (horizontal ? out.width : out.height) = out_size;
  out.pixels.assign(static_cast<size_t>(out.width) * out.height * out.channels, 0);
  if (horizontal) {
    switch (in.channels) {
      case 1:
        resample_rows<1>(in, out, c);
        break;
      case 2:
        resample_rows<2>(in, out, c);
        break;
      case 3:
        resample_rows<3>(in, out, c);
        break;
      default:
        resample_rows<4>(in, out, c);
        break;
    }
    return out;
  }
  // Vertical: whole rows at a time, so the inner loop runs over contiguous bytes.
  const size_t stride = static_cast<size_t>(in.width) * in.channels;
  std::vector<int32_t> acc(stride);
  for (int y = 0; y < out.height; ++y) {
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    const int32_t* k = &c.k[static_cast<size_t>(y) * c.ksize];
    for (int t = 0; t < c.count[y]; ++t) {
      const uint8_t* src = &in.pixels[static_cast<size_t>(c.xmin[y] + t) * stride];
      const int32_t kt = k[t];
      for (size_t e = 0; e < stride; ++e) acc[e] += src[e] * kt;
    }
    uint8_t* dst = &out.pixels[static_cast<size_t>(y) * stride];
    for (size_t e = 0; e < stride; ++e) dst[e] = clip8(acc[e]);
  }
  return out;
}

// ImagingScaleAffine with NEAREST: source index = floor of an accumulated (in / out) step from the pixel
// centre.
Image resize_nearest(const Image& in, int width, int height) {
  auto table = [](int in_size, int out_size) {
    std::vector<int> idx(out_size);
    const double step = static_cast<double>(in_size) / out_size;
    double pos = step * 0.5;
    for (int i = 0; i < out_size; ++i, pos += step) idx[i] = std::min(static_cast<int>(pos), in_size - 1);
    return idx;
  };
  const std::vector<int> xs = table(in.width, width), ys = table(in.height, height);
  Image out = in;
  out.width = width;
  out.height = height;
  out.pixels.resize(static_cast<size_t>(width) * height * in.channels);
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      std::memcpy(&out.pixels[(static_cast<size_t>(y) * width + x) * in.channels],
                  &in.pixels[(static_cast<size_t>(ys[y]) * in.width + xs[x]) * in.channels], in.channels);
    }
  }
  return out;
}

// Convert.c: RGBA -> RGBa (premultiply, MULDIV255) and back (integer divide, alpha 0 and 255 unchanged).
void premultiply(Image& img, bool forward) {
  const int ch = img.channels, alpha_at = ch - 1;
  for (size_t p = 0; p < img.pixels.size(); p += ch) {
    const unsigned alpha = img.pixels[p + alpha_at];
    for (int b = 0; b < alpha_at; ++b) {
      uint8_t& v = img.pixels[p + b];
      if (forward) {
        const unsigned tmp = v * alpha + 128;
        v = static_cast<uint8_t>(((tmp >> 8) + tmp) >> 8);
      } else if (alpha != 0 && alpha != 255) {
        v = static_cast<uint8_t>(std::min(255u, (255u * v) / alpha));
      }
    }
  }
}

}  // namespace

Image decode_image(const uint8_t* data, size_t size, const std::string& name, const ImageLimits& limits) {
  static const uint8_t png_magic[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (size == 0) fail(name, ": image file is empty");
  if (size >= 8 && std::memcmp(data, png_magic, 8) == 0) return decode_png(data, size, name, limits);
  if (size >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF)
    return decode_jpeg(data, size, name, limits);
  fail(name, ": unsupported image format (only PNG and JPEG are read)");
}

Image read_image(const std::string& path, const ImageLimits& limits) {
  MappedFile file(path);
  return decode_image(file.bytes().data, file.size(), path, limits);
}

Image resize_like_pil(const Image& image, int width, int height, Interpolation interpolation) {
  if (width == image.width && height == image.height) return image;
  if (image.mode == Image::Mode::P) return resize_nearest(image, width, height);
  Image img = image;
  const bool alpha = image.mode == Image::Mode::LA || image.mode == Image::Mode::RGBA;
  if (alpha) premultiply(img, true);
  // Pillow (from 12.0) runs the vertical pass first when the height shrinks by more than twice what the width
  // does; the other order rounds differently.
  const bool vertical_first = img.height - height > 0 && img.height - height > (img.width - width) * 2;
  if (vertical_first && height != img.height) img = resample_pass(img, height, false, interpolation);
  if (width != img.width) img = resample_pass(img, width, true, interpolation);
  if (height != img.height) img = resample_pass(img, height, false, interpolation);
  if (alpha) premultiply(img, false);
  return img;
}

torch::Tensor to_rgb_tensor(const Image& image) {
  torch::Tensor out = torch::empty({image.height, image.width, 3}, torch::kUInt8);
  uint8_t* dst = out.data_ptr<uint8_t>();
  const bool gray = image.mode == Image::Mode::L || image.mode == Image::Mode::LA;
  for (size_t p = 0, n = static_cast<size_t>(image.width) * image.height; p < n; ++p) {
    const uint8_t* src = &image.pixels[p * image.channels];
    for (int b = 0; b < 3; ++b) dst[p * 3 + b] = src[gray ? 0 : b];
  }
  return out;
}

std::string thumbnail_png(const Image& image, int max_side) {
  TORCH_CHECK(max_side > 0, "thumbnail size must be positive");
  const double scale = std::min(1.0, static_cast<double>(max_side) / std::max(image.width, image.height));
  const int w = std::max(1, static_cast<int>(std::lround(image.width * scale)));
  const int h = std::max(1, static_cast<int>(std::lround(image.height * scale)));
  return encode_png(to_rgb_tensor(resize_like_pil(image, w, h)));  // [h, w, 3]
}

namespace {

void put_u32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((v >> shift) & 0xff);
}

uint32_t get_u32(const std::string& s, size_t at) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(s[at + i]);
  return v;
}

constexpr char kPngSignature[] = "\x89PNG\r\n\x1a\n";

}  // namespace

std::string encode_png(const torch::Tensor& rgb,
                       const std::vector<std::pair<std::string, std::string>>& text) {
  TORCH_CHECK(rgb.dim() == 3 && rgb.size(2) == 3 && rgb.scalar_type() == torch::kUInt8,
              "encode_png takes [H, W, 3] uint8");
  const torch::Tensor c = rgb.contiguous().to(torch::kCPU);
  const int h = static_cast<int>(c.size(0)), w = static_cast<int>(c.size(1));
  std::string png;
  auto sink = [](void* context, void* data, int size) {
    static_cast<std::string*>(context)->append(static_cast<char*>(data), size);
  };
  if (stbi_write_png_to_func(sink, &png, w, h, 3, c.data_ptr<uint8_t>(), w * 3) == 0)
    fail("cannot encode a PNG");
  // iTXt: keyword NUL, compression flag 0, method 0, empty language NUL, empty translated keyword NUL, UTF-8
  // text.
  std::string chunks;
  for (const auto& [key, value] : text) {
    TORCH_CHECK(!key.empty() && key.size() < 80 && key.find('\0') == std::string::npos,
                "bad PNG text keyword");
    std::string body = "iTXt" + key;
    body += std::string("\0\0\0\0\0", 5);
    body += value;
    put_u32(chunks, static_cast<uint32_t>(body.size() - 4));
    chunks += body;
    put_u32(chunks, static_cast<uint32_t>(::crc32(0, reinterpret_cast<const Bytef*>(body.data()),
                                                  static_cast<uInt>(body.size()))));
  }
  // After the signature (8 bytes) and IHDR (4 length + 4 type + 13 data + 4 CRC).
  png.insert(8 + 25, chunks);
  return png;
}

std::vector<std::pair<std::string, std::string>> read_png_text(const std::string& png,
                                                               const std::string& name) {
  if (png.size() < 8 || png.compare(0, 8, std::string(kPngSignature, 8)) != 0) fail(name, ": not a PNG file");
  std::vector<std::pair<std::string, std::string>> out;
  size_t at = 8;
  while (at + 12 <= png.size()) {
    const uint32_t length = get_u32(png, at);
    if (length > png.size() - at - 12)
      fail(name, ": PNG chunk at byte ", at, " runs past the end of the file");
    const std::string type = png.substr(at + 4, 4), data = png.substr(at + 8, length);
    at += 12 + static_cast<size_t>(length);
    if (type == "IEND") return out;
    const size_t nul = data.find('\0');
    if (nul == std::string::npos) continue;
    if (type == "tEXt") {
      out.emplace_back(data.substr(0, nul), data.substr(nul + 1));
    } else if (type == "iTXt" && nul + 2 < data.size() && data[nul + 1] == 0) {
      const size_t lang_end = data.find('\0', nul + 3);
      const size_t key_end = lang_end == std::string::npos ? lang_end : data.find('\0', lang_end + 1);
      if (key_end != std::string::npos) out.emplace_back(data.substr(0, nul), data.substr(key_end + 1));
    }
  }
  fail(name, ": PNG file ends without an IEND chunk");
}

torch::Tensor to_rgb_bytes(const torch::Tensor& image01) {
  const torch::Tensor x = image01.dim() == 4 ? image01[0] : image01;
  TORCH_CHECK(x.dim() == 3 && x.size(0) == 3, "to_rgb_bytes takes [1, 3, H, W] or [3, H, W]");
  return x.detach()
      .to(torch::kCPU, torch::kFloat)
      .clamp(0, 1)
      .mul(255)
      .round()
      .to(torch::kUInt8)
      .permute({1, 2, 0})
      .contiguous();  // [3, H, W] -> [H, W, 3]
}

torch::Tensor preprocess(const Image& image, int64_t n_px, const Preprocessing& how) {
  TORCH_CHECK(n_px > 0, "preprocess size must be positive");
  const int64_t w = image.width, h = image.height;
  int64_t new_w = n_px, new_h = n_px;  // squash
  if (how.resize == ResizeMode::Shortest) {
    // torchvision Resize(n_px): the short side becomes n_px, the long side int(n_px * long / short).
    const int64_t short_side = std::min(w, h), long_side = std::max(w, h);
    const auto new_long =
        static_cast<int64_t>(static_cast<double>(n_px * long_side) / static_cast<double>(short_side));
    new_w = w <= h ? n_px : new_long;
    new_h = w <= h ? new_long : n_px;
  } else if (how.resize == ResizeMode::Longest) {
    // open_clip's ResizeKeepRatio(longest=1): each side divided by the larger ratio, Python-rounded.
    const double ratio = std::max(static_cast<double>(h) / n_px, static_cast<double>(w) / n_px);
    new_w = std::max<int64_t>(1, static_cast<int64_t>(std::nearbyint(w / ratio)));
    new_h = std::max<int64_t>(1, static_cast<int64_t>(std::nearbyint(h / ratio)));
  }
  const Image resized =
      resize_like_pil(image, static_cast<int>(new_w), static_cast<int>(new_h), how.interpolation);
  torch::Tensor rgb = to_rgb_tensor(resized);  // [h, w, 3]
  if (resized.width < n_px || resized.height < n_px) {
    // open_clip's center_crop_or_pad: pad left/top by half the shortfall (rounded down), the rest
    // right/bottom.
    const int64_t pad_w = std::max<int64_t>(0, n_px - resized.width),
                  pad_h = std::max<int64_t>(0, n_px - resized.height);
    torch::Tensor padded =
        torch::full({resized.height + pad_h, resized.width + pad_w, 3}, how.fill, torch::kUInt8);
    padded.narrow(0, pad_h / 2, resized.height).narrow(1, pad_w / 2, resized.width).copy_(rgb);
    rgb = padded;
  }
  // CenterCrop: int(round((size - crop) / 2.0)), Python's round-half-to-even.
  const auto top = static_cast<int64_t>(std::nearbyint((rgb.size(0) - n_px) / 2.0));
  const auto left = static_cast<int64_t>(std::nearbyint((rgb.size(1) - n_px) / 2.0));
  rgb = rgb.narrow(0, top, n_px).narrow(1, left, n_px);                 // [n, n, 3]
  torch::Tensor x = rgb.permute({2, 0, 1}).to(torch::kFloat).div(255);  // [3, n, n]
  return normalize_pixels(x, how.mean, how.std).contiguous();
}

torch::Tensor normalize_pixels(const torch::Tensor& x01, const std::array<float, 3>& mean,
                               const std::array<float, 3>& std) {
  TORCH_CHECK(x01.dim() >= 3 && x01.size(-3) == 3, "normalize_pixels takes [..., 3, H, W]");
  const auto options = torch::TensorOptions().dtype(torch::kFloat).device(x01.device());
  const auto m = torch::tensor({mean[0], mean[1], mean[2]}, options).view({3, 1, 1});
  const auto s = torch::tensor({std[0], std[1], std[2]}, options).view({3, 1, 1});
  return x01.sub(m).div(s).to(x01.scalar_type());
}

}  // namespace clipguide
