#!/usr/bin/env bash
# bench/gpu: one prepared script for a machine with an NVIDIA GPU (run bench/gpu/prepare.sh here first and carry
# bench/gpu/carry). It builds clipguide against that machine's own PyTorch, runs the GPU tests, then times our CUDA
# paths against the same machine's PyTorch eager in the same precision, and prints ratios:
#   scoring throughput (ViT-B/32 shape, 256 images, batches of 32);
#   the guide step at 32 and 128 cutouts, ViT-B/32 and ViT-L/14 shapes, 512x512 (ours eager, and with --cuda-graph);
#   one guided DDIM step on guided-diffusion's 256x256 uncond UNet shape, ViT-B/32, 32 cutouts;
#   one CLIP-guided Stable Diffusion step (bench/sd: SD 1.5 shapes, 512x512, fp32) against diffusers, where the
#   machine's Python has diffusers.
# Targets: at least 3x eager PyTorch per guidance step (CUDA graphs + bf16), at least 2x for scoring.
#   OUT=DIR     where the results go (default build-gpu/out; the device tool's $OUT when set)
#   QUICK=1     a smoke run: small shapes, 2 steps (also runs on a CPU, DEVICE=cpu, to check the plumbing)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:-$PWD/build-gpu/out}
mkdir -p "$out"
exec > >(tee "$out/gpu-bench.log") 2>&1
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
quick=${QUICK:-0}
carry=$PWD/bench/gpu/carry
deps=/tmp/clipguide-gpu-deps
threads=$(scripts/cores)
export CLIPGUIDE_FIXTURES=${CLIPGUIDE_FIXTURES:-$carry/fixtures}
echo "== machine: $(nvidia-smi -L 2>/dev/null | head -n 1 || echo 'no GPU'); $($py -c 'import torch; print("torch", torch.__version__)')"

