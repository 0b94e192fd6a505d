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

"$py" - "$work" <<'PY'
import json, sys
work = sys.argv[1]
ours2, ours, peer = (json.load(open(f"{work}/{n}.json")) for n in ("ours.torch2", "ours", "peer"))
version = peer["torch"].split("+")[0]
print(f"bench/sd: SD 1.5 shapes ({ours2['unet_parameters'] / 1e6:.0f}M-parameter UNet), {peer['size']}x{peer['size']}, "
      f"DDIM, {peer['threads']} threads, CLIP ViT-B/32 shape x{peer['cutn']} cutouts; median s/step")
print(f"{'step':34} {'diffusers':>9} {'ours 2.x':>9} {'ratio':>6} {'ours 1.13':>9} {'ratio':>6}")
def row(name, mine, theirs_key):
    theirs = peer[theirs_key]
    print(f"{name:34} {theirs:9.3f} {ours2[mine]:9.3f} {theirs / ours2[mine]:6.2f} {ours[mine]:9.3f} {theirs / ours[mine]:6.2f}")
row("CFG step (target 1.2x)", "cfg_step_s", "cfg_step_s")
if "cfg_bf16_step_s" in ours2:
    theirs, mine = peer["cfg_bf16_step_s"], ours2["cfg_bf16_step_s"]
    print(f"{'CFG step, UNet bf16 (both)':34} {theirs:9.3f} {mine:9.3f} {theirs / mine:6.2f} {'-':>9} {'-':>6}")
row("CLIP-guided step (target 1.3x)", "guided_step_s", "guided_step_s")
row("  ours decoder-only", "decoder_only_step_s", "guided_step_s")
row("  ours decoder checkpointed", "checkpointed_step_s", "guided_step_s")
k = 4
every = lambda o: (o["guided_step_s"] + (k - 1) * o["cfg_step_s"]) / k
theirs = (peer["guided_step_s"] + (k - 1) * peer["cfg_step_s"]) / k
print(f"{'  guided every 4th (per step, both)':34} {theirs:9.3f} {every(ours2):9.3f} {theirs / every(ours2):6.2f} "
      f"{every(ours):9.3f} {theirs / every(ours):6.2f}")
print(f"ratio: diffusers' seconds (torch {version}) over ours; every-4th is computed from the two measured steps.")
PY
