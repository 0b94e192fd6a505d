#!/usr/bin/env bash
# bench/score: `clipguide score` against the reference Python way (PIL + torchvision preprocessing and a
# straightforward PyTorch CLIP, Debian's python3-torch), same machine, same images, same thread count.
# Full-size ViT-B/32 and RN50 with random weights, written by our own code; 64 mixed PNG/JPEG images of
# 640x480 and larger; 4 prompts. Prints images/s, ratios, bf16 score drift and GFLOP/s against measured peaks.
source "$(dirname "$0")/../common.sh" python3-torch python3-torchvision python3-pil python3-numpy
work=build/bench/score
mkdir -p "$work/images"
[ -s "$work/vitb32.safetensors" ] || build/bench/bench_make_clip ViT-B/32 "$work/vitb32.safetensors" >/dev/null
[ -s "$work/rn50.safetensors" ] || build/bench/bench_make_clip RN50 "$work/rn50.safetensors" >/dev/null
"$py" bench/score/make_images.py "$work/images" 64
printf '%s\n' "a photo of a dog" "a red backpack on a table" "an oil painting of a lighthouse" "a crowded beach" >"$work/prompts.txt"
build/clipguide tokenize --vocab "$vocab" --file "$work/prompts.txt" | "$py" -c "import sys,json; print(json.dumps([json.loads(l) for l in sys.stdin]))" >"$work/tokens.json"
images=("$work"/images/*)

for arch in vitb32 rn50; do
  model=$work/$arch.safetensors
  for precision in $PRECISIONS; do
    build/clipguide score -m "$model" --vocab "$vocab" --prompts-file "$work/prompts.txt" --precision "$precision" \
      --format jsonl --stats "${images[@]}" >"$work/$arch-$precision.jsonl" 2>"$work/$arch-$precision.stats"
  done
  "$py" bench/score/reference.py "$model" "$work/tokens.json" "$threads" "${images[@]}" >"$work/$arch-python.json"
done

# Today's peers on PyTorch 2.x and our build against the same libtorch.
setup_torch2
for arch in vitb32 rn50; do
  model=$work/$arch.safetensors
  for precision in $PRECISIONS; do
    "$bin2"/clipguide score -m "$model" --vocab "$vocab" --prompts-file "$work/prompts.txt" --precision "$precision" \
      --format jsonl --stats "${images[@]}" >"$work/$arch-$precision.torch2.jsonl" 2>"$work/$arch-$precision.torch2.stats"
  done
  "$vpy" bench/score/reference.py "$model" "$work/tokens.json" "$threads" "${images[@]}" >"$work/$arch-python.torch2.json"
  "$vpy" bench/score/peers.py "$model" "$work/tokens.json" "$threads" ${compile[@]+"${compile[@]}"} "${images[@]}" >"$work/$arch-peers.jsonl"
done

"$py" - "$work" "$threads" <<'PY'
import json, os, sys
work, threads = sys.argv[1], sys.argv[2]
precs = os.environ["PRECISIONS"].split()
print(f"bench/score: {len(json.load(open(f'{work}/vitb32-python.json'))['scores'])} images x 4 prompts, {threads} threads")
print(f"{'model':8} {'python img/s':>12} {'ours fp32':>10} {'ratio':>6} {'ours bf16':>10} {'ratio':>6} {'bf16 drift':>10} "
      f"{'fp32 vs py':>10} {'GFLOP/s fp32':>13} {'bf16':>6}")
for arch in ("vitb32", "rn50"):
    ref = json.load(open(f"{work}/{arch}-python.json"))
    stats = {p: json.loads(open(f"{work}/{arch}-{p}.stats").read().strip().splitlines()[-1]) for p in precs}
    rows = {p: [json.loads(l)["score"] for l in open(f"{work}/{arch}-{p}.jsonl") if '"score"' in l] for p in precs}
    py = [s for row in ref["scores"] for s in row]
    parity = max(abs(a - b) for a, b in zip(rows["fp32"], py))
    gf = lambda ips: ref["flops_per_image"] * ips / 1e9
    ips = {p: stats[p]["images_per_s"] for p in precs}
    if "bf16" in ips:
        drift = max(abs(a - b) for a, b in zip(rows["fp32"], rows["bf16"]))
        bf16 = (f"{ips['bf16']:10.2f} {ips['bf16'] / ref['images_per_s']:6.2f} {drift:10.4f}",
                f"{gf(ips['bf16']):6.1f}/{ref['peak_bf16_gflops']:.0f}")
    else:
        bf16 = (f"{'-':>10} {'-':>6} {'-':>10}", f"{'-':>6}")
    print(f"{arch:8} {ref['images_per_s']:12.2f} {ips['fp32']:10.2f} {ips['fp32'] / ref['images_per_s']:6.2f} {bf16[0]} "
          f"{parity:10.2e} {gf(ips['fp32']):7.1f}/{ref['peak_fp32_gflops']:.0f} {bf16[1]}")
print("ratio: ours / python images per second (decode + preprocess + encode + score, model load excluded);")
print("bf16 drift: max |score_bf16 - score_fp32|; fp32 vs py: max |our fp32 score - python score|;")
print("GFLOP/s: achieved on the visual tower / measured torch.mm peak (2048x2048) at that precision.")
PY

"$py" - "$work" "$threads" <<'PY'
import json, os, sys
work, threads = sys.argv[1], sys.argv[2]
print(f"\nbench/score on today's PyTorch: the same images, prompts and weights, {threads} threads, images/s")
print(f"{'model':7} {'precision':9} {'peer':42} {'img/s':>7} {'ours/peer':>9}")
for arch in ("vitb32", "rn50"):
    plain = json.load(open(f"{work}/{arch}-python.torch2.json"))
    peers = [json.loads(l) for l in open(f"{work}/{arch}-peers.jsonl")]
    for prec in os.environ["PRECISIONS"].split():
        ours = json.loads(open(f"{work}/{arch}-{prec}.torch2.stats").read().strip().splitlines()[-1])["images_per_s"]
        rows = [(f"plain PyTorch {plain.get('torch', '2.x')} (reference.py)", plain["images_per_s"])] if prec == "fp32" else []
        rows += [(p["peer"] + " " + p["torch"].split("+")[0] if "compile" not in p["peer"] else p["peer"], p["images_per_s"])
                 for p in peers if p["precision"] == prec]
        eager = max(v for name, v in rows if "compile" not in name)
        for name, v in rows:
            print(f"{arch:7} {prec:9} {name:42} {v:7.2f} {ours / v:9.2f}")
        print(f"{arch:7} {prec:9} {'ours (libtorch ' + peers[0]['torch'].split('+')[0] + ')':42} {ours:7.2f} "
              f"{ours / eager:9.2f}  <- against the fastest eager peer")
print("ours/peer: our images/s over the peer's (higher is faster); +compile rows are torch.compile (a reference).")
PY
