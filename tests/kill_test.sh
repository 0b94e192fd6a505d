#!/usr/bin/env bash
# Nothing lost: `generate` (PNG, sidecar, resume state, frames, JSONL log), `rerank` (copies, links, HTML
# report, embedding cache) and `index` (partitions) killed with SIGKILL at random moments. Every output that exists afterwards must be
# whole: PNGs pass their CRCs and decompress to the full image, JSON parses, every log line parses, copies equal
# their sources, the report ends with </html>, and the cache gives back what a cold run computes.
source "$(dirname "$0")/common.sh"
pass=0
failed=0
check() { if eval "$2"; then pass=$((pass + 1)); else failed=$((failed + 1)); echo "FAIL: $1"; fi; }

source "$(dirname "$0")/fixture_models.sh"
read -r clip heads < <(fixture_vit_clip)
read -r ckpt _ < <(fixture_vqgan)
model=(--text-heads "$heads" --vocab "$vocab")

# Checks every file under a folder by kind; prints what is broken.
cat >"$tmp/whole.py" <<'PY'
import json, os, struct, sys, zlib
bad = []
for root, _, files in os.walk(sys.argv[1]):
    for f in files:
        p = os.path.join(root, f)
        if ".tmp." in f:  # an abandoned temporary: never the file itself
            continue
        b = open(p, "rb").read()
        try:
            if f.endswith(".png"):
                assert b[:8] == b"\x89PNG\r\n\x1a\n", "signature"
                i, idat, w, h = 8, b"", 0, 0
                while i < len(b):
                    n, kind = struct.unpack(">I", b[i:i + 4])[0], b[i + 4:i + 8]
                    assert struct.unpack(">I", b[i + 8 + n:i + 12 + n])[0] == zlib.crc32(b[i + 4:i + 8 + n]), "crc"
                    if kind == b"IHDR": w, h = struct.unpack(">II", b[i + 8:i + 16])
                    if kind == b"IDAT": idat += b[i + 8:i + 8 + n]
                    i += 12 + n
                assert kind == b"IEND", "no IEND"
                assert len(zlib.decompress(idat)) == h * (1 + 3 * w), "pixels"
            elif f.endswith(".json"):
                json.loads(b)
            elif f.endswith(".jsonl"):
                assert b == b"" or b.endswith(b"\n"), "torn last line"
                [json.loads(l) for l in b.splitlines()]
            elif f.endswith(".html"):
                assert b.rstrip().endswith(b"</html>"), "cut short"
            elif f.endswith(".safetensors"):
                n = struct.unpack("<Q", b[:8])[0]
                h = json.loads(b[8:8 + n])
                end = max([v["data_offsets"][1] for k, v in h.items() if k != "__metadata__"] + [0])
                assert len(b) == 8 + n + end, "size"
        except Exception as e:
            bad.append(f"{p}: {e!r}")
print("\n".join(bad))
PY
whole() { local out; out=$(python3 "$tmp/whole.py" "$1"); [ -z "$out" ] || { echo "$out"; return 1; }; }

# Runs a command in the background and SIGKILLs it after a random 0.2-2.5 s (or lets it finish).
kill_randomly() {
  "$@" >/dev/null 2>&1 &
  local pid=$!
  sleep "$(python3 -c 'import random; print(round(random.uniform(0.2, 2.5), 2))')"
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}

rounds=${KILL_ROUNDS:-6}
mkdir -p "$tmp/gen/frames"
for round in $(seq "$rounds"); do
  kill_randomly "$bin" generate -p "a red circle" --clip-model "$fx/clip/$clip" "${model[@]}" --vqgan-checkpoint "$fx/vqgan/$ckpt" \
    --cutn 4 --threads 1 --size 32x32 --steps 400 --save-every 1 --frames "$tmp/gen/frames" --log "$tmp/gen/run.jsonl" \
    --seed "$round" -o "$tmp/gen/out.png"
  check "generate, kill $round: every output whole" "whole '$tmp/gen'"
