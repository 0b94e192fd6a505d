#include "generators/generator.h"

namespace clipguide {

namespace {

// Ref: Crowson's VQGAN+CLIP notebook, ClampWithGrad: the gradient passes where following it moves an
// out-of-range value back toward the range, so a saturated pixel is not stuck.
class ClampWithGrad : public torch::autograd::Function<ClampWithGrad> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x) {
    ctx->save_for_backward({x});
    return x.clamp(0, 1);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::Tensor x = ctx->get_saved_variables()[0];
    const torch::Tensor& g = grads[0];
    return {g * (g * (x - x.clamp(0, 1)) >= 0)};
  }
};

}  // namespace

torch::Tensor clamp_with_grad(const torch::Tensor& x) { return ClampWithGrad::apply(x); }

}  // namespace clipguide
