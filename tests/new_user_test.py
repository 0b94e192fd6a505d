#!/usr/bin/env python3
"""What a new user meets first, end to end through the clipguide binary:

1. values: every repeatable option of every command takes its value whole (commas, a leading space, quotes,
   CJK and emoji, paths with commas and spaces), and the value reaches the output unchanged;
2. messages: hostile names and hostile file content (invalid UTF-8, terminal escapes, newlines, 10 kB names)
   through each reader give one line of valid UTF-8 on stderr and a non-zero exit; so do mutated checkpoints
   and images;
3. tables: every row's columns start where the header's do;
4. bf16 asked of a CPU without bf16 arithmetic says, once, that it is emulated.

usage: new_user_test.py CLIPGUIDE CLIPGUIDE_TOYWORLD   (fixtures from $CLIPGUIDE_FIXTURES, default ../shared/fixtures)
"""
import io
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import unicodedata
import zipfile

BIN, TOYWORLD = sys.argv[1], sys.argv[2]
FX = os.environ.get("CLIPGUIDE_FIXTURES", os.path.join(os.getcwd(), "..", "shared", "fixtures"))
VOCAB = os.path.join(FX, "tokenizer", "bpe_simple_vocab_16e6.txt.gz")
TMP = tempfile.mkdtemp()
passed, failed = 0, 0


def check(name, condition, detail=""):
    global passed, failed
    if condition:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {name} {detail}"[:2000])


def run(args):
    return subprocess.run(args, capture_output=True, timeout=300)


def vit_clip():
    """(file, text heads) of the first ViT CLIP in the manifest."""
    models = json.load(open(os.path.join(FX, "clip", "clip-manifest.json")))["models"]
    for m in models.values():
        if not isinstance(m["config"]["vision_layers"], list):
            f = [f for f in m["files"] if f.endswith(".openai.safetensors")][0]
            return os.path.join(FX, "clip", f), str(m["config"]["transformer_heads"])
    raise SystemExit("no ViT CLIP in the fixtures")


CLIP, HEADS = vit_clip()
MODEL = ["-m", CLIP, "--vocab", VOCAB, "--text-heads", HEADS]
IMAGE_DIR = CLIP.split(".openai.")[0] + ".images"  # <model>.images/exact-i.png
SOURCE_IMAGES = sorted(os.path.join(IMAGE_DIR, f) for f in os.listdir(IMAGE_DIR) if f.startswith("exact-"))


def jsonl(stdout):
    return [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]


# ---- 1. values are taken whole ----
IMGDIR = os.path.join(TMP, "my images, 2026 (copy)")
os.makedirs(IMGDIR)
NAMES = ["a, b.png", " leading space.png", 'quo"te.png', "写真 1.png", "🐱 cat.png", "plain.png"]
IMAGES = []
for i, src in enumerate(SOURCE_IMAGES):
    dest = os.path.join(IMGDIR, NAMES[i % len(NAMES)] if i < len(NAMES) else f"extra {i}.png")
    shutil.copy(src, dest)
    IMAGES.append(dest)
PROMPTS = ["a castle on a hill, oil painting", " a leading space", 'a "quoted" word, and more', "城の上の月、夜",
           "🐱 a cat, emoji"]

r = run([BIN, "score", *MODEL, *sum([["-p", p] for p in PROMPTS], []), IMGDIR, "--format", "jsonl"])
rows = jsonl(r.stdout) if r.returncode == 0 else []
check("score: every image x every prompt", len(rows) == len(IMAGES) * len(PROMPTS),
      f"rc={r.returncode} rows={len(rows)} want {len(IMAGES)}x{len(PROMPTS)} {r.stderr[-300:]}")
check("score: prompts and paths reach the output unchanged",
      {(x["image"], x["prompt"]) for x in rows} == {(i, p) for i in IMAGES for p in PROMPTS})
scores = {(x["image"], x["prompt"]): x["score"] for x in rows}

r = run([BIN, "score", *MODEL, "-p", PROMPTS[0], *IMAGES, "--format", "jsonl"])
rows = jsonl(r.stdout) if r.returncode == 0 else []
check("score: image paths as arguments", sorted(x["image"] for x in rows) == sorted(IMAGES), r.stderr[-300:])