done

mkdir -p "$tmp/imgs"
for i in $(seq 40); do
  for f in "$fx"/clip/${clip%%.*}.images/*.png; do cp "$f" "$tmp/imgs/$i-$(basename "$f")"; done
done
mkdir -p "$tmp/rr"
for round in $(seq "$rounds"); do
  if [ $((round % 2)) -eq 0 ]; then dest=(--copy-to "$tmp/rr/copies"); else dest=(--link-to "$tmp/rr/links"); fi
  kill_randomly "$bin" rerank -m "$fx/clip/$clip" "${model[@]}" -p "a red backpack" "$tmp/imgs" "${dest[@]}" \
    --html "$tmp/rr/report.html" --cache "$tmp/cache" --batch-size 4 --format csv
  check "rerank, kill $round: every output whole" "whole '$tmp/rr'"
  if [ -d "$tmp/rr/copies" ]; then
    check "rerank, kill $round: copies equal their sources" \
      "for c in '$tmp'/rr/copies/*.png; do [ -e \"\$c\" ] || continue; n=\$(basename \"\$c\"); cmp -s \"\$c\" '$tmp/imgs/'\"\${n#*-}\" || exit 1; done"
  fi
done
# The cache after all the kills gives what a cold run computes.
"$bin" rerank -m "$fx/clip/$clip" "${model[@]}" -p "a red backpack" "$tmp/imgs" --format csv >"$tmp/cold.csv" 2>/dev/null
"$bin" rerank -m "$fx/clip/$clip" "${model[@]}" -p "a red backpack" "$tmp/imgs" --cache "$tmp/cache" --format csv \
  >"$tmp/warm.csv" 2>"$tmp/warm.err"
# Cached embeddings were computed in batches of 4, the cold run's in batches of 32: the same up to float rounding, so
# scores agree to 1e-5 and the ranking is the same wherever neighbours differ by more than that.
cat >"$tmp/same_ranking.py" <<'PY'
import csv, sys
cold, warm = (list(csv.DictReader(open(p))) for p in sys.argv[1:3])
assert len(cold) == len(warm) > 0, (len(cold), len(warm))
score = {r["image"]: float(r["score"]) for r in cold}
assert all(abs(score[r["image"]] - float(r["score"])) < 1e-5 for r in warm), "scores differ"
assert all(w["image"] == c["image"] or abs(score[w["image"]] - score[c["image"]]) < 2e-5 for w, c in zip(warm, cold)), \
    "ranking differs"
PY
check "the cache survives the kills: same ranking as a cold run" "python3 '$tmp/same_ranking.py' '$tmp/cold.csv' '$tmp/warm.csv'"
check "no cache entry reported corrupt" "! grep -q corrupt '$tmp/warm.err'"

# index: killed at random, then run again to the end: every partition the same bytes as an uninterrupted run's (a
# partition is renamed into place whole, metadata last, and a re-run skips those that are there).
for round in $(seq "$rounds"); do
  kill_randomly "$bin" index -m "$fx/clip/$clip" "${model[@]}" "$tmp/imgs" --out "$tmp/ix" --output-partition-count 8 \
    --batch-size 4 --no-index
done
"$bin" index -m "$fx/clip/$clip" "${model[@]}" "$tmp/imgs" --out "$tmp/ix" --output-partition-count 8 --batch-size 4 \
  >/dev/null 2>&1
"$bin" index -m "$fx/clip/$clip" "${model[@]}" "$tmp/imgs" --out "$tmp/ix-clean" --output-partition-count 8 \
  --batch-size 4 >/dev/null 2>&1
check "index, killed $rounds times and run again: the partitions of an uninterrupted run" \
  "for f in img_emb/img_emb_{0..7}.npy metadata/metadata_{0..7}.parquet; do cmp -s '$tmp/ix/'\$f '$tmp/ix-clean/'\$f || exit 1; done"
echo "kill: $pass passed, $failed failed"
[ "$failed" -eq 0 ]
