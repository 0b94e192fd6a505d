#!/usr/bin/env bash
# bench/guide: one CLIP guidance step (256x256 image, 32 cutouts, full-size ViT-B/32 shape with random weights)
# in clipguide (fp32 and bf16) against the reference Python way (bench/guide/reference.py, Debian's python3-torch),
# same machine, same thread count; and a taming f16 VQGAN quantize + decode + backward at 256x256.
source "$(dirname "$0")/../common.sh" python3-torch python3-torchvision python3-numpy python3-pil
size=${SIZE:-256}
cutn=${CUTN:-32}
steps=${STEPS:-10}
work=build/bench/guide
mkdir -p "$work"
[ -s "$work/vitb32.safetensors" ] || build/bench/bench_make_clip ViT-B/32 "$work/vitb32.safetensors" >/dev/null
build/clipguide tokenize --vocab "$vocab" "an oil painting of a lighthouse" | "$py" -c "import sys,json; print(json.dumps([json.loads(l) for l in sys.stdin]))" >"$work/tokens.json"

build/bench/bench_guide "$work/vitb32.safetensors" "$vocab" "$size" "$cutn" "$steps" vqgan --precisions "$precision_list" \
  >"$work/ours.json"
"$py" bench/guide/reference.py "$work/vitb32.safetensors" "$work/tokens.json" "$size" "$cutn" "$steps" "$threads" vqgan >"$work/python.json"

# Today's peers on PyTorch 2.x and our build against the same libtorch.
setup_torch2
"$bin2"/bench/bench_guide "$work/vitb32.safetensors" "$vocab" "$size" "$cutn" "$steps" --precisions "$precision_list" \
  >"$work/ours.torch2.json"
"$vpy" bench/guide/reference.py "$work/vitb32.safetensors" "$work/tokens.json" "$size" "$cutn" "$steps" "$threads" \
  >"$work/python.torch2.json"
"$vpy" bench/guide/peers.py "$work/vitb32.safetensors" "$work/tokens.json" "$size" "$cutn" "$steps" "$threads" ${compile[@]+"${compile[@]}"} \
  >"$work/peers.jsonl"

"$py" - "$work" "$size" "$cutn" "$threads" <<'PY'
import json, sys
work, size, cutn, threads = sys.argv[1:5]
ours, py = json.load(open(f"{work}/ours.json")), json.load(open(f"{work}/python.json"))
print(f"bench/guide: {size}x{size} image, {cutn} cutouts, ViT-B/32 shape (random weights), {threads} threads; median s/step")
print(f"{'step':34} {'python':>8} {'ours':>8} {'ratio':>6}")
print(f"{'guidance step fp32':34} {py['fp32_step_s']:8.3f} {ours['fp32_step_s']:8.3f} {py['fp32_step_s'] / ours['fp32_step_s']:6.2f}")
if "bf16_step_s" in ours:
    print(f"{'guidance step bf16 (ours)':34} {py['fp32_step_s']:8.3f} {ours['bf16_step_s']:8.3f} {py['fp32_step_s'] / ours['bf16_step_s']:6.2f}")
print(f"{'VQGAN f16 quantize+decode+backward':34} {py['vqgan_decode_backward_s']:8.3f} {ours['vqgan_decode_backward_s']:8.3f} "
      f"{py['vqgan_decode_backward_s'] / ours['vqgan_decode_backward_s']:6.2f}")
if "bf16_grad_cosine" in ours:
    print(f"bf16 image gradient cosine to fp32: {ours['bf16_grad_cosine']:.4f}")
print("ratio: python seconds / our seconds (higher is faster); the bf16 row compares with Python's fp32 step.")
PY

"$py" - "$work" "$size" "$cutn" "$threads" <<'PY'
import json, os, sys
work, size, cutn, threads = sys.argv[1:5]
ours, plain = json.load(open(f"{work}/ours.torch2.json")), json.load(open(f"{work}/python.torch2.json"))
peers = [json.loads(l) for l in open(f"{work}/peers.jsonl")]
version = peers[0]["torch"].split("+")[0]
print(f"\nbench/guide on today's PyTorch {version}: {size}x{size}, {cutn} cutouts, ViT-B/32 shape, {threads} threads; "
      "median s/step")
print(f"{'precision':9} {'peer':44} {'s/step':>7} {'peer/ours':>9}")
for prec in os.environ["PRECISIONS"].split():
    mine = ours[f"{prec}_step_s"]
    rows = [("plain PyTorch (reference.py)", plain["fp32_step_s"])] if prec == "fp32" else []
    rows += [(p["peer"], p["step_s"]) for p in peers if p["precision"] == prec]
    fastest = min(v for name, v in rows if "compile" not in name)
    for name, v in rows:
        print(f"{prec:9} {name:44} {v:7.3f} {v / mine:9.2f}")
    print(f"{prec:9} {'ours (libtorch ' + version + ')':44} {mine:7.3f} {fastest / mine:9.2f}  <- against the fastest eager peer")
print("peer/ours: the peer's seconds over ours (higher: we are faster); +compile rows are torch.compile (a reference).")
PY
