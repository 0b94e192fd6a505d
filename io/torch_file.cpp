#include "io/torch_file.h"

#include <cstring>
#include <functional>
#include <set>
#include <unordered_map>

#include "core/error.h"
#include "io/pickle.h"
#include "io/zip.h"

namespace clipguide {
namespace {

using Kind = PickleValue::Kind;
constexpr int kMaxDepth = 64;

// Copies storages out of the file once each, then cuts tensor views out of them.
class Materializer {
 public:
  Materializer(std::string name, std::function<ByteSpan(const PickleValue&)> storage_bytes)
      : name_(std::move(name)), storage_bytes_(std::move(storage_bytes)) {}

  torch::Tensor tensor(const PickleValue& t) {
    const PickleValue& s = *t.storage;
    auto it = storages_.find(&s);
    if (it == storages_.end()) {
      const ByteSpan bytes = storage_bytes_(s);
      const uint64_t need = static_cast<uint64_t>(s.numel) * c10::elementSize(s.dtype);
      if (bytes.size < need) {
        fail(name_, ": storage '", s.text, "' holds ", bytes.size, " bytes but is declared with ", s.numel,
             " elements (", need, " bytes)");
      }
      torch::Tensor storage = torch::empty({s.numel}, torch::TensorOptions().dtype(s.dtype));
      if (need > 0) std::memcpy(storage.data_ptr(), bytes.data, need);
      it = storages_.emplace(&s, storage).first;
    }
    return it->second.as_strided(t.sizes, t.strides, t.offset).contiguous();
  }

 private:
  std::string name_;
  std::function<ByteSpan(const PickleValue&)> storage_bytes_;
  std::unordered_map<const PickleValue*, torch::Tensor> storages_;
};

// Walks dicts and module objects, naming tensors by their dotted path.
void collect(const PickleValue* v, const std::string& prefix, Materializer& m, TensorMap& out,
             std::set<const PickleValue*>& on_path, int depth, const std::string& name) {
  if (depth > kMaxDepth) fail(name, ": nesting deeper than ", kMaxDepth, " levels at '", prefix, "'");
  if (v->kind == Kind::Tensor) {
    if (!out.emplace(prefix, m.tensor(*v)).second) fail(name, ": tensor '", prefix, "' appears twice");
    return;
  }
  const PickleValue* dict = v->kind == Kind::Dict ? v : (v->kind == Kind::Object ? v->state : nullptr);
  if (dict == nullptr || dict->kind != Kind::Dict) return;
  if (!on_path.insert(dict).second) return;  // a cycle: already being walked
  for (size_t i = 0; i + 1 < dict->items.size(); i += 2) {
    if (dict->items[i]->kind != Kind::String) continue;
    const std::string key = prefix.empty() ? dict->items[i]->text : prefix + "." + dict->items[i]->text;
    collect(dict->items[i + 1], key, m, out, on_path, depth + 1, name);
  }
  on_path.erase(dict);
}

TensorMap collect_state_dict(const PickleValue* root, Materializer& m, const std::string& name) {
  // Lightning and many training scripts nest the weights: {"state_dict": {...}, "optimizer_states": ...}.
  if (const PickleValue* nested = root->get("state_dict"); nested != nullptr && nested->kind == Kind::Dict)
    root = nested;
  if (root->kind != Kind::Dict && root->kind != Kind::Object) {
    fail(name, ": the pickled object is not a state dict or a module (found kind ",
         static_cast<int>(root->kind), ")");
  }
  TensorMap out;
  std::set<const PickleValue*> on_path;
  collect(root, "", m, out, on_path, 0, name);
  if (out.empty()) fail(name, ": the checkpoint holds no tensors");
  return out;
}

}  // namespace

TorchFileContents read_torch_zip(ByteSpan bytes, const std::string& name) {
  ZipArchive zip(bytes, name);
  std::string prefix;
  for (const std::string& entry : zip.names()) {
    const size_t slash = entry.find('/');
    if (slash != std::string::npos && entry.compare(slash, std::string::npos, "/data.pkl") == 0) {
      prefix = entry.substr(0, slash);
      break;
    }
  }
  if (prefix.empty()) fail(name, ": zip archive has no '<name>/data.pkl' record; it is not a PyTorch file");
  if (zip.contains(prefix + "/byteorder")) {
    const ByteSpan order = zip.read(prefix + "/byteorder");
    if (std::string(reinterpret_cast<const char*>(order.data), order.size) != "little") {
      fail(name, ": big-endian PyTorch archives are not supported");
    }
  }
  TorchFileContents out;
  for (const std::string& entry : zip.names()) {
    if (entry.rfind(prefix + "/code/", 0) == 0) out.torchscript = true;
  }
  PickleArena arena;
  const ByteSpan pkl = zip.read(prefix + "/data.pkl");
  size_t pos = 0;
  const PickleValue* root = parse_pickle(pkl, &pos, arena, name + " (data.pkl)");
  Materializer m(name, [&](const PickleValue& s) { return zip.read(prefix + "/data/" + s.text); });
  out.tensors = collect_state_dict(root, m, name);
  return out;
}

// The legacy stream opens with the pickled magic number 0x1950a86a20f9469cfc6c (protocol 2, LONG1 of 10
// bytes).
constexpr uint8_t kLegacyMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                    0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, '.'};

