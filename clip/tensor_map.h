// Named tensors as a checkpoint holds them: dotted names, original dtypes, sorted by name.
#pragma once

#include <torch/types.h>

#include <map>
#include <string>

namespace clipguide {

using TensorMap = std::map<std::string, torch::Tensor>;

}  // namespace clipguide
