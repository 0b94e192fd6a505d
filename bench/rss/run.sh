#!/usr/bin/env bash
# Memory over a long run: samples the resident set size (VmRSS) every 5 s of `clipguide generate` (VQGAN+CLIP on
# the fixture models, a frame, the PNG and a log line every step), `clipguide score` (thousands of image files
# streamed through decoding and the model, rows streamed out), `clipguide rerank` (the same files, ranked at the
# end, so it keeps one score and path per image) and `rerank --top 10` (keeps only the best), and prints RSS after
# warm-up, at the end, the growth and the RSS at each tenth of the run.
#   bench/rss/run.sh [SECONDS_PER_RUN [generate|score|rerank|rerank-top ...]]     default: 600 s, all four
set -euo pipefail
cd "$(dirname "$0")/../.."
export CLIPGUIDE_FIXTURES=${CLIPGUIDE_FIXTURES:-$PWD/../shared/fixtures}
seconds=${1:-600}
shift || true
runs=("$@")
[ ${#runs[@]} -gt 0 ] || runs=(generate score rerank rerank-top)
fx=$CLIPGUIDE_FIXTURES
bin=build/clipguide
[ -x "$bin" ] || scripts/setup >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
source tests/fixture_models.sh
read -r clip heads < <(fixture_vit_clip)
read -r ckpt _ < <(fixture_vqgan)
model=(--text-heads "$heads" --vocab "$fx/tokenizer/bpe_simple_vocab_16e6.txt.gz")

# Runs a command for at most $seconds, sampling its RSS (MiB) every 5 s into $tmp/NAME.rss.
sample() {
  local name=$1
  shift
  "$@" >/dev/null 2>"$tmp/$name.err" &
  local pid=$! t=0
  while kill -0 "$pid" 2>/dev/null && [ "$t" -lt "$seconds" ]; do
    awk -v t="$t" '/^VmRSS:/ {printf "%d %.1f\n", t, $2 / 1024}' "/proc/$pid/status" >>"$tmp/$name.rss" 2>/dev/null || true
    sleep 5
    t=$((t + 5))
  done
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

run_generate() {
  mkdir -p "$tmp/frames"
  sample generate "$bin" generate -p "a red circle on a blue background" --clip-model "$fx/clip/$clip" "${model[@]}" \
    --vqgan-checkpoint "$fx/vqgan/$ckpt" --size 64x64 --cutn 8 --threads 1 --steps 1000000 --save-every 1 \
    --frames "$tmp/frames" --log "$tmp/run.jsonl" -o "$tmp/out.png"
  work[generate]="$(wc -l <"$tmp/run.jsonl") steps, a frame, the PNG and a log line each"
  rm -rf "$tmp/frames"
}

# Uncached, so every file is decoded, preprocessed and encoded; the folder is listed several times over to fill
# the time (a few hundred files a second on 2 cores).
images() {
  [ -d "$tmp/imgs" ] && return
  mkdir -p "$tmp/imgs"
  for i in $(seq 1000); do
    for f in "$fx"/clip/${clip%%.*}.images/*.png; do ln -s "$f" "$tmp/imgs/$i-$(basename "$f")"; done
  done
}
run_images() {
  local name=$1 command=$2
  shift 2
  images
  local reps=$((seconds / 10 + 1)) dirs=()
  for i in $(seq "$reps"); do dirs+=("$tmp/imgs"); done
  sample "$name" "$bin" "$command" -m "$fx/clip/$clip" "${model[@]}" -p "a red backpack" "${dirs[@]}" \
    --batch-size 16 --workers 2 --format csv "$@"
  work[$name]="up to $reps x $(ls "$tmp/imgs" | wc -l) files, uncached $*"
}

declare -A work
for r in "${runs[@]}"; do
  case "$r" in
    generate) run_generate ;;
    score|rerank) run_images "$r" "$r" ;;
    rerank-top) run_images "$r" rerank --top 10 ;;
    *) echo "unknown run '$r' (generate, score, rerank, rerank-top)" >&2; exit 1 ;;
  esac
done

report() {
  python3 - "$1" "$2" "$3" <<'PY'
import sys
name, path, what = sys.argv[1:4]
rows = [tuple(map(float, l.split())) for l in open(path)]
warm = [r for r in rows if r[0] >= 30] or rows
t0, r0 = warm[0]; t1, r1 = warm[-1]
peak = max(r for _, r in rows)
tenths = [min(rows, key=lambda r: abs(r[0] - t1 * k / 10))[1] for k in range(1, 11)]
print(f"| {name} | {what} | {t1:.0f} s | {r0:.1f} | {r1:.1f} | {peak:.1f} | {r1 - r0:+.1f} | {' '.join(f'{x:.0f}' for x in tenths)} |")
PY
}
echo "| run | work | sampled for | RSS after 30 s (MiB) | RSS at end (MiB) | peak (MiB) | growth (MiB) | RSS at each tenth (MiB) |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for r in "${runs[@]}"; do report "$r" "$tmp/$r.rss" "${work[$r]}"; done
