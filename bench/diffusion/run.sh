#!/usr/bin/env bash
# bench/diffusion: one CLIP-guided DDIM step on a 64x64 UNet of guided-diffusion's 64x64 shape (random weights)
# with a ViT-B/32-shape CLIP and 16 cutouts, in clipguide (CLIP fp32 and bf16) against the reference Python way
# (bench/diffusion/reference.py, Debian's python3-torch), same machine, same thread count.
source "$(dirname "$0")/../common.sh" python3-torch python3-torchvision python3-numpy python3-pil
steps=${STEPS:-5}
work=build/bench/diffusion
mkdir -p "$work"
[ -s build/bench/guide/vitb32.safetensors ] || { mkdir -p build/bench/guide; build/bench/bench_make_clip ViT-B/32 build/bench/guide/vitb32.safetensors >/dev/null; }
build/clipguide tokenize --vocab "$vocab" "an oil painting of a lighthouse" | "$py" -c "import sys,json; print(json.dumps([json.loads(l) for l in sys.stdin]))" >"$work/tokens.json"

batch=${BATCH:-4}  # best-of-4, as one batch against one candidate at a time
build/bench/bench_diffusion build/bench/guide/vitb32.safetensors "$vocab" "$work/unet64.safetensors" "$steps" \
  --precisions "$precision_list" --batch "$batch" >"$work/ours.json"
"$py" bench/diffusion/reference.py build/bench/guide/vitb32.safetensors "$work/tokens.json" "$work/unet64.safetensors" "$steps" "$threads" >"$work/python.json"

# Today's peer: the same guided-diffusion code on PyTorch 2.x (fp32, bf16 CLIP, and torch.compile as a reference),
# against our build on the same libtorch.
setup_torch2
"$bin2"/bench/bench_diffusion build/bench/guide/vitb32.safetensors "$vocab" "$work/unet64.torch2.safetensors" "$steps" \
  --precisions "$precision_list" >"$work/ours.torch2.json"
variants=("" ${compile[@]+"${compile[@]}"})
[[ " $PRECISIONS " == *" bf16 "* ]] && variants+=(bf16 ${compile[@]+"bf16 --compile"})
for variant in "${variants[@]}"; do
  # shellcheck disable=SC2086  # the variant is words
  "$vpy" bench/diffusion/reference.py build/bench/guide/vitb32.safetensors "$work/tokens.json" "$work/unet64.torch2.safetensors" \
    "$steps" "$threads" $variant
done >"$work/python.torch2.jsonl"

"$py" - "$work" "$threads" <<'PY'
import json, sys
work, threads = sys.argv[1:3]
ours, py = json.load(open(f"{work}/ours.json")), json.load(open(f"{work}/python.json"))
print(f"bench/diffusion: guided DDIM step, 64x64 UNet ({ours['unet_parameters'] / 1e6:.0f}M parameters), ViT-B/32 shape, "
      f"16 cutouts, {threads} threads; median s/step")
print(f"{'step':28} {'python':>8} {'ours':>8} {'ratio':>6}")
print(f"{'CLIP fp32':28} {py['step_s']:8.3f} {ours['fp32_step_s']:8.3f} {py['step_s'] / ours['fp32_step_s']:6.2f}")
if "bf16_step_s" in ours:
    print(f"{'CLIP bf16 (ours)':28} {py['step_s']:8.3f} {ours['bf16_step_s']:8.3f} {py['step_s'] / ours['bf16_step_s']:6.2f}")
print("ratio: python seconds / our seconds; the UNet runs in fp32 on both sides.")
if "batch" in ours:
    n, one, many = ours["batch"], ours["fp32_step_s"], ours["fp32_batch_step_s"]
    print(f"best-of-{n} (fp32): one at a time {n * one:.3f} s a step, as one batch {many:.3f} s; ratio {n * one / many:.2f}")
PY

"$py" - "$work" "$threads" <<'PY'
import json, os, sys
work, threads = sys.argv[1:3]
ours = json.load(open(f"{work}/ours.torch2.json"))
peers = [json.loads(l) for l in open(f"{work}/python.torch2.jsonl")]
version = peers[0]["torch"].split("+")[0]
print(f"\nbench/diffusion on today's PyTorch {version}: the same step, {threads} threads; median s/step")
print(f"{'CLIP precision':14} {'peer':44} {'s/step':>7} {'peer/ours':>9}")
for prec in os.environ["PRECISIONS"].split():
    mine = ours[f"{prec}_step_s"]
    rows = [(("guided-diffusion code (reference.py)" + (" +compile" if p["compiled"] else "")), p["step_s"])
            for p in peers if p["precision"] == prec]
    fastest = min(v for name, v in rows if "compile" not in name)
    for name, v in rows:
        print(f"{prec:14} {name:44} {v:7.3f} {v / mine:9.2f}")
    print(f"{prec:14} {'ours (libtorch ' + version + ')':44} {mine:7.3f} {fastest / mine:9.2f}  <- against the eager peer")
print("peer/ours: the peer's seconds over ours (higher: we are faster); the UNet is fp32 on both sides.")
PY
