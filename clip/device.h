// --device cpu|cuda|cuda:N|auto, shared by every command.
#pragma once

#include <torch/types.h>

#include <string>

namespace clipguide {

// "auto" picks CUDA when this build and machine have it; asking for CUDA without it is an Error.
torch::Device parse_device(const std::string& spec);

}  // namespace clipguide