r = run([BIN, "score", *MODEL, "--template", "a photo of {}, at night", "-p", "dog", IMAGES[0], "--format", "jsonl"])
plain = run([BIN, "score", *MODEL, "-p", "a photo of dog, at night", IMAGES[0], "--format", "jsonl"])
both = jsonl(r.stdout) + jsonl(plain.stdout) if r.returncode == 0 and plain.returncode == 0 else []
check("score --template keeps its comma", len(both) == 2 and abs(both[0]["score"] - both[1]["score"]) < 1e-5,
      f"{both} {r.stderr[-300:]}")

negative = "a dog, sleeping"
r = run([BIN, "rerank", *MODEL, "-p", PROMPTS[0], "--negative", negative, IMGDIR, "--format", "jsonl"])
neg = run([BIN, "score", *MODEL, "-p", negative, IMGDIR, "--format", "jsonl"])
rows = jsonl(r.stdout) if r.returncode == 0 else []
neg_scores = {x["image"]: x["score"] for x in jsonl(neg.stdout)} if neg.returncode == 0 else {}
check("rerank: one row per image", len(rows) == len(IMAGES), r.stderr[-300:])
check("rerank --negative keeps its comma: score = cos(prompt) - cos(negative)",
      rows and all(abs(x["score"] - (scores[(x["image"], PROMPTS[0])] - neg_scores[x["image"]])) < 1e-5 for x in rows))
r = run([BIN, "rerank", *MODEL, "--template", "a photo of {}, at night", "-p", "dog", IMAGES[0], "--format", "jsonl"])
rows = jsonl(r.stdout) if r.returncode == 0 else []
check("rerank --template keeps its comma", len(rows) == 1 and both and abs(rows[0]["score"] - both[1]["score"]) < 1e-5,
      r.stderr[-300:])

r = run([BIN, "embed", *MODEL, *sum([["--text", p] for p in PROMPTS], []), *sum([["--image", i] for i in IMAGES], [])])
rows = jsonl(r.stdout) if r.returncode == 0 else []
check("embed --text/--image: one line per value, unchanged",
      [x["input"] for x in rows] == IMAGES + PROMPTS, f"rc={r.returncode} {r.stderr[-300:]}")

r = run([BIN, "tokenize", "--vocab", VOCAB, *PROMPTS])
check("tokenize: one row per text", r.returncode == 0 and len(r.stdout.decode().splitlines()) == len(PROMPTS))
comma = json.loads(run([BIN, "tokenize", "--vocab", VOCAB, ","]).stdout)[1]
first = json.loads(r.stdout.decode().splitlines()[0]) if r.returncode == 0 else []
check("tokenize: the comma is tokenized, not split on", comma in first)

clip_copy = os.path.join(TMP, "models, v2", "clip, copy.safetensors")
os.makedirs(os.path.dirname(clip_copy))
shutil.copy(CLIP, clip_copy)
out = os.path.join(TMP, "out, 1", "run.png")
os.makedirs(os.path.dirname(out))
r = run([BIN, "generate", "-p", "a castle, at dusk:1 | fog, light:-0.5", "--clip-model", clip_copy + ":1:2",
         "--vocab", VOCAB, "--text-heads", HEADS, "--image-prompt", IMAGES[0] + ":0.5", "--init-image", IMAGES[0],
         "--init-image", IMAGES[1], "--generator", "pixels", "--steps", "2", "--size", "32x32", "--cutn", "2",
         "--seed", "1", "-o", out])
meta = json.load(open(out[:-4] + ".json")) if r.returncode == 0 else {}
argv = meta.get("argv", [])
check("generate: --clip-model, --image-prompt and --init-image keep their commas",
      r.returncode == 0 and clip_copy + ":1:2" in argv and IMAGES[0] + ":0.5" in argv and IMAGES[1] in argv,
      f"rc={r.returncode} {r.stderr[-400:]}")
r = run([TOYWORLD, "judge", IMAGES[0]])
check("toyworld judge: a path with a comma", r.returncode == 0 and len(r.stdout.decode().splitlines()) == 1, r.stderr[-300:])


# Every program parses through cli/options.h, which keeps values whole; a direct include of cxxopts would not.
direct = [os.path.join(d, f) for top in ("cli", "examples") for d, _, fs in os.walk(top) for f in fs
          if f.endswith((".cpp", ".h")) and os.path.join(d, f) != os.path.join("cli", "options.h")
          and "<cxxopts.hpp>" in open(os.path.join(d, f)).read()]
