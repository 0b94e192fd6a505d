// One linear layer for every model's [B, L, D] activations (CLIP's towers, the UNets' attention blocks).
#pragma once

#include <torch/torch.h>

namespace clipguide {

// torch::linear for [B, L, D] activations. Where libtorch's BLAS is OpenBLAS
// held to one thread (set_cpu_threads does that; Debian's libtorch), frozen fp32 layers on the CPU run as a
// 1x1 convolution over a channels-last view of the same memory: oneDNN's kernels, on all of libtorch's
// threads, instead of a one-thread GEMM (bench/guide's step, 2 threads: 7.9-8.6 s against 9.6-10.0 s through
// torch::linear). Where the BLAS threads itself (MKL, in the PyPI wheel's libtorch) torch::linear is the
// faster one (7.3-7.4 s against 8.8-9.2 s as convolutions). Same math; only the summation order differs.
torch::Tensor dense(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias);

}  // namespace clipguide
