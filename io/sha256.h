// SHA-256 (FIPS 180-4), used to recognise known checkpoint files and to key caches.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace clipguide {

// Lower-case hex digest of `size` bytes.
std::string sha256_hex(const uint8_t* data, size_t size);
// Lower-case hex digest of a whole file (memory-mapped).
std::string sha256_file(const std::string& path);

}  // namespace clipguide
