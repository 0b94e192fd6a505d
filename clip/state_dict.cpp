#include "clip/state_dict.h"

#include <c10/core/CPUAllocator.h>

#include <cstring>
#include <map>
#include <mutex>
#include <vector>

#include "clip/error.h"

namespace clipguide {
namespace {

thread_local AllocationCap* current_cap = nullptr;

// Wraps libtorch's CPU allocator, charging the capped thread's allocations to its cap. Both spellings of allocate()
// and copy_data() are declared so this compiles against libtorch 1.x (const allocate) and 2.x (non-const allocate,
// pure virtual copy_data): whichever the base declares is the one overridden.
class CappedCpuAllocator final : public c10::Allocator {
 public:
  explicit CappedCpuAllocator(c10::Allocator* base) : base_(base) {}
  c10::DataPtr allocate(size_t bytes) const {
    if (current_cap != nullptr) current_cap->charge(bytes);
    return base_->allocate(bytes);
  }
  c10::DataPtr allocate(size_t bytes) { return static_cast<const CappedCpuAllocator*>(this)->allocate(bytes); }
  void copy_data(void* dest, const void* src, std::size_t count) const { std::memcpy(dest, src, count); }
  c10::DeleterFnPtr raw_deleter() const { return base_->raw_deleter(); }

 private:
  c10::Allocator* base_;
};

// Installed once, on first use, and left in place: without a cap on the calling thread it only forwards.
void install_capped_allocator() {
  static std::once_flag once;
  std::call_once(once, [] {
    static CappedCpuAllocator allocator(c10::GetCPUAllocator());
    c10::SetCPUAllocator(&allocator);
  });
}

}  // namespace

AllocationCap::AllocationCap(uint64_t max_bytes, std::string source)
    : max_bytes_(max_bytes), source_(std::move(source)), outer_(current_cap) {
  install_capped_allocator();
  current_cap = this;
}

AllocationCap::~AllocationCap() { current_cap = outer_; }

void AllocationCap::charge(size_t bytes) {
  used_ += bytes;
  if (used_ > max_bytes_) {
    current_cap = outer_;  // the error message and unwinding may allocate
    fail(source_, ": the weights' names and shapes describe a model needing more than ", max_bytes_ >> 20,
         " MiB, far more than the tensors the file holds; the checkpoint is inconsistent or hostile");
  }
  if (outer_ != nullptr) outer_->charge(bytes);
}

uint64_t model_memory_budget(const TensorMap& sd) {
  uint64_t elements = 0;
  for (const auto& kv : sd) elements += static_cast<uint64_t>(kv.second.numel());
  return 2 * sizeof(float) * elements + (uint64_t{64} << 20);
}

bool is_batchnorm_counter(const std::string& key) {
  const std::string counter = ".num_batches_tracked";
  return key.size() > counter.size() && key.compare(key.size() - counter.size(), counter.size(), counter) == 0;
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
  fail(how.source, ": weights do not fit ", how.what, list("missing", missing), list("mis-shaped", mismatched),
       list("unexpected", unexpected));
}

}  // namespace clipguide
