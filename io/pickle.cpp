#include "io/pickle.h"

#include <algorithm>
#include <cstring>
#include <unordered_map>

#include "core/error.h"

namespace clipguide {

const PickleValue* PickleValue::get(const std::string& key) const {
  if (kind != Kind::Dict) return nullptr;
  for (size_t i = 0; i + 1 < items.size(); i += 2) {
    if (items[i]->kind == Kind::String && items[i]->text == key) return items[i + 1];
  }
  return nullptr;
}

PickleValue* PickleArena::make(PickleValue::Kind kind) {
  nodes_.push_back(std::make_unique<PickleValue>());
  nodes_.back()->kind = kind;
  return nodes_.back().get();
}

namespace {

using Kind = PickleValue::Kind;

struct StorageType {
  const char* name;
  torch::ScalarType dtype;
};

constexpr StorageType kStorageTypes[] = {
    {"torch DoubleStorage", torch::kDouble}, {"torch FloatStorage", torch::kFloat},
    {"torch HalfStorage", torch::kHalf},     {"torch BFloat16Storage", torch::kBFloat16},
    {"torch LongStorage", torch::kLong},     {"torch IntStorage", torch::kInt},
    {"torch ShortStorage", torch::kShort},   {"torch CharStorage", torch::kChar},
    {"torch ByteStorage", torch::kByte},     {"torch BoolStorage", torch::kBool},
    {"torch UntypedStorage", torch::kByte},
};

class Unpickler {
 public:
  Unpickler(ByteSpan bytes, size_t pos, PickleArena& arena, const std::string& name,
            const PickleLimits& limits)
      : bytes_(bytes), pos_(pos), arena_(arena), name_(name), limits_(limits) {}

  PickleValue* run();
  size_t pos() const { return pos_; }

 private:
  [[noreturn]] void error(const std::string& what) const {
    fail(name_, ": pickle ", what, " (at byte ", op_pos_, ")");
  }
  const uint8_t* take(uint64_t n) {
    if (n > bytes_.size - pos_) error(cat("truncated: needs ", n, " more bytes"));
    const uint8_t* p = bytes_.data + pos_;
    pos_ += n;
    return p;
  }
  uint64_t uint_le(int n) {
    const uint8_t* p = take(n);
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
    return v;
  }
  std::string line() {
    const uint8_t* start = bytes_.data + pos_;
    const void* nl = std::memchr(start, '\n', bytes_.size - pos_);
    if (nl == nullptr) error("truncated: a text argument has no newline");
    const size_t n = static_cast<const uint8_t*>(nl) - start;
    pos_ += n + 1;
    return std::string(reinterpret_cast<const char*>(start), n);
  }

  PickleValue* make(Kind k) {
    if (++values_ > limits_.max_values)
      error(cat("makes more than ", limits_.max_values, " values, over the cap"));
    return arena_.make(k);
  }
  PickleValue* make_int(int64_t v) {
    PickleValue* p = make(Kind::Int);
    p->integer = v;
    return p;
  }
  PickleValue* make_text(Kind k, const uint8_t* p, size_t n) {
    PickleValue* v = make(k);
    v->text.assign(reinterpret_cast<const char*>(p), n);
    return v;
  }