check("no program includes <cxxopts.hpp> but through cli/options.h", not direct, direct)


# ---- 2. messages: one line of valid UTF-8 ----
def clean_message(name, r):
    """Non-zero exit, nothing on stdout, one line of valid UTF-8 on stderr without control characters."""
    err = r.stderr
    try:
        text = err.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        text, valid = "", False
    one_line = err.endswith(b"\n") and err.count(b"\n") == 1
    printable = not any(unicodedata.category(c) == "Cc" for c in text.rstrip("\n"))
    ok = 0 < r.returncode < 128 and not r.stdout and valid and one_line and printable and len(err) < 4096
    check(f"clean error: {name}", ok, f"rc={r.returncode} stderr={err[:400]!r}")


def clean_outcome(name, r):
    """A run that may succeed (the input was readable after all): then stderr is valid UTF-8; else a clean error."""
    if r.returncode == 0:
        try:
            r.stderr.decode("utf-8")
            check(f"clean success: {name}", b"\x1b" not in r.stderr, repr(r.stderr[:300]))
        except UnicodeDecodeError:
            check(f"clean success: {name}", False, repr(r.stderr[:300]))
    else:
        clean_message(name, r)


HOSTILE = {"invalid-utf8": b"bad\xffbyte", "escape": b"esc\x1b[31mred\x1b[0m", "newline": b"new\nline",
           "c1-and-bidi": "c1\u009b31m\u202eevil".encode()}
LONG = b"x" * 10240
work = os.fsencode(os.path.join(TMP, "hostile"))
os.makedirs(work)


def hostile_file(stem, suffix, content):
    path = os.path.join(work, stem + suffix)
    with open(path, "wb") as f:
        f.write(content)
    return path


for label, name in HOSTILE.items():
    garbage = b"\x00\x01garbage " + name
    model_st = hostile_file(name, b".safetensors", garbage)
    model_pt = hostile_file(name, b".pt", garbage)
    image = hostile_file(name, b".png", b"\x89PNG\r\n\x1a\n" + garbage)
    text = hostile_file(name, b".csv", b"image,prompt\n\"" + name)
    yaml = hostile_file(name, b".yaml", b"model: [" + name)
    flags = hostile_file(name, b".json", b"{" + name)
    readers = {
        "safetensors": [BIN, "info", model_st],
        "torch zip": [BIN, "info", model_pt],
        "image": [BIN, "score", *MODEL, "-p", "x", image],
        "vocabulary": [BIN, "tokenize", "--vocab", model_pt, "x"],
        "pairs": [BIN, "score", *MODEL, "--pairs", text],
        "vqgan yaml": [BIN, "generate", "-p", "x", "--clip-model", CLIP, "--vqgan-checkpoint", model_st,
                       "--vqgan-config", yaml, "--steps", "1"],
        "diffusion flags": [BIN, "generate", "-p", "x", "--clip-model", CLIP, "--generator", "diffusion",
                            "--diffusion-checkpoint", model_st, "--diffusion-flags", flags],
        "replay": [BIN, "generate", "--replay", flags],
        "missing file": [BIN, "info", os.path.join(work, b"missing-" + name + b".pt")],
    }
    for reader, args in readers.items():
        clean_message(f"{label} {reader}", run(args))
    clean_outcome(f"{label} prompt", run([BIN, "tokenize", "--vocab", VOCAB, "--context-length", "4", name + b" a b c d"]))

# A 10 kB name: as a path, and as names inside files.
clean_message("10 kB path", run([BIN, "info", os.path.join(work, LONG + b".pt")]))
clean_message("10 kB prompt in a bad option", run([BIN, "score", *MODEL, "--metric", LONG.decode(), "-p", "x", IMAGES[0]]))


def safetensors_bytes(header):
    h = json.dumps(header).encode() if isinstance(header, dict) else header
    return struct.pack("<Q", len(h)) + h


