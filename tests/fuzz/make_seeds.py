#!/usr/bin/env python3
"""Writes the seed corpus of one fuzz harness, built from the fixtures: small, valid inputs in each format.

usage: make_seeds.py NAME OUT_DIR FIXTURES_DIR
Seeds are kept small (libFuzzer mutates whole inputs): a few tensors of each fixture file rather than the file,
a vocabulary cut down to its first merges, PyTorch archives rebuilt around small tensors.
"""
import glob
import gzip
import io
import json
import os
import pickle
import struct
import sys
import types
import zipfile
from collections import OrderedDict

name, out, fx = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(out, exist_ok=True)


def put(file, data):
    with open(os.path.join(out, file), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), 8 + n


def small_safetensors(path, keep):
    """The first `keep` tensors of at most 4 KiB of a safetensors file (and its metadata), as a file of their own."""
    header, start = safetensors_header(path)
    with open(path, "rb") as f:
        blob = f.read()
    small = lambda k: header[k]["data_offsets"][1] - header[k]["data_offsets"][0] <= 4096
    names = [k for k in header if k != "__metadata__" and small(k)][:keep]
    new, data = OrderedDict(), b""
    if "__metadata__" in header:
        new["__metadata__"] = header["__metadata__"]
    for k in names:
        b, e = header[k]["data_offsets"]
        new[k] = {"dtype": header[k]["dtype"], "shape": header[k]["shape"], "data_offsets": [len(data), len(data) + e - b]}
        data += blob[start + b:start + e]
    text = json.dumps(new).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


# Stand-ins for the torch classes a checkpoint names, so the standard pickler writes the same opcodes torch.save does.
def fake(module, qualname, obj):
    mod = sys.modules.setdefault(module, types.ModuleType(module))
    setattr(mod, qualname, obj)
    obj.__module__, obj.__qualname__ = module, qualname
    return obj


FloatStorage = fake("torch", "FloatStorage", type("FloatStorage", (), {}))
HalfStorage = fake("torch", "HalfStorage", type("HalfStorage", (), {}))
rebuild_tensor_v2 = fake("torch._utils", "_rebuild_tensor_v2", lambda *a: None)
rebuild_parameter = fake("torch._utils", "_rebuild_parameter", lambda *a: None)


class Storage:
    def __init__(self, key, cls, numel):
        self.key, self.cls, self.numel = key, cls, numel


class Tensor:
    def __init__(self, storage, offset, size, stride, parameter=False):
        self.args = (storage, offset, tuple(size), tuple(stride), False, OrderedDict())
        self.parameter = parameter

    def __reduce_ex__(self, protocol):
        t = (rebuild_tensor_v2, self.args)
        return (rebuild_parameter, (Tensor(*self.args[:4]), False, OrderedDict())) if self.parameter else t


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.cls, obj.key, "cpu", obj.numel)
        return None


def state_dict():
    s0, s1 = Storage("0", FloatStorage, 12), Storage("1", HalfStorage, 4)
    sd = OrderedDict()
    sd["conv.weight"] = Tensor(s0, 0, [2, 3], [3, 1])
    sd["conv.bias"] = Tensor(s0, 6, [3], [1], parameter=True)
    sd["ln.weight"] = Tensor(s1, 0, [2, 2], [1, 2])
    return {"state_dict": sd, "epoch": 3, "lr": 1e-4, "name": "seed"}, {"0": 12 * 4, "1": 4 * 2}


def dumps(obj, protocol):
    buf = io.BytesIO()
    Pickler(buf, protocol=protocol).dump(obj)
    return buf.getvalue()


def torch_zip(protocol, zip64=False):
    obj, sizes = state_dict()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", dumps(obj, protocol))
        z.writestr("archive/byteorder", "little")
        for key, n in sizes.items():
            with z.open(f"archive/data/{key}", "w", force_zip64=zip64) as f:
                f.write(bytes(range(n)))
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def torch_legacy():
    obj, sizes = state_dict()
    magic = dumps(0x1950A86A20F9469CFC6C, 2)
    parts = [magic, dumps(1001, 2), dumps({"protocol_version": 1001, "little_endian": True}, 2), dumps(obj, 2),
             dumps(list(sizes), 2)]
    for key, n in sizes.items():
        numel = 12 if key == "0" else 4
        parts.append(struct.pack("<q", numel) + bytes(range(n)))
    return b"".join(parts)


def real_data_pkls():
    for path in glob.glob(f"{fx}/**/*.pt", recursive=True) + glob.glob(f"{fx}/**/*.ckpt", recursive=True):
        with zipfile.ZipFile(path) as z:
            for entry in z.namelist():
                if entry.endswith("/data.pkl"):
                    yield os.path.basename(path), z.read(entry)


