// The safe readers for PyTorch files: real fixture archives, hand-made valid files, and broken ones.
#include "archive_builders.h"
#include "core/error.h"
#include "fixtures.h"
#include "io/checkpoint.h"
#include "io/pickle.h"
#include "io/safetensors.h"
#include "io/zip.h"

namespace clipguide::test {
namespace {

// Expects `fn` to throw clipguide::Error whose message contains every fragment.
template <typename Fn>
void expect_error(Fn fn, const std::vector<std::string>& fragments) {
  try {
    fn();
    ADD_FAILURE() << "expected an error containing '" << fragments.front() << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "error is not one line: " << msg;
    for (const auto& f : fragments)
      EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
  }
}

void expect_same_tensors(const TensorMap& a, const TensorMap& b, bool b_may_have_more) {
  for (const auto& [name, t] : a) {
    ASSERT_TRUE(b.count(name)) << name;
    EXPECT_TRUE(torch::equal(t, b.at(name))) << name;
  }
  if (!b_may_have_more) EXPECT_EQ(a.size(), b.size());
}

TEST(TorchFiles, PlainStateDictMatchesSafetensors) {
  const auto manifest = read_json(fixtures() / "diffusion" / "diffusion-manifest.json");
  for (const auto& [name, m] : manifest["models"].items()) {
    const Checkpoint pt = read_checkpoint((fixtures() / "diffusion" / m["pt"].get<std::string>()).string());
    EXPECT_EQ(pt.format, "torch zip");
    expect_same_tensors(
        read_safetensors((fixtures() / "diffusion" / m["safetensors"].get<std::string>()).string()).tensors,
        pt.tensors, false);
  }
}

TEST(TorchFiles, LightningCheckpointYieldsItsNestedStateDict) {
  // vqgan-tiny.ckpt nests state_dict beside optimizer state and a callback object of an unknown class.
  const Checkpoint ckpt = read_checkpoint((fixtures() / "vqgan" / "vqgan-tiny.ckpt").string());
  const auto st = read_safetensors((fixtures() / "vqgan" / "vqgan-tiny.safetensors").string()).tensors;
  expect_same_tensors(st, ckpt.tensors, true);
  for (const auto& kv : ckpt.tensors)
    EXPECT_EQ(kv.first.rfind("optimizer", 0), std::string::npos) << kv.first;
}

TEST(TorchFiles, TorchScriptArchiveGivesDottedNames) {
  const Checkpoint jit = read_checkpoint((fixtures() / "clip" / "vit-tiny.openai.jit.pt").string());
  EXPECT_EQ(jit.format, "TorchScript archive");
  const auto st = read_safetensors((fixtures() / "clip" / "vit-tiny.openai.safetensors").string()).tensors;
  expect_same_tensors(st, jit.tensors, true);
}

std::string small_state_dict_pickle(int64_t numel, const std::vector<int64_t>& sizes,
                                    const std::vector<int64_t>& strides, bool legacy = false) {
  PickleBuilder p;
  p.global("collections", "OrderedDict")
      .op(")R")
      .op("(")
      .str("w")
      .tensor("0", numel, 0, sizes, strides, legacy)
      .op("u");
  return p.done();
}

TEST(TorchFiles, HandMadeZipRoundTrips) {
  TempDir dir;
  const std::vector<float> values = {1, 2, 3, 4, 5, 6};
  write_bytes(dir / "ok.pt", build_zip({{"archive/data.pkl", small_state_dict_pickle(6, {2, 3}, {3, 1})},
                                        {"archive/data/0", floats(values)}}));
  const Checkpoint c = read_checkpoint((dir / "ok.pt").string());
  ASSERT_EQ(c.tensors.size(), 1u);
  EXPECT_TRUE(torch::equal(c.tensors.at("w"), torch::tensor(values).view({2, 3})));
  // A transposed view of the same storage.
  write_bytes(dir / "t.pt", build_zip({{"archive/data.pkl", small_state_dict_pickle(6, {3, 2}, {1, 3})},
                                       {"archive/data/0", floats(values)}}));
  EXPECT_TRUE(torch::equal(read_checkpoint((dir / "t.pt").string()).tensors.at("w"),
                           torch::tensor(values).view({2, 3}).t()));
}

TEST(TorchFiles, LegacyTorchSaveStream) {
  TempDir dir;
  const std::string magic = std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15);
  const std::string protocol = PickleBuilder().op("M").op(le_bytes(1001, 2)).done();
  const std::string sys_info = PickleBuilder().op("}").done();
  const std::string keys = PickleBuilder().op("(").str("0").op("l").done();
  const std::vector<float> values = {1, 2, 3, 4};
  const std::string body = magic + protocol + sys_info + small_state_dict_pickle(4, {4}, {1}, true) + keys;
  write_bytes(dir / "legacy.pt", body + le_bytes(4, 8) + floats(values));
  const Checkpoint c = read_checkpoint((dir / "legacy.pt").string());
  EXPECT_EQ(c.format, "legacy torch pickle");
  EXPECT_TRUE(torch::equal(c.tensors.at("w"), torch::tensor(values)));
  write_bytes(dir / "short.pt", body + le_bytes(4, 8) + floats({1, 2}));
  expect_error([&] { read_checkpoint((dir / "short.pt").string()); }, {"short.pt", "runs past the end"});
}

TEST(BadPickles, AreRejectedWithANamedReason) {
  TempDir dir;
  const std::string floats4 = floats({1, 2, 3, 4});
  auto zip_with = [&](const std::string& name, const std::string& pkl) {
    write_bytes(dir / name, build_zip({{"archive/data.pkl", pkl}, {"archive/data/0", floats4}}));
    return (dir / name).string();
  };
  expect_error([&] { read_checkpoint(zip_with("opcode.pt", "\x80\x02\xff.")); },
               {"opcode.pt", "unknown or unsupported opcode 0xff"});
  expect_error([&] { read_checkpoint(zip_with("underflow.pt", "\x80\x02s.")); },
               {"underflow.pt", "stack underflow"});
  expect_error([&] { read_checkpoint(zip_with("memo.pt", "\x80\x02h\x07.")); }, {"memo.pt", "memo entry 7"});
  expect_error([&] { read_checkpoint(zip_with("nostop.pt", "\x80\x02}")); }, {"nostop.pt", "truncated"});
  expect_error([&] { read_checkpoint(zip_with("view.pt", small_state_dict_pickle(4, {10}, {1}))); },
               {"view.pt", "storage '0' holds 4"});
  expect_error([&] { read_checkpoint(zip_with("small.pt", small_state_dict_pickle(8, {8}, {1}))); },
               {"small.pt", "storage '0' holds 16 bytes"});
  expect_error(
      [&] {
        read_checkpoint(zip_with("broadcast.pt", small_state_dict_pickle(4, {1 << 20, 1 << 20}, {0, 0})));
      },
      {"broadcast.pt", "more than its storage"});
  expect_error([&] { read_checkpoint(zip_with("notdict.pt", PickleBuilder().integer(3).done())); },
               {"notdict.pt", "not a state dict"});
  expect_error(
      [&] { read_checkpoint(zip_with("longint.pt", "\x80\x02\x8a\x09" + std::string(9, '\x01') + ".")); },
      {"longint.pt", "wider than 64 bits"});
  // A stream of one-byte opcodes cannot make more values than the cap: 'N' (None) then '0' (POP), over and
  // over.
  std::string many = "\x80\x02";
  for (int i = 0; i < 200; ++i) many += "N0";
  many += "N.";
  PickleArena arena;
  size_t pos = 0;
  PickleLimits limits;
  limits.max_values = 100;
  expect_error(
      [&] {
        parse_pickle({reinterpret_cast<const uint8_t*>(many.data()), many.size()}, &pos, arena, "many.pkl",
                     limits);
      },
      {"many.pkl", "more than 100 values"});
}

TEST(BadZips, AreRejectedWithANamedReason) {
  TempDir dir;
  const std::string pkl = small_state_dict_pickle(4, {4}, {1});
  const std::string data = floats({1, 2, 3, 4});
  auto write = [&](const std::string& name, const std::vector<ZipRecord>& records) {
    write_bytes(dir / name, build_zip(records));
    return (dir / name).string();
  };
  expect_error(
      [&] {
        read_checkpoint(write("missing.pt", {{"archive/data.pkl", pkl}}));
      },
      {"missing.pt", "'archive/data/0' is missing"});
  expect_error(
      [&] {
        read_checkpoint(write("deflated.pt", {{"archive/data.pkl", pkl}, {"archive/data/0", data, 8}}));
      },
      {"deflated.pt", "compressed"});
  expect_error(
      [&] {
        read_checkpoint(
            write("oversized.pt", {{"archive/data.pkl", pkl}, {"archive/data/0", data, 0, 1 << 20}}));
      },
      {"oversized.pt", "runs past the end"});
  expect_error(
      [&] {
        read_checkpoint(write("nopkl.pt", {{"archive/data/0", data}}));
      },
      {"nopkl.pt", "data.pkl"});
  // A record whose bytes were changed after the directory was written.
  std::string bytes = build_zip({{"archive/data.pkl", pkl}, {"archive/data/0", data}});
  bytes[bytes.find(data) + 1] ^= 0x55;
  write_bytes(dir / "crc.pt", bytes);
  expect_error([&] { read_checkpoint((dir / "crc.pt").string()); }, {"crc.pt", "CRC"});
  // Every truncation of a real archive fails cleanly.
  const std::string jit = read_bytes(fixtures() / "clip" / "vit-tiny.openai.jit.pt");
  for (size_t cut : {size_t{0}, size_t{3}, size_t{30}, jit.size() / 2, jit.size() - 10}) {
    write_bytes(dir / "cut.pt", jit.substr(0, cut));
    EXPECT_THROW(read_checkpoint((dir / "cut.pt").string()), Error) << cut;
  }
}

}  // namespace
}  // namespace clipguide::test
