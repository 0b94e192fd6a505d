#include "generators/optimizer.h"

#include <cmath>

#include "core/error.h"

namespace clipguide {

void OptimizerOptions::validate() const {
  if (kind != "adam" && kind != "adamw" && kind != "sgd")
    fail("optimizer ", kind, " is not one of adam, adamw, sgd");
  if (!(lr > 0) || !std::isfinite(lr)) fail("lr must be a positive number (got ", lr, ")");
  if (!(lr_decay > 0 && lr_decay <= 1)) fail("lr_decay must be in (0, 1] (got ", lr_decay, ")");
  if (!(weight_decay >= 0) || !std::isfinite(weight_decay)) fail("weight_decay must be zero or positive");
}

Optimizer::Optimizer(std::vector<torch::Tensor> params, OptimizerOptions options)
    : params_(std::move(params)), options_(std::move(options)) {
  options_.validate();
  for (const auto& p : params_) {
    m_.push_back(torch::zeros_like(p, torch::MemoryFormat::Preserve).detach());
    v_.push_back(torch::zeros_like(p, torch::MemoryFormat::Preserve).detach());
  }
}

double Optimizer::current_lr() const {
  return options_.lr * std::pow(options_.lr_decay, static_cast<double>(steps_));
}

void Optimizer::step() {
  torch::NoGradGuard no_grad;
  const double lr = current_lr();
  ++steps_;
  const double t = static_cast<double>(steps_);
  for (size_t i = 0; i < params_.size(); ++i) {
    torch::Tensor& p = params_[i];
    if (!p.grad().defined()) continue;
    torch::Tensor g = p.grad();
    if (options_.kind == "sgd") {
      if (options_.weight_decay != 0) g = g + options_.weight_decay * p;
      if (options_.momentum != 0) {
        if (steps_ == 1)
          m_[i].copy_(g);
        else
          m_[i].mul_(options_.momentum).add_(g);
        g = m_[i];
      }
      p.add_(g, -lr);
      continue;
    }
    if (options_.kind == "adamw") p.mul_(1 - lr * options_.weight_decay);
    m_[i].mul_(options_.beta1).add_(g, 1 - options_.beta1);
    v_[i].mul_(options_.beta2).addcmul_(g, g, 1 - options_.beta2);
    const double bias1 = 1 - std::pow(options_.beta1, t), bias2 = 1 - std::pow(options_.beta2, t);
    const torch::Tensor denom = (v_[i].sqrt() / std::sqrt(bias2)).add_(options_.eps);
    p.addcdiv_(m_[i], denom, -lr / bias1);
  }
}

void Optimizer::zero_grad() {
  for (auto& p : params_) {
    if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
  }
}

TensorMap Optimizer::state() const {
  TensorMap out{{"optimizer.steps", torch::tensor({steps_})}};
  for (size_t i = 0; i < params_.size(); ++i) {
    out[cat("optimizer.m.", i)] = m_[i].to(torch::kCPU).clone();
    out[cat("optimizer.v.", i)] = v_[i].to(torch::kCPU).clone();
  }
  return out;
}

void Optimizer::load_state(const TensorMap& state) {
  auto get = [&](const std::string& key) -> const torch::Tensor& {
    return require(state, key, "resume state");
  };
  torch::NoGradGuard no_grad;
  steps_ = get("optimizer.steps").item<int64_t>();
  for (size_t i = 0; i < params_.size(); ++i) {
    const torch::Tensor& m = get(cat("optimizer.m.", i));
    const torch::Tensor& v = get(cat("optimizer.v.", i));
    if (m.sizes() != m_[i].sizes() || v.sizes() != v_[i].sizes())
      fail("resume state's optimizer does not fit the generator");
    m_[i].copy_(m);
    v_[i].copy_(v);
  }
}

}  // namespace clipguide