bool looks_like_legacy_torch(ByteSpan bytes) {
  return bytes.size >= sizeof kLegacyMagic && std::memcmp(bytes.data, kLegacyMagic, sizeof kLegacyMagic) == 0;
}

TorchFileContents read_torch_legacy(ByteSpan bytes, const std::string& name) {
  if (!looks_like_legacy_torch(bytes)) fail(name, ": not a legacy torch.save stream (bad magic number)");
  PickleArena arena;
  size_t pos = sizeof kLegacyMagic;
  const PickleValue* protocol = parse_pickle(bytes, &pos, arena, name);
  if (protocol->kind != Kind::Int || protocol->integer != 1001) {
    fail(name, ": legacy torch.save protocol version is not 1001");
  }
  parse_pickle(bytes, &pos, arena, name);  // sys_info
  const PickleValue* root = parse_pickle(bytes, &pos, arena, name);
  const PickleValue* keys = parse_pickle(bytes, &pos, arena, name);
  if (keys->kind != Kind::List) fail(name, ": legacy storage key list is missing");
  // Element sizes come from the storage references in the object.
  std::unordered_map<std::string, const PickleValue*> declared;
  for (const auto& s : arena.nodes()) {
    if (s->kind == Kind::Storage) declared.emplace(s->text, s.get());
  }
  // Storage records follow in key order: int64 element count, then the raw elements.
  std::unordered_map<std::string, ByteSpan> records;
  for (const PickleValue* key : keys->items) {
    if (key->kind != Kind::String) fail(name, ": legacy storage key is not a string");
    auto it = declared.find(key->text);
    if (it == declared.end()) fail(name, ": legacy storage '", key->text, "' is listed but never used");
    const ByteSpan head = bytes.sub(pos, 8, name + ": legacy storage '" + key->text + "' header");
    uint64_t numel = 0;
    for (int i = 7; i >= 0; --i) numel = (numel << 8) | head.data[i];
    const uint64_t item = c10::elementSize(it->second->dtype);
    if (numel > (uint64_t{1} << 56) / item)
      fail(name, ": legacy storage '", key->text, "' is impossibly large");
    records[key->text] = bytes.sub(pos + 8, numel * item, name + ": legacy storage '" + key->text + "'");
    pos += 8 + numel * item;
  }
  Materializer m(name, [&](const PickleValue& s) {
    auto it = records.find(s.text);
    if (it == records.end()) fail(name, ": legacy storage '", s.text, "' is missing");
    return it->second;
  });
  TorchFileContents out;
  out.tensors = collect_state_dict(root, m, name);
  return out;
}

}  // namespace clipguide