  void push(PickleValue* v) {
    if (stack_.size() >= limits_.max_stack)
      error(cat("stack exceeds the cap of ", limits_.max_stack, " entries"));
    stack_.push_back(v);
  }
  PickleValue* pop() {
    if (stack_.size() <= floor()) error("stack underflow");
    PickleValue* v = stack_.back();
    stack_.pop_back();
    return v;
  }
  PickleValue* top() {
    if (stack_.size() <= floor()) error("stack underflow");
    return stack_.back();
  }
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  // Pops everything above the topmost MARK, and the mark.
  std::vector<PickleValue*> pop_mark() {
    if (marks_.empty()) error("needs a MARK but there is none");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PickleValue*> out(stack_.begin() + m, stack_.end());
    stack_.resize(m);
    return out;
  }
  void memo_put(uint64_t key) {
    if (memo_.size() >= limits_.max_memo && memo_.count(key) == 0) {
      error(cat("memo exceeds the cap of ", limits_.max_memo, " entries"));
    }
    memo_[key] = top();
  }
  PickleValue* memo_get(uint64_t key) {
    auto it = memo_.find(key);
    if (it == memo_.end()) error(cat("refers to memo entry ", key, " that was never stored"));
    return it->second;
  }
  int64_t to_int(const PickleValue* v, const char* what) {
    if (v->kind != Kind::Int) error(cat(what, " is not an integer"));
    return v->integer;
  }
  std::vector<int64_t> int_tuple(const PickleValue* v, const char* what) {
    if (v->kind != Kind::Tuple && v->kind != Kind::List) error(cat(what, " is not a tuple"));
    if (v->items.size() > limits_.max_dims)
      error(cat(what, " has more than ", limits_.max_dims, " dimensions"));
    std::vector<int64_t> out;
    for (const PickleValue* x : v->items) {
      const int64_t i = to_int(x, what);
      if (i < 0) error(cat(what, " has a negative entry"));
      out.push_back(i);
    }
    return out;
  }
  PickleValue* make_global(const std::string& module, const std::string& qualname) {
    PickleValue* g = make(Kind::Global);
    g->text = module + " " + qualname;
    return g;
  }
  PickleValue* persistent_load(PickleValue* pid);
  PickleValue* reduce(PickleValue* callable, PickleValue* args);
  PickleValue* rebuild_tensor(const std::vector<PickleValue*>& a);
  void build(PickleValue* target, PickleValue* state);
  void set_items(PickleValue* dict, const std::vector<PickleValue*>& kv);

