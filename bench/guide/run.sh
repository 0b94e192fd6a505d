#!/usr/bin/env bash
# bench/guide: one CLIP guidance step (256x256 image, 32 cutouts, full-size ViT-B/32 shape with random weights)
# in clipguide (fp32 and bf16) against the reference Python way (bench/guide/reference.py, Debian's python3-torch),
# same machine, same thread count; and a taming f16 VQGAN quantize + decode + backward at 256x256.
source "$(dirname "$0")/../common.sh" python3-torch python3-numpy
size=${SIZE:-256}
cutn=${CUTN:-32}
steps=${STEPS:-10}
work=build/bench/guide
mkdir -p "$work"
[ -s "$work/vitb32.safetensors" ] || build/bench/bench_make_clip ViT-B/32 "$work/vitb32.safetensors" >/dev/null
build/clipguide tokenize --vocab "$vocab" "an oil painting of a lighthouse" | "$py" -c "import sys,json; print(json.dumps([json.loads(l) for l in sys.stdin]))" >"$work/tokens.json"

build/bench/bench_guide "$work/vitb32.safetensors" "$vocab" "$size" "$cutn" "$steps" vqgan >"$work/ours.json"
"$py" bench/guide/reference.py "$work/vitb32.safetensors" "$work/tokens.json" "$size" "$cutn" "$steps" "$threads" vqgan >"$work/python.json"

"$py" - "$work" "$size" "$cutn" "$threads" <<'PY'
import json, sys
work, size, cutn, threads = sys.argv[1:5]
ours, py = json.load(open(f"{work}/ours.json")), json.load(open(f"{work}/python.json"))
print(f"bench/guide: {size}x{size} image, {cutn} cutouts, ViT-B/32 shape (random weights), {threads} threads; median s/step")
print(f"{'step':34} {'python':>8} {'ours':>8} {'ratio':>6}")
print(f"{'guidance step fp32':34} {py['fp32_step_s']:8.3f} {ours['fp32_step_s']:8.3f} {py['fp32_step_s'] / ours['fp32_step_s']:6.2f}")
print(f"{'guidance step bf16 (ours)':34} {py['fp32_step_s']:8.3f} {ours['bf16_step_s']:8.3f} {py['fp32_step_s'] / ours['bf16_step_s']:6.2f}")
print(f"{'VQGAN f16 quantize+decode+backward':34} {py['vqgan_decode_backward_s']:8.3f} {ours['vqgan_decode_backward_s']:8.3f} "
      f"{py['vqgan_decode_backward_s'] / ours['vqgan_decode_backward_s']:6.2f}")
print(f"bf16 image gradient cosine to fp32: {ours['bf16_grad_cosine']:.4f}")
print("ratio: python seconds / our seconds (higher is faster); the bf16 row compares with Python's fp32 step.")
PY
