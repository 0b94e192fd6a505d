// NumPy's .npy format (v1.0) for C-order float matrices: what `embed --format npy` writes and what the search
// index's partitions (clip-retrieval's img_emb_N.npy, float16) hold. Ref: numpy/lib/format.py.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace clipguide {

// The bytes of a .npy file holding `t` (any shape) as little-endian float32 or float16, as `dtype` says.
std::string npy_bytes(const torch::Tensor& t, torch::ScalarType dtype = torch::kFloat);

// A float32 or float16 C-order matrix [rows, cols] from a .npy file, returned as float32. Anything else
// (another dtype, Fortran order, a header or size that does not add up) is an Error naming the file.
torch::Tensor read_npy_matrix(const std::string& path);
// The given rows of such a matrix, [rows.size(), cols] float32, read through a memory map.
torch::Tensor read_npy_rows(const std::string& path, const std::vector<int64_t>& rows);
// Its row count, from the header (checked against the file's size).
int64_t npy_matrix_rows(const std::string& path);

}  // namespace clipguide