for label, name in list(HOSTILE.items()) + [("10 kB", LONG)]:
    key = name.decode("utf-8", "surrogateescape")
    tensor = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    # A tensor name that is no CLIP weight; a dtype nobody knows; a header that is not UTF-8 JSON.
    for what, header in [("tensor name", {key: tensor}),
                         ("dtype", {"x": dict(tensor, dtype=key)}),
                         ("raw header", b'{"' + name + b'": 1}')]:
        try:
            blob = safetensors_bytes(header) + b"\0" * 4
        except UnicodeEncodeError:  # invalid UTF-8 cannot be a JSON string: only as raw bytes
            continue
        path = hostile_file(b"content-" + label.encode(), b".safetensors", blob)
        clean_message(f"{label} {what} in a safetensors file", run([BIN, "info", path]))
    hf = os.path.join(work, b"hf-" + label.encode())
    os.makedirs(hf, exist_ok=True)
    shutil.copy(os.path.join(FX, "clip", "vit-tiny.hf", "model.safetensors"), os.path.join(hf, b"model.safetensors"))
    with open(os.path.join(hf, b"config.json"), "wb") as f:
        f.write(b'{"text_config": {"hidden_act": "' + name.replace(b"\n", b"\\n").replace(b"\x1b", b"\\u001b") + b'"}}')
    clean_message(f"{label} value in config.json", run([BIN, "info", hf]))
    zpath = os.path.join(work, b"zip-" + label.encode() + b".pt")
    with zipfile.ZipFile(os.fsdecode(zpath), "w") as z:
        z.writestr(key.encode("utf-8", "replace").decode("utf-8", "replace") + "/data.pkl", b"\x80\x02c" + name + b"\nevil\n.")
    clean_message(f"{label} names in a torch zip", run([BIN, "info", zpath]))
    pkl = io.BytesIO()
    with zipfile.ZipFile(pkl, "w") as z:
        z.writestr("archive/data.pkl", b"\x80\x02c" + name.replace(b"\n", b"") + b"\nevil\n)\x81.")
    with open(os.path.join(work, b"pkl-" + label.encode() + b".pt"), "wb") as f:
        f.write(pkl.getvalue())
    clean_message(f"{label} class in a pickle", run([BIN, "info", os.path.join(work, b"pkl-" + label.encode() + b".pt")]))

# Mutated checkpoints and images: random bytes overwritten (seeded), then read.
rng = random.Random(int(os.environ.get("CLIPGUIDE_MUTATION_SEED", "22")))
targets = [(CLIP, ["info"]), (os.path.join(FX, "clip", "vit-tiny.openai.jit.pt"), ["info"])]
targets = [(f, a) for f, a in targets if os.path.exists(f)]
mutants = int(os.environ.get("CLIPGUIDE_MUTANTS", "24"))
for i in range(mutants):
    kind = i % 3
    if kind < 2 and kind < len(targets):
        src, args = targets[kind]
    else:
        src, args = IMAGES[i % len(IMAGES)], None
    data = bytearray(open(src, "rb").read())
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(min(len(data), 4096 if rng.random() < 0.7 else len(data)))
        data[pos] = rng.randrange(256)
    path = hostile_file(b"mutant-%d" % i, os.path.splitext(os.fsencode(src))[1], bytes(data))
    r = run([BIN, *args, path] if args else [BIN, "score", *MODEL, "-p", "x", path, "--format", "jsonl"])
    clean_outcome(f"mutant {i} of {os.path.basename(src)}", r)


# ---- and what else a new user meets ----
# Outputs into folders that do not exist yet are made; an output that cannot be written fails before any work.
nested = os.path.join(TMP, "new", "deeper")
r = run([BIN, "embed", *MODEL, "--text", "x", "--format", "npy", "-o", os.path.join(nested, "e.npy")])
check("embed -o into a folder that does not exist", r.returncode == 0 and os.path.exists(os.path.join(nested, "e.npy")),
      r.stderr[-300:])
r = run([BIN, "generate", "-p", "x", "--clip-model", CLIP, "--vocab", VOCAB, "--text-heads", HEADS, "--generator", "pixels",
         "--steps", "1", "--size", "16x16", "--cutn", "1", "-o", os.path.join(nested, "more", "g.png")])
check("generate -o into a folder that does not exist", r.returncode == 0 and os.path.exists(os.path.join(nested, "more", "g.png")),
      r.stderr[-300:])
import time as _time
t0 = _time.monotonic()
r = run([BIN, "generate", "-p", "x", "--clip-model", CLIP, "--vocab", VOCAB, "--generator", "pixels", "--steps", "100000",
         "-o", "/proc/clipguide-cannot-write/g.png"])
