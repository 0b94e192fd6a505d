#include "io/npy.h"

#include <torch/torch.h>

#include <cstring>
#include <regex>

#include "core/error.h"
#include "core/file_io.h"

namespace clipguide {

namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicBytes = 6;

}  // namespace

std::string npy_bytes(const torch::Tensor& t, torch::ScalarType dtype) {
  TORCH_CHECK(dtype == torch::kFloat || dtype == torch::kHalf, "npy_bytes writes float32 or float16");
  const torch::Tensor c = t.detach().to(torch::kCPU, dtype).contiguous();
  std::string shape = "(";
  for (int64_t d : c.sizes()) shape += std::to_string(d) + ",";
  if (c.dim() > 1) shape.pop_back();
  shape += ")";
  std::string header = cat("{'descr': '", dtype == torch::kFloat ? "<f4" : "<f2",
                           "', 'fortran_order': False, 'shape': ", shape, ", }");
  // numpy pads the header with spaces so that the data starts on a 64-byte boundary, then ends it with \n.
  header.append(64 - (kMagicBytes + 4 + header.size() + 1) % 64, ' ');
  header += '\n';
  std::string out(kMagic, kMagicBytes);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  out.append(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
  return out;
}

namespace {

// A mapped .npy matrix: its shape and where its data starts.
struct NpyMatrix {
  MappedFile file;
  int64_t rows = 0, cols = 0;
  bool half = false;
  ByteSpan data;

  explicit NpyMatrix(const std::string& path) : file(path) {
    const ByteSpan all = file.bytes();
    const std::string what = cat("the .npy header of ", path);
    const ByteSpan magic = all.sub(0, kMagicBytes + 4, what);
    if (std::memcmp(magic.data, kMagic, kMagicBytes) != 0)
      fail(path, " is not a .npy file (no \\x93NUMPY magic)");
    const int version = magic.data[6];
    if (version < 1 || version > 3)
      fail(path, ": .npy format version ", version, " is not one we read (1, 2 or 3)");
    uint64_t header_size = 0, prefix = kMagicBytes + 4;
    if (version == 1) {
      header_size = magic.data[8] | (magic.data[9] << 8);
    } else {
      const ByteSpan long_size = all.sub(kMagicBytes + 2, 4, what);
      for (int i = 3; i >= 0; --i) header_size = header_size << 8 | long_size.data[i];
      prefix = kMagicBytes + 6;
    }
    if (header_size > (1u << 20))
      fail(path, ": a .npy header of ", header_size, " bytes is not one numpy writes");
    const ByteSpan header_bytes = all.sub(prefix, header_size, what);
    const std::string header(reinterpret_cast<const char*>(header_bytes.data), header_bytes.size);
    static const std::regex descr(R"('descr'\s*:\s*'([<>|=]?)(f2|f4)')");
    static const std::regex fortran(R"('fortran_order'\s*:\s*(True|False))");
    static const std::regex shape(R"('shape'\s*:\s*\(\s*(\d{1,15})\s*,\s*(\d{1,15})\s*,?\s*\))");
    std::smatch d, f, s;
    if (!std::regex_search(header, d, descr) || d[1] == ">")
      fail(path, ": a .npy of little-endian float16 or float32 was expected, the header says ", header);
    if (!std::regex_search(header, f, fortran) || f[1] != "False")
      fail(path, ": a C-order .npy matrix was expected, the header says ", header);
    if (!std::regex_search(header, s, shape))
      fail(path, ": a 2-D .npy matrix was expected, the header says ", header);
    rows = std::stoll(s[1]);
    cols = std::stoll(s[2]);
    half = d[2] == "f2";
    const uint64_t element = half ? 2 : 4, body = all.size - prefix - header_size;
    // Both counts are below 10^15, so their product in 128 bits cannot wrap.
    const unsigned __int128 expected =
        static_cast<unsigned __int128>(rows) * static_cast<uint64_t>(cols) * element;
    if (expected != body)
      fail(path, ": the header says ", rows, "x", cols, " ", half ? "float16" : "float32", " but ", body,
           " bytes of data follow it");
    data = all.sub(prefix + header_size, body, path);
  }

  // Rows [begin, begin + count) as float32.
  torch::Tensor rows_from(int64_t begin, int64_t count) const {
    const int64_t element = half ? 2 : 4;
    torch::Tensor out = torch::empty({count, cols}, half ? torch::kHalf : torch::kFloat);
    if (count > 0) std::memcpy(out.data_ptr(), data.data + begin * cols * element, count * cols * element);
    return out.to(torch::kFloat);
  }
};

}  // namespace

torch::Tensor read_npy_matrix(const std::string& path) {
  const NpyMatrix m(path);
  return m.rows_from(0, m.rows);
}

torch::Tensor read_npy_rows(const std::string& path, const std::vector<int64_t>& rows) {
  const NpyMatrix m(path);
  torch::Tensor out = torch::empty({static_cast<int64_t>(rows.size()), m.cols});
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i] < 0 || rows[i] >= m.rows)
      fail(path, " has ", m.rows, " rows; row ", rows[i], " was asked for");
    out[static_cast<int64_t>(i)].copy_(m.rows_from(rows[i], 1)[0]);
  }
  return out;
}

int64_t npy_matrix_rows(const std::string& path) { return NpyMatrix(path).rows; }

}  // namespace clipguide
