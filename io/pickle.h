// A bounded, allow-listed unpickler (Ref: CPython Lib/pickle.py and pickletools.py for the opcodes; PyTorch
// torch/_weights_only_unpickler.py for the idea). It never imports or calls anything: every GLOBAL becomes an
// inert node, REDUCE/NEWOBJ/BUILD on a class we do not know become opaque Object nodes, and only PyTorch's
// tensor rebuild calls and OrderedDict are given meaning. Tensors come out as lazy views (storage key,
// offset, sizes, strides) that the caller resolves against the archive's storage records.
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/file_io.h"

namespace clipguide {

struct PickleValue {
  enum class Kind {
    None,
    Bool,
    Int,
    Float,
    String,
    Bytes,
    Tuple,
    List,
    Dict,
    Global,
    Object,
    Storage,
    Tensor
  };
  Kind kind = Kind::None;
  bool boolean = false;
  int64_t integer = 0;
  double real = 0.0;
  std::string text;                 // String, Bytes; Global: "module name"; Storage: its key
  std::vector<PickleValue*> items;  // Tuple, List; Dict: key, value, key, value, ...
  PickleValue* cls = nullptr;       // Object: the Global it was built from
  PickleValue* args = nullptr;      // Object: constructor arguments
  PickleValue* state = nullptr;     // Object: what BUILD set (a Dict for modules)
  // Storage
  torch::ScalarType dtype = torch::kFloat;
  int64_t numel = 0;
  // Tensor: a view of `storage`
  PickleValue* storage = nullptr;
  int64_t offset = 0;
  std::vector<int64_t> sizes, strides;

  // Dict lookup by string key; nullptr if absent or not a Dict.
  const PickleValue* get(const std::string& key) const;
};

struct PickleLimits {
  size_t max_stack = 1u << 20;
  size_t max_memo = 1u << 22;
  // Values made by one pickle (about 200 bytes each): a checkpoint's data.pkl makes tens of thousands, so a
  // stream of tiny opcodes cannot turn a file into gigabytes of nodes.
  size_t max_values = 1u << 20;
  size_t max_dims = 16;
};

// Owns every node of one or more parsed pickles.
class PickleArena {
 public:
  PickleValue* make(PickleValue::Kind kind);
  const std::vector<std::unique_ptr<PickleValue>>& nodes() const { return nodes_; }

 private:
  std::vector<std::unique_ptr<PickleValue>> nodes_;
};

// Parses one pickle starting at `*pos` in `bytes`, advancing `*pos` past its STOP opcode.
// `name` names the source in errors.
PickleValue* parse_pickle(ByteSpan bytes, size_t* pos, PickleArena& arena, const std::string& name,
                          const PickleLimits& limits = {});

}  // namespace clipguide
