#include "guidance/cuda_graph.h"

#include "core/error.h"

#ifdef CLIPGUIDE_CUDA
#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace clipguide {

struct CutoutLossGraph::Captured {
#ifdef CLIPGUIDE_CUDA
  at::cuda::CUDAGraph graph;
#endif
};

CutoutLossGraph::CutoutLossGraph(CutoutLossFn fn, const torch::Tensor& cutouts, int64_t targets, int64_t dim)
    : fn_(std::move(fn)) {
#ifndef CLIPGUIDE_CUDA
  (void)cutouts, (void)targets, (void)dim;
  fail("CUDA graphs need a build with CUDA (scripts/setup --torch pip); this one was built without it");
#else
  if (!cutouts.is_cuda())
    fail("CUDA graphs capture CUDA work; the guide's images are on ", cutouts.device().str());
  const auto options = cutouts.options().dtype(torch::kFloat);
  cutouts_ =
      torch::zeros(cutouts.sizes(), options).requires_grad_(true);  // the leaf the gradient is taken for
  targets_ = torch::zeros({targets, dim}, options);
  weights_ = torch::zeros({targets}, options);
  stops_ = torch::zeros({targets}, options);
  const c10::cuda::CUDAGuard on_device(cutouts.device());
  // Warm-up on a side stream first: cuBLAS handles, workspaces and the allocator's blocks are made outside
  // the capture, which may not allocate them. Then capture on the same stream, and let the caller's stream
  // wait for it.
  const c10::cuda::CUDAStream caller = c10::cuda::getCurrentCUDAStream();
  const c10::cuda::CUDAStream side = c10::cuda::getStreamFromPool();
  at::cuda::CUDAEvent inputs_ready;
  inputs_ready.record(caller);
  inputs_ready.block(side);
  captured_ = std::make_unique<Captured>();
  {
    const c10::cuda::CUDAStreamGuard on_side(side);
    for (int i = 0; i < 3; ++i) body();
    captured_->graph.capture_begin();
    out_ = body();
    captured_->graph.capture_end();
  }
  at::cuda::CUDAEvent captured;
  captured.record(side);
  captured.block(caller);
#endif
}

CutoutLossGraph::~CutoutLossGraph() = default;

GraphedLoss CutoutLossGraph::body() {
  const torch::AutoGradMode enable(true);
  const torch::Tensor terms = fn_(cutouts_, targets_, weights_, stops_);  // [T]
  const torch::Tensor grad = torch::autograd::grad({terms.sum()}, {cutouts_})[0];
  return {terms.detach(), grad};
}

void CutoutLossGraph::fill(const torch::Tensor& cutouts, const torch::Tensor& targets,
                           const torch::Tensor& weights, const torch::Tensor& stops) {
  TORCH_CHECK(cutouts.sizes() == cutouts_.sizes() && targets.sizes() == targets_.sizes(),
              "a captured graph runs on the shapes it was captured for");
  const torch::NoGradGuard no_grad;
  cutouts_.copy_(cutouts.detach(), true);
  targets_.copy_(targets, true);
  weights_.copy_(weights, true);
  stops_.copy_(stops, true);
}

GraphedLoss CutoutLossGraph::run(const torch::Tensor& cutouts, const torch::Tensor& targets,
                                 const torch::Tensor& weights, const torch::Tensor& stops) {
  fill(cutouts, targets, weights, stops);
#ifdef CLIPGUIDE_CUDA
  captured_->graph.replay();
#endif
  return {out_.terms.clone(), out_.grad.clone()};
}

GraphedLoss CutoutLossGraph::run_eager(const torch::Tensor& cutouts, const torch::Tensor& targets,
                                       const torch::Tensor& weights, const torch::Tensor& stops) {
  fill(cutouts, targets, weights, stops);
  return body();
}

}  // namespace clipguide
