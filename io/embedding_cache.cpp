#include "io/embedding_cache.h"

#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <iostream>

#include "core/error.h"
#include "core/file_io.h"
#include "io/sha256.h"

namespace clipguide {
namespace fs = std::filesystem;

namespace {

// An entry: magic, int64 dim, dim float32, then the SHA-256 (hex) of everything before it, so a torn or
// bit-flipped entry is detected rather than used.
constexpr char kMagic[8] = {'C', 'G', 'E', 'M', 'B', '0', '0', '2'};
constexpr size_t kDigestSize = 64;

std::string hash_text(const std::string& s) {
  return sha256_hex(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

}  // namespace

EmbeddingCache::EmbeddingCache(std::string dir, const std::string& model_key)
    : dir_((fs::path(dir) / model_key.substr(0, 32)).string()) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) fail(dir, ": cannot create the cache folder: ", ec.message());
}

std::string EmbeddingCache::entry_path(const std::string& sha) const {
  return (fs::path(dir_) / (sha + ".emb")).string();
}

std::optional<torch::Tensor> EmbeddingCache::lookup(const std::string& sha, int64_t dim) const {
  const std::string path = entry_path(sha);
  std::error_code ec;
  if (!fs::exists(path, ec)) return std::nullopt;
  const size_t body = sizeof kMagic + 8 + static_cast<size_t>(dim) * sizeof(float);
  try {
    const std::string bytes = read_small_file(path, body + kDigestSize);
    int64_t stored_dim = 0;
    if (bytes.size() == body + kDigestSize && std::memcmp(bytes.data(), kMagic, sizeof kMagic) == 0 &&
        bytes.compare(body, kDigestSize, hash_text(bytes.substr(0, body))) == 0) {
      std::memcpy(&stored_dim, bytes.data() + sizeof kMagic, 8);
    }
    if (stored_dim == dim) {
      torch::Tensor t = torch::empty({dim}, torch::kFloat);
      std::memcpy(t.data_ptr<float>(), bytes.data() + sizeof kMagic + 8, dim * sizeof(float));
      if (torch::isfinite(t).all().item<bool>()) return t;
    }
  } catch (const Error&) {
  }
  warn("clipguide: cache entry ", path, " is corrupt; re-encoding the image");
  return std::nullopt;
}

void EmbeddingCache::store(const std::string& sha, const torch::Tensor& embedding) const {
  const torch::Tensor t = embedding.detach().to(torch::kCPU, torch::kFloat).contiguous();
  const int64_t dim = t.numel();
  std::string bytes(kMagic, sizeof kMagic);
  bytes.append(reinterpret_cast<const char*>(&dim), 8);
  bytes.append(reinterpret_cast<const char*>(t.data_ptr<float>()), dim * sizeof(float));
  bytes += hash_text(bytes);
  write_file_atomic(entry_path(sha), bytes);
}

std::string model_cache_key(const std::string& cache_dir, const std::string& weights_path,
                            const std::string& dtype) {
  struct stat st {};
  if (::stat(weights_path.c_str(), &st) != 0) fail(weights_path, ": cannot stat");
  const std::string identity = cat(fs::absolute(weights_path).string(), "|", st.st_size, "|",
                                   st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec);
  const fs::path memo = fs::path(cache_dir) / "models" / (hash_text(identity) + ".sha256");
  std::error_code ec;
  std::string sha;
  if (fs::exists(memo, ec)) {
    try {
      sha = read_small_file(memo.string(), 64);
    } catch (const Error&) {
    }
  }
  if (sha.size() != 64 || sha.find_first_not_of("0123456789abcdef") != std::string::npos) {
    sha = sha256_file(weights_path);
    fs::create_directories(memo.parent_path(), ec);
    write_file_atomic(memo.string(), sha);
  }
  return hash_text(sha + "|" + dtype);
}

}  // namespace clipguide