model_files = sorted(glob.glob(f"{fx}/**/*.safetensors", recursive=True))
model_files = [p for p in model_files if "reference" not in p]

if name == "safetensors":
    for i, path in enumerate(model_files):
        put(f"fixture-{i}.safetensors", small_safetensors(path, 4))
elif name == "zip":
    put("torch-p2.pt", torch_zip(2))
    put("torch-p4-zip64.pt", torch_zip(4, zip64=True))
elif name == "pickle":
    put("state-p2.pkl", dumps(state_dict()[0], 2))
    put("state-p4.pkl", dumps(state_dict()[0], 4))
    put("state-p0.pkl", dumps(state_dict()[0], 0))
    put("legacy.pt", torch_legacy())
    for base, data in real_data_pkls():
        put(f"{base}.data.pkl", data)
elif name == "yaml":
    for path in glob.glob(f"{fx}/**/*.yaml", recursive=True):
        put(os.path.basename(path), open(path, "rb").read())
elif name == "json_config":
    for path in glob.glob(f"{fx}/**/config.json", recursive=True):
        put("hf-config.json", b"c" + open(path, "rb").read())
    for path in glob.glob(f"{fx}/diffusion/*.json"):
        if "manifest" not in path:
            put(os.path.basename(path), b"u" + open(path, "rb").read())
    sd = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "sd", "scheduler")
    for path in glob.glob(f"{sd}/scheduler_config.json"):
        put("sd-scheduler-config.json", b"s" + open(path, "rb").read())
elif name == "tokenizer":
    cases = json.load(open(f"{fx}/tokenizer/tokenizer-cases.json"))
    texts = []
    for group in cases.values() if isinstance(cases, dict) else [cases]:
        for case in group if isinstance(group, list) else []:
            if isinstance(case, dict) and isinstance(case.get("text"), str):
                texts.append(case["text"])
    for i, text in enumerate(texts[:40]):
        put(f"text-{i}", b"t" + text.encode())
    vocab = json.load(open(f"{fx}/tokenizer/hf-tokenizer/vocab.json"))
    merges = open(f"{fx}/tokenizer/hf-tokenizer/merges.txt", encoding="utf-8").read().split("\n")
    small_vocab = {k: v for k, v in vocab.items() if v < 512 + 200 or k.startswith("<|")}
    small_merges = "\n".join(merges[:201]) + "\n"
    put("hf-small", b"h" + json.dumps(small_vocab).encode() + b"\0\0" + small_merges.encode() + b"\0\0a photo of a dog")
    with gzip.open(f"{fx}/tokenizer/bpe_simple_vocab_16e6.txt.gz", "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    put("gz-small", b"g" + gzip.compress("\n".join(lines[:201]).encode(), mtime=0) + b"\0\0a red backpack")
    families = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "families")
    for path in sorted(glob.glob(f"{families}/*.model") + glob.glob(f"{families}/*/spiece.model")):
        model = open(path, "rb").read()
        put("sp-" + os.path.basename(os.path.dirname(path) if path.endswith("spiece.model") else path),
            b"s" + struct.pack("<I", len(model)) + model + "Hello, ｗｏｒｌｄ café 🙂 <mask>".encode())
elif name == "prompts":
    for i, text in enumerate(["a castle:1 | fog:-0.5 | ratio 16:9 poster", "a red circle on a blue background",
                              "a:1:0.5 | b ^ c | d:2", "16\\:9 poster\\|x:0.5", "image.png:0.5:-1", "^|::1:",
                              "a cat:1e308 | dog:-inf"]):
        put(f"prompt-{i}", text)
elif name == "image":
    for path in glob.glob(f"{fx}/preprocess/*") + glob.glob(f"{fx}/clip/*.images/*") + glob.glob(f"{fx}/vqgan/*.images/*"):
        if os.path.splitext(path)[1] in (".png", ".jpg") and os.path.getsize(path) <= 128 * 1024:
            put(os.path.basename(os.path.dirname(path)) + "-" + os.path.basename(path), open(path, "rb").read())
elif name == "state_dict":
    for path in model_files:
        header, _ = safetensors_header(path)
        header.pop("__metadata__", None)
        for v in header.values():
            v.pop("data_offsets", None)
        put(os.path.basename(os.path.dirname(path)) + "-" + os.path.basename(path) + ".json", json.dumps(header))
else:
    sys.exit(f"make_seeds.py: unknown harness '{name}'")