# The Debian headers and libraries clipguide builds with, unpacked from prepare.sh's packages.
if [ -d "$carry/debs" ]; then
  mkdir -p "$deps"
  for f in "$carry"/debs/*.deb; do dpkg-deb -x "$f" "$deps"; done
  export PATH=$deps/usr/bin:$PATH
  export PKG_CONFIG_PATH=$deps/usr/lib/x86_64-linux-gnu/pkgconfig
  export PKG_CONFIG_SYSROOT_DIR=$deps
  export LD_LIBRARY_PATH=$deps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
fi
torch_prefix=$($py -c 'import torch.utils; print(torch.utils.cmake_prefix_path)')
cuda_args=()
if command -v nvcc >/dev/null; then cuda_args=(-DCMAKE_CUDA_COMPILER="$(command -v nvcc)" -DTORCH_CUDA_ARCH_LIST=9.0); fi
time cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_prefix;$deps/usr" \
  -DCMAKE_CXX_FLAGS="-isystem $deps/usr/include/x86_64-linux-gnu" "${cuda_args[@]}" >"$out/configure.log"
time cmake --build build-gpu -j"$threads" --target clipguide_cli clipguide_tests bench_make_clip bench_guide bench_diffusion bench_sd \
  >"$out/build.log" 2>&1 || { tail -n 40 "$out/build.log"; exit 1; }

echo "== GPU tests"
build-gpu/tests/clipguide_tests --gtest_filter='*_CUDA*:Replicas.*:CudaGraph.*' --gtest_brief=1 2>&1 | tail -n 30

echo "== benches ($device, $threads CPU threads)"
work=build-gpu/bench
mkdir -p "$work/images"
vocab=$CLIPGUIDE_FIXTURES/tokenizer/bpe_simple_vocab_16e6.txt.gz
if [ "$quick" = 1 ]; then n_images=64 size=128 cutns="8" steps=2 archs="ViT-B/32" unet=64; else
  n_images=256 size=512 cutns="32 128" steps=10 archs="ViT-B/32 ViT-L/14" unet=256; fi
for arch in $archs; do
  f=$work/$(echo "$arch" | tr -d '/-' | tr 'A-Z' 'a-z').safetensors
  [ -s "$f" ] || build-gpu/bench/bench_make_clip "$arch" "$f" >/dev/null
done
"$py" - "$work/images" "$n_images" <<'PY'
import os, sys
import numpy as np
from PIL import Image
out, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
for i in range(n):
    name = os.path.join(out, "img%03d.%s" % (i, "jpg" if i % 3 == 1 else "png"))
    if not os.path.exists(name):
        img = rng.integers(0, 255, (480 + 32 * (i % 8), 640, 3), dtype=np.uint8)
        Image.fromarray(img).save(name)
PY
build-gpu/clipguide tokenize --vocab "$vocab" "an oil painting of a lighthouse" | "$py" -c \
  "import sys,json; print(json.dumps([json.loads(l) for l in sys.stdin]))" >"$work/tokens.json"
printf '%s\n' "a photo of a dog" "a red backpack on a table" "an oil painting of a lighthouse" "a crowded beach" >"$work/prompts.txt"
build-gpu/clipguide tokenize --vocab "$vocab" --file "$work/prompts.txt" | "$py" -c \
  "import sys,json; print(json.dumps([json.loads(l) for l in sys.stdin]))" >"$work/prompt-tokens.json"
precisions="fp32 bf16"
[ "$device" = cuda ] && precisions="fp32 bf16 fp16"
results=$out/gpu-bench.jsonl
: >"$results"
record() { "$py" -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(json.loads(sys.stdin.read().strip().splitlines()[-1])); print(json.dumps(d))' "$1" >>"$results"; }

# Scoring throughput: ours (decode on every CPU, pinned copies) against PyTorch eager with a DataLoader.
clip=$work/vitb32.safetensors
for p in $precisions; do
  [ "$p" = fp16 ] && [ "$device" != cuda ] && continue
  build-gpu/clipguide score -m "$clip" --vocab "$vocab" --prompts-file "$work/prompts.txt" --device "$device" --precision "$p" \
    --format jsonl --stats "$work"/images/* 2>&1 >/dev/null | record "{\"bench\": \"score\", \"side\": \"ours\", \"precision\": \"$p\"}"
  if [ "$device" = cuda ]; then
    "$py" bench/score/reference.py "$clip" "$work/prompt-tokens.json" "$threads" --device cuda --precision "$p" "$work"/images/* |
      record "{\"bench\": \"score\", \"side\": \"pytorch\", \"precision\": \"$p\"}"
  fi
done

# The guide step: ViT-B/32 and ViT-L/14 shapes, 32 and 128 cutouts.
for arch in $archs; do
  clip=$work/$(echo "$arch" | tr -d '/-' | tr 'A-Z' 'a-z').safetensors
  for cutn in $cutns; do
    for p in $precisions; do
      for graph in "" --cuda-graph; do
        [ -n "$graph" ] && [ "$device" != cuda ] && continue
        build-gpu/bench/bench_guide "$clip" "$vocab" "$size" "$cutn" "$steps" --device "$device" --precisions "$p" $graph |
          record "{\"bench\": \"guide\", \"arch\": \"$arch\", \"cutn\": $cutn, \"side\": \"ours$graph\", \"precision\": \"$p\"}"
      done
      "$py" bench/guide/reference.py "$clip" "$work/tokens.json" "$size" "$cutn" "$steps" "$threads" --device "$device" \
        --precision "$p" | record "{\"bench\": \"guide\", \"arch\": \"$arch\", \"cutn\": $cutn, \"side\": \"pytorch\", \"precision\": \"$p\"}"
    done
  done
done

# One guided diffusion step on the 256x256 UNet shape.
clip=$work/vitb32.safetensors
for p in $precisions; do
  for graph in "" --cuda-graph; do
    [ -n "$graph" ] && [ "$device" != cuda ] && continue
    build-gpu/bench/bench_diffusion "$clip" "$vocab" "$work/unet$unet.safetensors" "$steps" --unet "$unet" --cutn 32 \
      --device "$device" --precisions "$p" $graph |
      record "{\"bench\": \"diffusion\", \"side\": \"ours$graph\", \"precision\": \"$p\"}"
  done
  half=""; [ "$p" != fp32 ] && half=$p
  # shellcheck disable=SC2086  # $half is one word or none
  "$py" bench/diffusion/reference.py "$clip" "$work/tokens.json" "$work/unet$unet.safetensors" "$steps" "$threads" $half \
    --device "$device" --unet "$unet" --cutn 32 | record "{\"bench\": \"diffusion\", \"side\": \"pytorch\", \"precision\": \"$p\"}"
done

# One CLIP-guided Stable Diffusion step (bench/sd's SD 1.5 shapes, random weights, 4 cutouts), where this machine's
# Python has diffusers and transformers to make the models and run the peer.
if "$py" -c "import diffusers, transformers" 2>/dev/null; then
  sd_size=512
  [ "$quick" = 1 ] && sd_size=128
  sd_vocab=$CLIPGUIDE_FIXTURES/tokenizer/hf-tokenizer
  "$py" bench/sd/make_models.py "$work/sd" "$sd_vocab" >/dev/null
  build-gpu/bench/bench_sd "$work/sd" "$sd_vocab" "$sd_size" "$steps" --device "$device" |
    record "{\"bench\": \"sd\", \"arch\": \"SD1.5 ${sd_size}px\", \"side\": \"ours\", \"precision\": \"fp32\"}"
  "$py" bench/sd/peer.py "$work/sd" "$sd_size" "$steps" "$threads" --device "$device" |
    record "{\"bench\": \"sd\", \"arch\": \"SD1.5 ${sd_size}px\", \"side\": \"pytorch\", \"precision\": \"fp32\"}"
else
  echo "== sd rows left out: this machine's Python has no diffusers and transformers"
fi

"$py" - "$results" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def time_of(r):
    return r.get("images_per_s") or r.get(f"{r['precision']}_step_s") or r.get("step_s") or r.get("guided_step_s")
print(f"\n{'bench':9} {'shape':18} {'precision':9} {'pytorch':>10} {'ours':>10} {'ours+graph':>10} {'ratio':>6} {'graph':>6}")
keys = sorted({(r["bench"], r.get("arch", ""), r.get("cutn", ""), r["precision"]) for r in rows}, key=str)
for bench, arch, cutn, prec in keys:
    side = {r["side"]: time_of(r) for r in rows if (r["bench"], r.get("arch", ""), r.get("cutn", ""), r["precision"]) == (bench, arch, cutn, prec)}
    py, ours, graph = side.get("pytorch"), side.get("ours"), side.get("ours--cuda-graph")
    better = (lambda a, b: a / b) if bench == "score" else (lambda a, b: b / a)  # images/s vs seconds
    fmt = lambda v: f"{v:10.4f}" if v else f"{'-':>10}"
    print(f"{bench:9} {(arch + (' x' + str(cutn) if cutn else '')):18} {prec:9} {fmt(py)} {fmt(ours)} {fmt(graph)} "
          f"{(better(ours, py) if py and ours else 0):6.2f} {(better(graph, py) if py and graph else 0):6.2f}")
print("score: images/s; guide, diffusion: median seconds per step; ratio: how many times faster ours is than PyTorch eager")
PY
