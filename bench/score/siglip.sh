#!/usr/bin/env bash
# bench/score/siglip.sh: `clipguide score` on a SigLIP against transformers' SiglipModel (its PIL image processor,
# SentencePiece tokenizer, get_image_features), same machine, same images, same thread count, the same precision.
# The model has So400m's widths with random weights (LAYERS a tower, default 8 of So400m's 27, to keep a run short),
# written by transformers as a Hugging Face folder; 16 mixed PNG/JPEG images; 4 prompts. Prints images/s and ratios,
# and the largest score difference between the two sides.
source "$(dirname "$0")/../common.sh"
setup_torch2
work=build/bench/siglip
layers=${LAYERS:-8}
mkdir -p "$work"
[ -s "$work/model/model.safetensors" ] ||
  "$vpy" bench/score/siglip.py make "$work/model" tests/data/families/siglip/spiece.model "$layers" >/dev/null 2>&1
"$vpy" bench/score/make_images.py "$work/images" 16
printf '%s\n' "a photo of a dog" "a red backpack on a table" "an oil painting of a lighthouse" "a crowded beach" >"$work/prompts.txt"
images=("$work"/images/*)
for precision in $PRECISIONS; do
  for bin in build build-torch2; do
    "$bin"/clipguide score -m "$work/model" --prompts-file "$work/prompts.txt" --precision "$precision" \
      --threads "$threads" --format jsonl --stats "${images[@]}" >"$work/ours-$bin-$precision.jsonl" 2>"$work/ours-$bin-$precision.stats"
  done
done
"$vpy" bench/score/siglip.py score "$work/model" "$threads" "$work/prompts.txt" "${images[@]}" >"$work/transformers.jsonl"

"$vpy" - "$work" "$threads" "$layers" <<'PY'
import json, os, sys
work, threads, layers = sys.argv[1:4]
peer = {r["precision"]: r for r in map(json.loads, open(f"{work}/transformers.jsonl"))}
prompts = [l.rstrip("\n") for l in open(f"{work}/prompts.txt") if l.strip()]
print(f"bench/score/siglip: So400m widths, {layers} layers a tower, {len(peer['fp32']['scores'])} images x "
      f"{len(prompts)} prompts, {threads} threads, transformers on torch {peer['fp32']['torch']}")
print(f"{'precision':9} {'transformers img/s':>18} {'ours (1.13) img/s':>18} {'ratio':>6} {'ours (2.x) img/s':>17} {'ratio':>6} {'max |score diff|':>17}")
for prec, p in peer.items():
    row = [f"{prec:9}", f"{p['images_per_s']:18.2f}"]
    for bin in ("build", "build-torch2"):
        stats = json.loads(open(f"{work}/ours-{bin}-{prec}.stats").read().strip().splitlines()[-1])
        row += [f"{stats['images_per_s']:{18 if bin == 'build' else 17}.2f}", f"{stats['images_per_s'] / p['images_per_s']:6.2f}"]
    ours = [json.loads(l) for l in open(f"{work}/ours-build-torch2-{prec}.jsonl") if l.startswith("{") and '"score"' in l]
    ours = [r for r in ours if "image" in r]
    names = sorted({r["image"] for r in ours})
    diff = max(abs(r["score"] - p["scores"][names.index(r["image"])][prompts.index(r["prompt"])]) for r in ours)
    row.append(f"{diff:17.2e}")
    print(" ".join(row))
PY
