#!/usr/bin/env bash
# bench/toyworld: how well the bundled toy-world models do their jobs, measured without CLIP where CLIP is judged.
#   1. zero-shot classification of 1,000 fresh renders (colour, shape, background; colour+shape on held-out pairs)
#      and reranking one render of each of the 48 colour+shape classes by each class's prompt (library, one pass);
#   2. the same reranking through the CLI: `clipguide rerank` over the 48 PNGs, once per class prompt;
#   3. guided generation: `clipguide generate` with its defaults (the bundled models) for 24 single-object prompts,
#      once with each bundled generator (VQGAN, diffusion), each image judged by the pixel judge
#      (`clipguide_toyworld judge`), against the same runs with the prompt's weight set to 0 and one candidate (the
#      baseline: no CLIP in the loop).
# PROMPTS=N runs only the first N of the 24 prompts. Results go to build/bench-toyworld/.
source "$(dirname "$0")/../common.sh"
out=build/bench-toyworld
rm -rf "$out"
mkdir -p "$out/classes"
colours=(red green blue yellow purple orange white black)
shapes=(circle square triangle star ring cross)

echo "== zero-shot and reranking, 1000 fresh renders (seed 2026)"
build/clipguide_toyworld eval --images 1000 --seed 2026 | tee "$out/eval.json"

echo "== reranking through the CLI: 48 class renders, one rerank per class prompt"
build/clipguide_toyworld render --classes --out "$out/classes" --seed 2027
right=0
for c in "${colours[@]}"; do
  for s in "${shapes[@]}"; do
    build/clipguide rerank -p "a $c $s" "$out/classes" --top 1 --format jsonl 2>/dev/null \
      | grep -q "\"image\":\"[^\"]*/$c-$s.png\"" && right=$((right + 1))
  done
done
echo "{\"cli_rerank_top1\": $right, \"classes\": 48}" | tee "$out/cli_rerank.json"

# generation NAME ARGS...: the 24 prompts through `clipguide generate` with its defaults plus ARGS, guided and with the
# prompt's weight set to 0 and one candidate (the generator's unguided output: the baseline), every image judged by
# pixels. seconds_per_image: the guided runs' wall time per prompt, all of a run's candidates included.
n=${PROMPTS:-24}
generation() {
  local name=$1
  shift
  echo "== guided generation, $n prompts, generate's defaults with $*"
  mkdir -p "$out/$name/guided" "$out/$name/unguided"
  : >"$out/$name/prompts.tsv"
  local guided_s=0 start
  for i in $(seq 0 $((n - 1))); do
    c=${colours[$((i % 8))]}
    s=${shapes[$((i % 6))]}
    b=${colours[$(((i % 8 + 1 + i / 8) % 8))]}
    prompt="a $c $s on a $b background"
    printf '%s\t%s\t%s\t%s\n' "$i" "$c" "$s" "$b" >>"$out/$name/prompts.tsv"
    start=$(date +%s.%N)
    build/clipguide generate -p "$prompt" --seed $((100 + i)) -o "$out/$name/guided/$i.png" "$@" >/dev/null 2>>"$out/generate.log"
    guided_s=$(awk -v s="$guided_s" -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { print s + b - a }')
    build/clipguide generate -p "$prompt:0" --seed $((100 + i)) -n 1 -o "$out/$name/unguided/$i.png" "$@" >/dev/null 2>>"$out/generate.log"
  done
  build/clipguide_toyworld judge "$out/$name"/guided/*.png >"$out/$name/guided.jsonl"
  build/clipguide_toyworld judge "$out/$name"/unguided/*.png >"$out/$name/unguided.jsonl"
  python3 - "$out/$name" "$name" "$n" "$guided_s" <<'PY'
import json, os, sys
out, name, n, guided_s = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
truth = {}
for line in open(os.path.join(out, "prompts.tsv")):
    i, c, s, b = line.split()
    truth[i] = (c, s, b)
result = {"generator": name, "prompts": n, "seconds_per_image": round(guided_s / n, 2)}
for kind in ("guided", "unguided"):
    bg = colour = shape = 0
    for line in open(os.path.join(out, kind + ".jsonl")):
        j = json.loads(line)
        c, s, b = truth[os.path.basename(j["image"])[:-4]]
        bg += j["background"] == b
        colour += j.get("colour") == c
        shape += j.get("shape") == s
    result[kind] = {"background": bg / n, "colour": colour / n, "shape": shape / n}
print(json.dumps(result))
json.dump(result, open(os.path.join(out, "generate.json"), "w"))
PY
  echo "images in $out/$name/guided and $out/$name/unguided"
}
# The default generator first (jobs/bundled.cpp: bundled_generator), then the other.
generation diffusion --generator diffusion
generation vqgan --generator vqgan