clean_message("generate -o where nothing can be written", r)
check("an unwritable output fails before the run", _time.monotonic() - t0 < 20, f"{_time.monotonic() - t0:.1f} s")
# Folders: a symlinked folder is followed; a broken link is reported (skipped with --on-error skip); a folder with no
# images says so.
linked = os.path.join(TMP, "linked")
os.makedirs(linked)
os.symlink(IMGDIR, os.path.join(linked, "to images"))
os.symlink(linked, os.path.join(linked, "loop"))  # a loop: each real folder is read once
r = run([BIN, "score", *MODEL, "-p", "x", linked, "--format", "jsonl"])
rows = jsonl(r.stdout) if r.returncode == 0 else []
check("score follows symlinked folders, once each", len(rows) >= len(IMAGES) and len(rows) == len({x["image"] for x in rows}),
      f"{len(rows)} rows {r.stderr[-300:]}")
os.symlink(os.path.join(TMP, "nowhere.png"), os.path.join(linked, "broken.png"))
r = run([BIN, "score", *MODEL, "-p", "x", linked, "--format", "jsonl", "--on-error", "skip"])
check("a broken link is reported and skipped", r.returncode == 0 and b"broken.png" in r.stderr, r.stderr[-300:])
clean_message("a broken link fails by default", run([BIN, "score", *MODEL, "-p", "x", linked, "--format", "jsonl"]))
os.makedirs(os.path.join(TMP, "empty"))
clean_message("a folder with no images", run([BIN, "score", *MODEL, "-p", "x", os.path.join(TMP, "empty")]))
# A prompt of exactly the context length (start and end tokens included) is fine; one token more is a one-line
# error that counts them and names --truncate; with --truncate it is cut.
context = len(json.loads(run([BIN, "tokenize", *MODEL, "x"]).stdout))  # the model's context length
fits, over = " ".join(["cat"] * (context - 2)), " ".join(["cat"] * (context - 1))
r = run([BIN, "score", *MODEL, "-p", fits, IMAGES[0], "--format", "jsonl"])
check(f"a prompt of exactly {context} tokens scores", r.returncode == 0 and len(jsonl(r.stdout)) == 1, r.stderr[-300:])
r = run([BIN, "score", *MODEL, "-p", over, IMAGES[0], "--format", "jsonl"])
clean_message(f"a prompt of {context + 1} tokens", r)
check("the error counts the tokens and names --truncate", f"{context + 1} tokens".encode() in r.stderr and b"--truncate" in r.stderr,
      r.stderr[-300:])
r = run([BIN, "score", *MODEL, "-p", over, IMAGES[0], "--format", "jsonl", "--truncate"])
check("--truncate scores it", r.returncode == 0 and len(jsonl(r.stdout)) == 1, r.stderr[-300:])
# A PNG named .jpg is read by its content; a folder of 10,000 images gives 10,000 rows.
misnamed = os.path.join(TMP, "actually a png.jpg")
shutil.copy(IMAGES[0], misnamed)
r = run([BIN, "score", *MODEL, "-p", "x", misnamed, "--format", "jsonl"])
check("a PNG with a .jpg name scores", r.returncode == 0 and len(jsonl(r.stdout)) == 1, r.stderr[-300:])
many = os.path.join(TMP, "ten thousand")
os.makedirs(many)
for i in range(10000):
    os.link(misnamed, os.path.join(many, f"img{i:05d}.png"))
r = run([BIN, "score", *MODEL, "-p", "x", many, "--format", "jsonl"])
rows = jsonl(r.stdout) if r.returncode == 0 else []
check("a folder of 10,000 images: one row each", len(rows) == 10000 and len({x["image"] for x in rows}) == 10000,
      f"rc={r.returncode} rows={len(rows)} {r.stderr[-300:]}")
