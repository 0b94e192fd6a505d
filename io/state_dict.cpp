#include "io/state_dict.h"

#include <map>
#include <vector>

#include "core/error.h"

namespace clipguide {

void check_model_size(double elements, const TensorMap& sd, const std::string& source) {
  const uint64_t budget = model_memory_budget(sd);
  if (!(elements * sizeof(float) <= static_cast<double>(budget))) {
    fail(source, ": the weights' names and shapes describe a model needing more than ", budget >> 20,
         " MiB, far more than the tensors the file holds; the checkpoint is inconsistent or hostile");
  }
}

uint64_t model_memory_budget(const TensorMap& sd) {
  uint64_t elements = 0;
  for (const auto& kv : sd) elements += static_cast<uint64_t>(kv.second.numel());
  return 2 * sizeof(float) * elements + (uint64_t{64} << 20);
}

bool is_batchnorm_counter(const std::string& key) {
  const std::string counter = ".num_batches_tracked";
  return key.size() > counter.size() &&
         key.compare(key.size() - counter.size(), counter.size(), counter) == 0;
}

void load_strict(torch::nn::Module& module, const TensorMap& sd, const StrictLoad& how) {
  std::vector<std::string> missing, mismatched, unexpected;
  std::map<std::string, torch::Tensor> targets;
  for (const auto& p : module.named_parameters(true)) targets[p.key()] = p.value();
  for (const auto& b : module.named_buffers(true)) {
    if (how.derived_buffers.count(b.key()) == 0) targets[b.key()] = b.value();
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, target] : targets) {
    auto it = sd.find(name);
    if (it == sd.end()) {
      if (!how.is_known_extra(name)) missing.push_back(name);
      continue;
    }
    if (it->second.sizes() != target.sizes()) {
      mismatched.push_back(cat(name, " (checkpoint ", it->second.sizes(), ", model ", target.sizes(), ")"));
      continue;
    }
    target.copy_(it->second);  // converts the dtype in place, without a temporary copy
  }
  for (const auto& kv : sd) {
    if (targets.count(kv.first) == 0 && !how.is_known_extra(kv.first)) unexpected.push_back(kv.first);
  }
  if (missing.empty() && mismatched.empty() && unexpected.empty()) {
    for (auto& p : module.parameters()) p.requires_grad_(false);
    return;
  }
  auto list = [](const char* what, const std::vector<std::string>& names) -> SafeText {
    if (names.empty()) return {};
    std::string s = cat("; ", names.size(), " ", what, ": ");
    for (size_t i = 0; i < names.size() && i < 8; ++i) s += message(i ? ", " : "", names[i]);
    if (names.size() > 8) s += cat(", ... (+", names.size() - 8, " more)");
    return {s};
  };
  fail(how.source, ": weights do not fit ", how.what, list("missing", missing),
       list("mis-shaped", mismatched), list("unexpected", unexpected));
}

}  // namespace clipguide