  ByteSpan bytes_;
  size_t pos_;
  size_t op_pos_ = 0;
  PickleArena& arena_;
  const std::string& name_;
  const PickleLimits& limits_;
  std::vector<PickleValue*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PickleValue*> memo_;
  size_t values_ = 0;
};

PickleValue* Unpickler::persistent_load(PickleValue* pid) {
  // torch.save: ('storage', storage_type, key, location, numel[, view_metadata])
  if (pid->kind != Kind::Tuple || pid->items.size() < 5 || pid->items[0]->kind != Kind::String ||
      pid->items[0]->text != "storage") {
    error("persistent id is not a PyTorch storage reference");
  }
  const PickleValue* type = pid->items[1];
  const PickleValue* key = pid->items[2];
  if (type->kind != Kind::Global) error("storage type is not a class reference");
  if (key->kind != Kind::String) error("storage key is not a string");
  if (pid->items.size() > 5 && pid->items[5]->kind != Kind::None)
    error("legacy storage views are not supported");
  PickleValue* s = make(Kind::Storage);
  bool known = false;
  for (const auto& t : kStorageTypes) {
    if (type->text == t.name) {
      s->dtype = t.dtype;
      known = true;
    }
  }
  if (!known) error(cat("storage type '", type->text, "' is not supported"));
  s->text = key->text;
  s->numel = to_int(pid->items[4], "storage size");
  if (s->numel < 0) error("storage size is negative");
  return s;
}

PickleValue* Unpickler::rebuild_tensor(const std::vector<PickleValue*>& a) {
  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
  if (a.size() < 4) error("tensor rebuild has too few arguments");
  if (a[0]->kind != Kind::Storage) error("tensor rebuild does not refer to a storage");
  PickleValue* t = make(Kind::Tensor);
  t->storage = a[0];
  t->dtype = a[0]->dtype;
  t->offset = to_int(a[1], "tensor storage offset");
  if (t->offset < 0) error("tensor storage offset is negative");
  t->sizes = int_tuple(a[2], "tensor size");
  t->strides = int_tuple(a[3], "tensor stride");
  if (t->sizes.size() != t->strides.size()) error("tensor size and stride have different lengths");
  // The view must lie inside its storage: offset + sum((size_i - 1) * stride_i) < numel.
  bool empty = false;
  uint64_t last = static_cast<uint64_t>(t->offset), numel = 1;
  for (size_t i = 0; i < t->sizes.size(); ++i) {
    if (t->sizes[i] == 0) empty = true;
    if (t->sizes[i] > (int64_t{1} << 40) || t->strides[i] > (int64_t{1} << 40))
      error("tensor size or stride is too large");
    if (t->sizes[i] > 0)
      last += static_cast<uint64_t>(t->sizes[i] - 1) * static_cast<uint64_t>(t->strides[i]);
    numel = std::min<uint64_t>(numel * static_cast<uint64_t>(t->sizes[i]), uint64_t{1} << 62);
  }
  if (!empty && last >= static_cast<uint64_t>(a[0]->numel)) {
    error(cat("tensor view needs element ", last, " but its storage '", a[0]->text, "' holds ", a[0]->numel));
  }
  // Overlapping (stride-0) views could make a tiny file expand into a huge tensor; checkpoints never hold
  // them.
  if (numel > static_cast<uint64_t>(a[0]->numel)) {
    error(cat("tensor view has ", numel, " elements, more than its storage '", a[0]->text, "' holds (",
              a[0]->numel, ")"));
  }
  return t;
}

PickleValue* Unpickler::reduce(PickleValue* callable, PickleValue* args) {
  if (args->kind != Kind::Tuple) error("REDUCE arguments are not a tuple");
  if (callable->kind == Kind::Global) {
    const std::string& g = callable->text;
    if (g == "torch._utils _rebuild_tensor_v2" || g == "torch._utils _rebuild_tensor")
      return rebuild_tensor(args->items);
    if (g == "torch._utils _rebuild_parameter" || g == "torch._utils _rebuild_parameter_with_state") {
      if (args->items.empty() || args->items[0]->kind != Kind::Tensor)
        error("parameter rebuild without a tensor");
      return args->items[0];
    }
    if (g == "collections OrderedDict" || g == "builtins dict") return make(Kind::Dict);
    if (g == "builtins set" || g == "builtins frozenset" || g == "builtins list") {
      PickleValue* l = make(Kind::List);
      if (!args->items.empty() &&
          (args->items[0]->kind == Kind::List || args->items[0]->kind == Kind::Tuple)) {
        l->items = args->items[0]->items;
      }
      return l;
    }
  }
  PickleValue* obj = make(Kind::Object);
  obj->cls = callable;
  obj->args = args;
  return obj;
}

void Unpickler::build(PickleValue* target, PickleValue* state) {
  if (target->kind != Kind::Object)
    return;  // BUILD on tensors (Parameter attributes) and dicts: nothing to keep
  // state may be (dict, slotstate)
  if (state->kind == Kind::Tuple && state->items.size() == 2 && state->items[0]->kind == Kind::Dict) {
    state = state->items[0];
  }
  target->state = state;
}

void Unpickler::set_items(PickleValue* dict, const std::vector<PickleValue*>& kv) {
  if (kv.size() % 2 != 0) error("SETITEMS has an odd number of entries");
  if (dict->kind != Kind::Dict) error("SETITEM(S) on something that is not a dict");
  dict->items.insert(dict->items.end(), kv.begin(), kv.end());
}

PickleValue* Unpickler::run() {
  while (true) {
    op_pos_ = pos_;
    const uint8_t op = *take(1);
    switch (op) {
      case 0x80:
        take(1);
        break;  // PROTO
      case 0x95:
        take(8);
        break;     // FRAME
      case '.': {  // STOP
        PickleValue* v = pop();
        return v;
      }
      case '(':  // MARK
        if (marks_.size() >= limits_.max_stack) error(cat("marks exceed the cap of ", limits_.max_stack));
        marks_.push_back(stack_.size());
        break;
      case '0':
        pop();
        break;  // POP
      case '1':
        pop_mark();
        break;  // POP_MARK
      case '2':
        push(top());
        break;  // DUP
      case 'N':
        push(make(Kind::None));
        break;
      case 0x88:
      case 0x89: {  // NEWTRUE, NEWFALSE
        PickleValue* b = make(Kind::Bool);
        b->boolean = op == 0x88;
        push(b);
        break;
      }
      case 'I':
      case 'L': {  // INT, LONG (text)
        std::string s = line();
        if (!s.empty() && s.back() == 'L') s.pop_back();
        if (op == 'I' && (s == "00" || s == "01")) {
          PickleValue* b = make(Kind::Bool);
          b->boolean = s == "01";
          push(b);
          break;
        }
        try {
          size_t used = 0;
          const long long v = std::stoll(s, &used);
          if (used != s.size()) error("integer text is malformed");
          push(make_int(v));
        } catch (const std::logic_error&) {
          error("integer text is malformed or too large");
        }
        break;
      }
      case 'J':
        push(make_int(static_cast<int32_t>(uint_le(4))));
        break;  // BININT
      case 'K':
        push(make_int(static_cast<int64_t>(uint_le(1))));
        break;  // BININT1
      case 'M':
        push(make_int(static_cast<int64_t>(uint_le(2))));
        break;  // BININT2
      case 0x8a:
      case 0x8b: {  // LONG1, LONG4
        const uint64_t n = op == 0x8a ? uint_le(1) : uint_le(4);
        if (n > 8) error("integer wider than 64 bits");
        const uint8_t* p = take(n);
        uint64_t v = 0;
        for (int i = static_cast<int>(n) - 1; i >= 0; --i) v = (v << 8) | p[i];
        if (n > 0 && n < 8 && (p[n - 1] & 0x80)) v |= ~uint64_t{0} << (8 * n);  // sign-extend
        push(make_int(static_cast<int64_t>(v)));
        break;
      }
      case 'F': {  // FLOAT (text)
        PickleValue* f = make(Kind::Float);
        try {
          f->real = std::stod(line());
        } catch (const std::logic_error&) {
          error("float text is malformed");
        }
        push(f);
        break;
      }
      case 'G': {  // BINFLOAT, big-endian
        const uint8_t* p = take(8);
        uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits = (bits << 8) | p[i];
        PickleValue* f = make(Kind::Float);
        std::memcpy(&f->real, &bits, 8);
        push(f);
        break;
      }
      case 'X': {
        const uint64_t n = uint_le(4);
        push(make_text(Kind::String, take(n), n));
        break;
      }
      case 0x8c: {
        const uint64_t n = uint_le(1);
        push(make_text(Kind::String, take(n), n));
        break;
      }
      case 0x8d: {
        const uint64_t n = uint_le(8);
        push(make_text(Kind::String, take(n), n));
        break;
      }
      case 'T': {
        const uint64_t n = uint_le(4);
        push(make_text(Kind::String, take(n), n));
        break;
      }
      case 'U': {
        const uint64_t n = uint_le(1);
        push(make_text(Kind::String, take(n), n));
        break;
      }
      case 'B': {
        const uint64_t n = uint_le(4);
        push(make_text(Kind::Bytes, take(n), n));
        break;
      }
      case 'C': {
        const uint64_t n = uint_le(1);
        push(make_text(Kind::Bytes, take(n), n));
        break;
      }
      case 0x8e:
      case 0x96: {
        const uint64_t n = uint_le(8);
        push(make_text(Kind::Bytes, take(n), n));
        break;
      }
      case 'S':
      case 'V': {  // STRING, UNICODE (text, kept as written)
        std::string s = line();
        if (op == 'S' && s.size() >= 2 && (s.front() == '\'' || s.front() == '"'))
          s = s.substr(1, s.size() - 2);
        push(make_text(Kind::String, reinterpret_cast<const uint8_t*>(s.data()), s.size()));
        break;
      }
      case ')':
        push(make(Kind::Tuple));
        break;
      case ']':
        push(make(Kind::List));
        break;
      case '}':
        push(make(Kind::Dict));
        break;
      case 0x8f:
        push(make(Kind::List));
        break;  // EMPTY_SET
      case 't':
      case 'l':
      case 0x91: {  // TUPLE, LIST, FROZENSET
        PickleValue* v = make(op == 't' ? Kind::Tuple : Kind::List);
        v->items = pop_mark();
        push(v);
        break;
      }
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1..3
        const size_t n = op - 0x84;
        PickleValue* v = make(Kind::Tuple);
        v->items.resize(n);
        for (size_t i = n; i-- > 0;) v->items[i] = pop();
        push(v);
        break;
      }
      case 'd': {  // DICT
        PickleValue* d = make(Kind::Dict);
        set_items(d, pop_mark());
        push(d);
        break;
      }
      case 'a': {  // APPEND
        PickleValue* v = pop();
        PickleValue* l = top();
        if (l->kind != Kind::List) error("APPEND to something that is not a list");
        l->items.push_back(v);
        break;
      }
      case 'e':
      case 0x90: {  // APPENDS, ADDITEMS
        std::vector<PickleValue*> items = pop_mark();
        PickleValue* l = top();
        if (l->kind != Kind::List) error("APPENDS to something that is not a list");
        l->items.insert(l->items.end(), items.begin(), items.end());
        break;
      }
      case 's': {  // SETITEM
        PickleValue* v = pop();
        PickleValue* k = pop();
        set_items(top(), {k, v});
        break;
      }
      case 'u': {  // SETITEMS
        std::vector<PickleValue*> kv = pop_mark();
        set_items(top(), kv);
        break;
      }
      case 'c': {  // GLOBAL
        std::string module = line();
        std::string qualname = line();
        push(make_global(module, qualname));
        break;
      }
      case 0x93: {  // STACK_GLOBAL
        PickleValue* qualname = pop();
        PickleValue* module = pop();
        if (module->kind != Kind::String || qualname->kind != Kind::String)
          error("STACK_GLOBAL needs two strings");
        push(make_global(module->text, qualname->text));
        break;
      }
      case 'R': {  // REDUCE
        PickleValue* args = pop();
        PickleValue* callable = pop();
        push(reduce(callable, args));
        break;
      }
      case 0x81:
      case 0x92: {              // NEWOBJ, NEWOBJ_EX
        if (op == 0x92) pop();  // kwargs
        PickleValue* args = pop();
        PickleValue* cls = pop();
        PickleValue* obj = make(Kind::Object);
        obj->cls = cls;
        obj->args = args;
        push(obj);
        break;
      }
      case 'i': {  // INST
        std::string module = line();
        std::string qualname = line();
        PickleValue* obj = make(Kind::Object);
        obj->cls = make_global(module, qualname);
        obj->args = make(Kind::Tuple);
        obj->args->items = pop_mark();
        push(obj);
        break;
      }
      case 'o': {  // OBJ
        std::vector<PickleValue*> items = pop_mark();
        if (items.empty()) error("OBJ without a class");
        PickleValue* obj = make(Kind::Object);
        obj->cls = items[0];
        obj->args = make(Kind::Tuple);
        obj->args->items.assign(items.begin() + 1, items.end());
        push(obj);
        break;
      }
      case 'b': {  // BUILD
        PickleValue* state = pop();
        build(top(), state);
        break;
      }
      case 'p': {  // PUT (text)
        try {
          memo_put(std::stoull(line()));
        } catch (const std::logic_error&) {
          error("memo key text is malformed");
        }
        break;
      }
      case 'q':
        memo_put(uint_le(1));
        break;  // BINPUT
      case 'r':
        memo_put(uint_le(4));
        break;  // LONG_BINPUT
      case 0x94:
        memo_put(memo_.size());
        break;     // MEMOIZE
      case 'g': {  // GET (text)
        uint64_t key = 0;
        try {
          key = std::stoull(line());
        } catch (const std::logic_error&) {
          error("memo key text is malformed");
        }
        push(memo_get(key));
        break;
      }
      case 'h':
        push(memo_get(uint_le(1)));
        break;  // BINGET
      case 'j':
        push(memo_get(uint_le(4)));
        break;  // LONG_BINGET
      case 'Q':
        push(persistent_load(pop()));
        break;     // BINPERSID
      case 'P': {  // PERSID (text)
        std::string s = line();
        PickleValue* pid = make(Kind::String);
        pid->text = s;
        push(persistent_load(pid));
        break;
      }
      default: {
        char hex[8];
        std::snprintf(hex, sizeof hex, "0x%02x", op);
        error(cat("has unknown or unsupported opcode ", hex));
      }
    }
  }
}

}  // namespace

PickleValue* parse_pickle(ByteSpan bytes, size_t* pos, PickleArena& arena, const std::string& name,
                          const PickleLimits& limits) {
  Unpickler u(bytes, *pos, arena, name, limits);
  PickleValue* v = u.run();
  *pos = u.pos();
  return v;
}

}  // namespace clipguide