# Ctrl-C while the program is still starting (libraries, model) stops it with nothing written.
stopped = os.path.join(TMP, "stopped while loading")
p = subprocess.Popen([BIN, "generate", "-p", "x", "--clip-model", CLIP, "--vocab", VOCAB, "--text-heads", HEADS,
                      "--generator", "pixels", "--steps", "100000", "-o", os.path.join(stopped, "g.png")],
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                     # as from a terminal, even where this test runs in the background (SIGINT ignored there)
                     preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
_time.sleep(0.05)
p.send_signal(2)  # SIGINT
try:
    err = p.communicate(timeout=60)[1]
    check("Ctrl-C while loading: stops, nothing written",
          p.returncode != 0 and not (os.path.isdir(stopped) and os.listdir(stopped)), f"rc={p.returncode} {err[-300:]}")
except subprocess.TimeoutExpired:
    p.kill()
    check("Ctrl-C while loading stops the program", False, "still running after 60 s")
# A FIFO or device given as a model is refused at once, never waited on.
fifo = os.path.join(TMP, "model.fifo")
os.mkfifo(fifo)
try:
    clean_message("a FIFO as the model", subprocess.run([BIN, "info", fifo], capture_output=True, timeout=20))
except subprocess.TimeoutExpired:
    check("a FIFO as the model", False, "hung")


# ---- 3. tables line up ----
def width(s):
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in s)


def columns_line_up(name, text, numeric):
    lines = [l for l in text.splitlines() if l and not l.startswith("#")]
    header = lines[0]
    names = header.split()
    starts, ends, col = [], [], 0
    for n in names:  # the header's names have no spaces inside
        col = header.index(n, col)
        starts.append(width(header[:col]))
        ends.append(width(header[:col]) + len(n))
        col += len(n)
    good = True
    for line in lines[1:]:
        cells = [width(line[:k]) for k in range(len(line) + 1)]
        at = lambda display_col: next((line[k] for k in range(len(line)) if cells[k] == display_col), "")
        for c, n in enumerate(names):
            if n in numeric:  # right-aligned: ends where the header ends
                good &= at(ends[c] - 1) not in ("", " ") and at(ends[c]) in ("", " ")
            else:  # left-aligned: starts where the header starts, after the separator
                good &= at(starts[c]) not in ("", " ") and (c == 0 or at(starts[c] - 1) == " ")
    check(f"table lines up: {name}", good and len(lines) > 1, "\n" + text)


long_dir = os.path.join(TMP, "a folder whose name is much longer than any table column should be, on purpose")
os.makedirs(long_dir)
shutil.copy(IMAGES[0], os.path.join(long_dir, "late image.png"))
r = run([BIN, "score", *MODEL, "-p", PROMPTS[0], "-p", PROMPTS[3], IMGDIR, long_dir, "--format", "table",
         "--batch-size", "2"])
check("score --format table runs", r.returncode == 0, r.stderr[-300:])
columns_line_up("score", r.stdout.decode(), {"score"})
check("table: a long path is cut in the middle", "…" in r.stdout.decode() and "late image.png" in r.stdout.decode())
check("table: scores have 4 decimals",
      all(len(l.split()[0].split(".")[-1]) == 4 for l in r.stdout.decode().splitlines()[2:]))
pairs = os.path.join(TMP, "pairs.csv")
with open(pairs, "w") as f:
    f.write("image,prompt\n")
    for i, img in enumerate(IMAGES):
        f.write(f'"{img.replace(chr(34), 2 * chr(34))}","{PROMPTS[i % 2 + 2].replace(chr(34), 2 * chr(34))}"\n')
r = run([BIN, "rerank", *MODEL, "--group-by", pairs, "--format", "table"])
check("rerank --group-by --format table runs", r.returncode == 0, r.stderr[-300:])
columns_line_up("rerank --group-by", r.stdout.decode(), {"group", "rank", "score"})
r = run([BIN, "rerank", *MODEL, "-p", PROMPTS[4], IMGDIR, "--format", "table"])
columns_line_up("rerank", r.stdout.decode(), {"rank", "score"})


# ---- 4. bf16 on a CPU that only emulates it is said, once ----
native_bf16 = "avx512_bf16" in open("/proc/cpuinfo").read().split()
r = run([BIN, "score", *MODEL, "-p", PROMPTS[0], IMAGES[0], "--precision", "bf16", "--format", "jsonl"])
said = r.stderr.decode(errors="replace").count("bf16 on this CPU is emulated")
check("score --precision bf16 runs, and says so where bf16 is emulated",
      r.returncode == 0 and len(jsonl(r.stdout)) == 1 and said == (0 if native_bf16 else 1), f"rc={r.returncode} {r.stderr[-300:]}")

shutil.rmtree(TMP, ignore_errors=True)
print(f"new_user: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
