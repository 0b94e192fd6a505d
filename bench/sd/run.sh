#!/usr/bin/env bash
# bench/sd: Stable Diffusion 1.5's UNet and VAE shapes with random weights (bench/sd/make_models.py, diffusers' own
# classes), SIZE x SIZE images (default 256; SIZE=512 for SD's own, about four times longer), DDIM, the thread count
# of bench/common.sh (THREADS, default every CPU). Times one classifier-free guidance step and one CLIP-guided step
# (ViT-B/32 shape, 4 cutouts, scale 100) in clipguide, on today's libtorch (build-torch2) and on Debian's, against
# diffusers on the venv's torch with the same weights (bench/sd/peer.py: its pipeline's UNet for the CFG step, the
# community clip_guided_stable_diffusion pipeline's cond_fn for the guided one). Targets: the CFG step at least 1.2x,
# the guided step at least 1.3x diffusers on the same torch. STEPS: timed steps after one warm-up (default 3). Where
# PRECISIONS has bf16 (bench/common.sh: CPUs with bf16 units), the CFG step is timed with the UNet in bf16 too,
# under autocast on both sides (the Debian build leaves bf16 out).
source "$(dirname "$0")/../common.sh"
setup_torch2
size=${SIZE:-256}
steps=${STEPS:-3}
work=build/bench/sd
vocab_dir=$fixtures/tokenizer/hf-tokenizer
mkdir -p "$work"
"$vpy" bench/sd/make_models.py "$work/models" "$vocab_dir" >/dev/null
bf16=()
[[ " $PRECISIONS " == *" bf16 "* ]] && bf16=(--bf16)
"$bin2"/bench/bench_sd "$work/models" "$vocab_dir" "$size" "$steps" ${bf16[@]+"${bf16[@]}"} >"$work/ours.torch2.json"
build/bench/bench_sd "$work/models" "$vocab_dir" "$size" "$steps" >"$work/ours.json"
"$vpy" bench/sd/peer.py "$work/models" "$size" "$steps" "$threads" ${bf16[@]+"${bf16[@]}"} >"$work/peer.json"
# diffusers again with glibc's malloc set as our CLI sets it (core/device.h keep_freed_memory), through glibc's
# own variables: how much of the ratio is that setting, and how much the rest.
MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 \
  "$vpy" bench/sd/peer.py "$work/models" "$size" "$steps" "$threads" ${bf16[@]+"${bf16[@]}"} >"$work/peer.kept.json"

"$py" - "$work" <<'PY'
import json, sys
work = sys.argv[1]
ours2, ours, peer, kept = (json.load(open(f"{work}/{n}.json")) for n in ("ours.torch2", "ours", "peer", "peer.kept"))
version = peer["torch"].split("+")[0]
print(f"bench/sd: SD 1.5 shapes ({ours2['unet_parameters'] / 1e6:.0f}M-parameter UNet), {peer['size']}x{peer['size']}, "
      f"DDIM, {peer['threads']} threads, CLIP ViT-B/32 shape x{peer['cutn']} cutouts; median s/step")
print(f"{'step':34} {'diffusers':>9} {'kept':>6} {'ours 2.x':>9} {'ratio':>6} {'kept':>6} {'ours 1.13':>9} {'ratio':>6}")
def row(name, mine, theirs_key, o2=ours2, o1=ours):
    theirs, theirs_kept = peer[theirs_key], kept[theirs_key]
    m1 = f"{o1[mine]:9.3f} {theirs / o1[mine]:6.2f}" if o1 else f"{'-':>9} {'-':>6}"
    print(f"{name:34} {theirs:9.3f} {theirs_kept:6.2f} {o2[mine]:9.3f} {theirs / o2[mine]:6.2f} "
          f"{theirs_kept / o2[mine]:6.2f} {m1}")
row("CFG step (target 1.2x)", "cfg_step_s", "cfg_step_s")
if "cfg_bf16_step_s" in ours2:
    row("CFG step, UNet bf16 (both)", "cfg_bf16_step_s", "cfg_bf16_step_s", o1=None)
row("CLIP-guided step (target 1.3x)", "guided_step_s", "guided_step_s")
row("  ours decoder-only", "decoder_only_step_s", "guided_step_s")
row("  ours decoder checkpointed", "checkpointed_step_s", "guided_step_s")
k = 4
for o in (ours2, ours, peer, kept):  # a guided step, then k - 1 CFG steps
    o["every_s"] = (o["guided_step_s"] + (k - 1) * o["cfg_step_s"]) / k
row("  guided every 4th (per step, both)", "every_s", "every_s")
print(f"ratio: diffusers' seconds (torch {version}) over ours; kept: diffusers with glibc's malloc keeping freed "
      "memory, as our CLI runs (its seconds, then its ratio); every-4th is computed from the two measured steps.")
PY
