// A guidance step's heavy half as one CUDA graph: cutouts -> CLIP image features -> loss terms -> their
// gradient with respect to the cutouts, captured once for fixed shapes and replayed every step. Replay
// launches the few thousand kernels of a CLIP forward and backward as one, which is where eager guidance on a
// GPU loses its time. Ref: PyTorch's "CUDA Graphs" notes (whole-network capture with backward; warm-up on a
// side stream first).
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <utility>

namespace clipguide {

// (cutouts [N, 3, S, S], targets [T, E], weights [T], stops [T]) -> loss terms [T], differentiable in the
// cutouts. Everything it does must be CUDA work with no host synchronisation (no .item(), no CPU tensors).
using CutoutLossFn = std::function<torch::Tensor(const torch::Tensor& cutouts, const torch::Tensor& targets,
                                                 const torch::Tensor& weights, const torch::Tensor& stops)>;

struct GraphedLoss {
  torch::Tensor terms;  // [T], the loss terms at these cutouts
  torch::Tensor grad;   // [N, 3, S, S], d sum(terms) / d cutouts
};

class CutoutLossGraph {
 public:
  // Captures `fn` for cutouts shaped like `cutouts` and T targets of E dimensions, on the cutouts' CUDA
  // device. An Error where this build has no CUDA.
  CutoutLossGraph(CutoutLossFn fn, const torch::Tensor& cutouts, int64_t targets, int64_t dim);
  ~CutoutLossGraph();
  CutoutLossGraph(const CutoutLossGraph&) = delete;
  CutoutLossGraph& operator=(const CutoutLossGraph&) = delete;

  // Copies the inputs into the graph's buffers and replays it; the results are copies, valid after the next
  // run.
  GraphedLoss run(const torch::Tensor& cutouts, const torch::Tensor& targets, const torch::Tensor& weights,
                  const torch::Tensor& stops);
  // The same computation without the graph (eager, on the same buffers): what replay must reproduce.
  GraphedLoss run_eager(const torch::Tensor& cutouts, const torch::Tensor& targets,
                        const torch::Tensor& weights, const torch::Tensor& stops);

 private:
  GraphedLoss body();  // the captured work, on the static buffers
  void fill(const torch::Tensor& cutouts, const torch::Tensor& targets, const torch::Tensor& weights,
            const torch::Tensor& stops);

  struct Captured;  // the CUDA graph, where the build has CUDA
  CutoutLossFn fn_;
  torch::Tensor cutouts_, targets_, weights_, stops_;  // static inputs
  GraphedLoss out_;                                    // static outputs
  std::unique_ptr<Captured> captured_;
};

}  // namespace clipguide
