#!/usr/bin/env bash
# End-to-end checks of the clipguide binary: every fixture format through info/embed/tokenize, and bad input
# giving one line on stderr, a non-zero exit and no output file.
source "$(dirname "$0")/common.sh"

# expect_fail NAME CMD...: non-zero exit, exactly one line on stderr, nothing on stdout.
expect_fail() {
  local name=$1; shift
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  local lines
  lines=$(wc -l <"$tmp/err")
  if [ "$rc" -ne 0 ] && [ "$lines" -eq 1 ] && [ ! -s "$tmp/out" ] && [ "$rc" -lt 128 ]; then ok; else
    bad "$name: rc=$rc stderr lines=$lines: $(head -c 300 "$tmp/err")"; fi
}

# Every model file in the manifest loads and reports its architecture.
models=$(python3 -c "import json,sys; m=json.load(open(sys.argv[1]))['models']; print(' '.join(f for n in m for f in m[n]['files'] if '.reference.' not in f))" "$fx/clip/clip-manifest.json")
for f in $models; do
  if "$bin" info "$fx/clip/$f" --json >"$tmp/info.json" 2>"$tmp/err" && grep -q '"sha256"' "$tmp/info.json" \
     && grep -q '"architecture"' "$tmp/info.json"; then ok; else bad "info $f: $(cat "$tmp/err")"; fi
  img=$(ls "$fx"/clip/*.images/exact-0.png | head -1)
  if "$bin" embed --model "$fx/clip/$f" --vocab "$vocab" --image "$img" --text "a red backpack" --normalize \
       --format jsonl >"$tmp/e.jsonl" 2>"$tmp/err" && [ "$(wc -l <"$tmp/e.jsonl")" -eq 2 ] \
       && grep -q '"type":"image"' "$tmp/e.jsonl" && grep -q '"type":"text"' "$tmp/e.jsonl"; then ok; else
    bad "embed jsonl $f: $(cat "$tmp/err")"; fi
done

first=$(echo "$models" | awk '{print $1}')
img=$(ls "$fx"/clip/*.images/exact-0.png | head -1)
"$bin" embed -m "$fx/clip/$first" --vocab "$vocab" --image "$img" --text x --format npy -o "$tmp/e.npy" 2>"$tmp/err" \
  && head -c 6 "$tmp/e.npy" | grep -q NUMPY && ok || bad "embed npy: $(cat "$tmp/err")"
"$bin" embed -m "$fx/clip/$first" --vocab "$vocab" --image "$img" --format safetensors -o "$tmp/e.st" 2>"$tmp/err" \
  && grep -aq image_embeddings "$tmp/e.st" && ok || bad "embed safetensors: $(cat "$tmp/err")"
out=$("$bin" tokenize --vocab "$vocab" "a photo of a cat" 2>"$tmp/err")
case "$out" in "[49406,"*) ok ;; *) bad "tokenize: $out $(cat "$tmp/err")" ;; esac
printf 'one\ntwo\n' >"$tmp/texts.txt"
[ "$("$bin" tokenize --vocab "$vocab" --file "$tmp/texts.txt" --context-length 8 | wc -l)" -eq 2 ] && ok || bad "tokenize --file"

# score: every image x every prompt; pairs with both means; rerank with rank-prefixed copies.
imgdir=$(dirname "$img")
n_img=$(ls "$imgdir"/*.png | wc -l)
"$bin" score -m "$fx/clip/$first" --vocab "$vocab" -p "a dog" -p "a cat" "$imgdir" --format jsonl >"$tmp/s.jsonl" 2>"$tmp/err"
[ "$(grep -c '"metric":"cosine"' "$tmp/s.jsonl")" -eq $((2 * n_img)) ] && ok || bad "score rows: $(cat "$tmp/err")"
"$bin" score -m "$fx/clip/$first" --vocab "$vocab" -p "a dog" "$img" --format csv | head -1 | grep -q '^score,image,prompt,metric$' && ok || bad "score csv"
"$bin" score -m "$fx/clip/$first" --vocab "$vocab" -p "a dog" -p "a cat" "$img" --metric probs --format json >"$tmp/s.json" \
  && python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert abs(sum(r['score'] for r in d['rows'])-1)<1e-5 and d['metric']=='probs'" "$tmp/s.json" \
  && ok || bad "score probs json"
cp -r "$imgdir" "$tmp/imgs"
printf 'image,prompt\nimgs/%s,a dog\n"imgs/%s","a cat, sleeping"\n' "$(basename "$img")" "$(basename "$img")" >"$tmp/pairs.csv"
"$bin" score -m "$fx/clip/$first" --vocab "$vocab" --pairs "$tmp/pairs.csv" --format jsonl >"$tmp/p.jsonl" 2>"$tmp/err" \
  && grep -q '"mean_torchmetrics"' "$tmp/p.jsonl" && grep -q '"mean_clipscore"' "$tmp/p.jsonl" \
  && [ "$(grep -c '"prompt"' "$tmp/p.jsonl")" -eq 2 ] && ok || bad "score --pairs: $(cat "$tmp/err")"
"$bin" rerank -m "$fx/clip/$first" --vocab "$vocab" -p "a dog" "$tmp/imgs" --top 2 --copy-to "$tmp/top" --format jsonl >"$tmp/r.jsonl" 2>"$tmp/err" \
  && [ "$(wc -l <"$tmp/r.jsonl")" -eq 2 ] && grep -q '"rank":1' "$tmp/r.jsonl" && [ "$(ls "$tmp/top" | wc -l)" -eq 2 ] \
  && ls "$tmp/top" | head -1 | grep -q '^1-' && ok || bad "rerank --copy-to: $(cat "$tmp/err")"
"$bin" rerank -m "$fx/clip/$first" --vocab "$vocab" --group-by "$tmp/pairs.csv" --format jsonl | grep -c '"group"' | grep -q '^2$' \
  && ok || bad "rerank --group-by"
"$bin" rerank -m "$fx/clip/$first" --vocab "$vocab" -p "a dog" "$tmp/imgs" --top 1 --link-to "$tmp/links" --format jsonl >/dev/null \
  && [ -L "$tmp/links/$(ls "$tmp/links")" ] && [ -s "$tmp/links/$(ls "$tmp/links")" ] && ok || bad "rerank --link-to"
# --copy-to/--link-to stay inside the target folder whatever the inputs are called: names climbing out with "..",
# absolute paths, and a planted symlink at a destination name pointing outside (replaced, never written through).
mkdir -p "$tmp/deep/a/b" "$tmp/outside" "$tmp/confined"
first_img=$(basename "$img")
printf 'image,prompt\n../../../imgs/%s,a dog\n%s,a dog\n' "$first_img" "$tmp/imgs/$first_img" >"$tmp/deep/a/b/pairs.csv"
echo "victim" >"$tmp/outside/victim"
ln -s "$tmp/outside/victim" "$tmp/confined/g001-1-$first_img"
touch "$tmp/planted"  # anything written from here on, outside confined/, is an escape
"$bin" rerank -m "$fx/clip/$first" --vocab "$vocab" --group-by "$tmp/deep/a/b/pairs.csv" --copy-to "$tmp/confined" --format jsonl \
  >/dev/null 2>"$tmp/err" \
  && [ "$(cat "$tmp/outside/victim")" = victim ] && [ "$(ls "$tmp/outside")" = victim ] && [ ! -L "$tmp/confined/g001-1-$first_img" ] \
  && cmp -s "$tmp/confined/g001-1-$first_img" "$img" && [ -z "$(find "$tmp" -newer "$tmp/planted" -type f \
     -not -path "$tmp/confined/*" -not -name err)" ] && ok || bad "rerank --copy-to confinement: $(cat "$tmp/err")"
printf 'image,prompt\nimgs/..,a dog\n' >"$tmp/dotdot.csv"
expect_fail copy-dotdot "$bin" rerank -m "$fx/clip/$first" --vocab "$vocab" --group-by "$tmp/dotdot.csv" --copy-to "$tmp/confined"
echo "not an image" >"$tmp/imgs/zz-broken.png"
"$bin" score -m "$fx/clip/$first" --vocab "$vocab" -p "a dog" "$tmp/imgs" --on-error skip --format jsonl >"$tmp/skip.jsonl" 2>"$tmp/err" \
  && grep -q "zz-broken.png" "$tmp/err" && [ "$(wc -l <"$tmp/skip.jsonl")" -eq "$n_img" ] && ok || bad "score --on-error skip"
expect_fail on-error-fail "$bin" score -m "$fx/clip/$first" --vocab "$vocab" -p "a dog" "$tmp/imgs/zz-broken.png" --format jsonl
expect_fail probs-pairs "$bin" score -m "$fx/clip/$first" --vocab "$vocab" --pairs "$tmp/pairs.csv" --metric probs
expect_fail bad-metric "$bin" score -m "$fx/clip/$first" --vocab "$vocab" -p x "$img" --metric f1
expect_fail bad-precision "$bin" score -m "$fx/clip/$first" --vocab "$vocab" -p x "$img" --precision fp8
printf 'image,prompt\n"unterminated,x\n' >"$tmp/badpairs.csv"
expect_fail bad-pairs "$bin" score -m "$fx/clip/$first" --vocab "$vocab" --pairs "$tmp/badpairs.csv"

# Ctrl-C: exit 130, and every row written is whole (complete batches only).
mkdir -p "$tmp/many"
python3 -c "import os,sys; [os.symlink(sys.argv[1], os.path.join(sys.argv[2], 'i%05d.png' % i)) for i in range(20000)]" "$img" "$tmp/many"
# SIGINT once the first rows are out (polled: a fixed delay is too short under the sanitizers, too long elsewhere).
python3 - "$tmp" "$bin" score -m "$fx/clip/$first" --vocab "$vocab" -p "a dog" "$tmp/many" --batch-size 16 --format jsonl <<'PY' \
  && ok || bad "Ctrl-C: $(cat "$tmp/err")"
import json, os, signal, subprocess, sys, time
tmp, cmd = sys.argv[1], sys.argv[2:]
out = os.path.join(tmp, "int.jsonl")
with open(out, "wb") as o, open(os.path.join(tmp, "err"), "wb") as e:
    p = subprocess.Popen(cmd, stdout=o, stderr=e)
    deadline = time.monotonic() + 300
    while os.path.getsize(out) == 0 and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    rc = p.wait(timeout=120)
lines = open(out).read().splitlines()
err = open(os.path.join(tmp, "err")).read()
rows = [json.loads(l) for l in lines]  # every row whole
if rc != 130 or not rows or len(rows) % 16 or "interrupted" not in err:
    sys.exit(f"rc={rc} rows={len(rows)}")
PY
rm -rf "$tmp/many"

# Bad input: one line, non-zero exit, no partial output file.
head -c 1000 "$fx/clip/$first" >"$tmp/cut.safetensors"
expect_fail truncated "$bin" info "$tmp/cut.safetensors"
: >"$tmp/empty.pt"
expect_fail empty "$bin" info "$tmp/empty.pt"
expect_fail missing "$bin" info "$tmp/nope.pt"
expect_fail unknown-name "$bin" info ViT-Q-99
echo "GIF89a" >"$tmp/bad.png"
expect_fail bad-image "$bin" embed -m "$fx/clip/$first" --image "$tmp/bad.png" --format npy -o "$tmp/never.npy"
[ ! -e "$tmp/never.npy" ] && ok || bad "partial output left behind"
expect_fail bad-utf8 "$bin" tokenize --vocab "$vocab" "$(printf 'bad \xff text')"
expect_fail too-long "$bin" tokenize --vocab "$vocab" --context-length 4 "one two three four five"
expect_fail bad-format "$bin" embed -m "$fx/clip/$first" --text x --format xml
expect_fail bad-device "$bin" embed -m "$fx/clip/$first" --text x --device tpu
expect_fail bad-flag "$bin" embed --no-such-flag
expect_fail no-vocab env HOME="$tmp" "$bin" embed -m "$fx/clip/$first" --text x
"$bin" --help >/dev/null && "$bin" embed --help | grep -q -- "--normalize" && ok || bad "help"

# The other families (tests/data/families): info names them, SigLIP scores with its sigmoid, names resolve in the
# Hugging Face hub cache with hf-hub: and open_clip's model + pretrained tag, and what cannot load says why.
fam=${CLIPGUIDE_FAMILY_FIXTURES:-$PWD/tests/data/families}
fimg=$(ls "$fam"/images/*.png | head -1)
"$bin" info "$fam/siglip" --json >"$tmp/si.json" 2>"$tmp/err" \
  && python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['family']=='siglip' and d['tokenizer']=='SentencePiece' and d['preprocess']['resize_mode']=='squash' and d['text']['activation']=='gelu_tanh', d" "$tmp/si.json" \
  && ok || bad "info siglip: $(cat "$tmp/err")"
oc=$(ls -d "$fam"/openclip-* | head -1)
"$bin" info "$oc" --vocab "$vocab" --json >"$tmp/oc.json" 2>"$tmp/err" \
  && python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['family']=='clip' and d['tokenizer']=='CLIP BPE', d" "$tmp/oc.json" \
  && ok || bad "info open_clip: $(cat "$tmp/err")"
"$bin" score -m "$fam/siglip" -p "a red circle" -p "a dog" "$fimg" --metric sigmoid --format jsonl >"$tmp/sg.jsonl" 2>"$tmp/err" \
  && python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; r=[x for x in r if 'score' in x]; assert len(r)==2 and all(0<x['score']<1 and x['metric']=='sigmoid' for x in r), r" "$tmp/sg.jsonl" \
  && ok || bad "score --metric sigmoid: $(cat "$tmp/err")"
expect_fail sigmoid-on-clip "$bin" score -m "$oc" --vocab "$vocab" -p "a dog" "$fimg" --metric sigmoid
mkdir -p "$tmp/hub/models--laion--CLIP-ViT-H-14-laion2B-s32B-b79K/snapshots/abc" "$tmp/hub/models--laion--CLIP-ViT-H-14-laion2B-s32B-b79K/refs"
echo abc >"$tmp/hub/models--laion--CLIP-ViT-H-14-laion2B-s32B-b79K/refs/main"
cp "$oc"/* "$tmp/hub/models--laion--CLIP-ViT-H-14-laion2B-s32B-b79K/snapshots/abc/"
for name in hf-hub:laion/CLIP-ViT-H-14-laion2B-s32B-b79K laion/CLIP-ViT-H-14-laion2B-s32B-b79K "ViT-H-14 --pretrained laion2b_s32b_b79k"; do
  # shellcheck disable=SC2086
  HF_HUB_CACHE="$tmp/hub" "$bin" info --vocab "$vocab" $name --json >"$tmp/hub.json" 2>"$tmp/err" \
    && grep -q "snapshots/abc" "$tmp/hub.json" && ok || bad "hub name $name: $(cat "$tmp/err")"
done
expect_fail unknown-pretrained env HF_HUB_CACHE="$tmp/hub" "$bin" info ViT-H-14 --pretrained nope
# SigLIP 2: the Hugging Face folder (Siglip2Tokenizer's rules) and open_clip's timm layout, by its hub names.
"$bin" info "$fam/siglip2" --json >"$tmp/s2.json" 2>"$tmp/err" \
  && python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['family']=='siglip' and 'lower-cased' in d['tokenizer_rules'], d" "$tmp/s2.json" \
  && ok || bad "info siglip2: $(cat "$tmp/err")"
mkdir -p "$tmp/hub/models--timm--ViT-B-16-SigLIP2/snapshots/def" "$tmp/hub/models--timm--ViT-B-16-SigLIP2/refs"
echo def >"$tmp/hub/models--timm--ViT-B-16-SigLIP2/refs/main"
cp "$fam"/openclip-siglip2/* "$tmp/hub/models--timm--ViT-B-16-SigLIP2/snapshots/def/"
for name in timm/ViT-B-16-SigLIP2 "ViT-B-16-SigLIP2 --pretrained webli"; do
  # shellcheck disable=SC2086
  HF_HUB_CACHE="$tmp/hub" "$bin" info $name --json >"$tmp/hub.json" 2>"$tmp/err" \
    && python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['family']=='siglip' and 'timm' in d['format'] and 'canonicalize' in d['tokenizer_rules'], d" "$tmp/hub.json" \
    && ok || bad "open_clip SigLIP 2 $name: $(cat "$tmp/err")"
done
HF_HUB_CACHE="$tmp/hub" "$bin" score -m timm/ViT-B-16-SigLIP2 -p "a red circle" "$fimg" --metric sigmoid --format jsonl >"$tmp/sg2.jsonl" 2>"$tmp/err" \
  && python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; r=[x for x in r if 'score' in x]; assert len(r)==1 and 0<r[0]['score']<1, r" "$tmp/sg2.jsonl" \
  && ok || bad "score open_clip SigLIP 2: $(cat "$tmp/err")"
mkdir -p "$tmp/bare" && cp "$oc"/open_clip_* "$tmp/bare/" && rm "$tmp/bare/open_clip_config.json"
expect_fail open-clip-without-config "$bin" info "$tmp/bare/$(ls "$tmp/bare" | head -1)" --vocab "$vocab"
grep -q -- "--activation" "$tmp/err" && ok || bad "open_clip without config names --activation: $(cat "$tmp/err")"

# index, search and filter: a collection in clip-retrieval's layout, searched; concepts flagged, with the exit status.
imgs=$(ls "$fx"/clip/*.images/exact-*.png | head -4)
# shellcheck disable=SC2086
"$bin" index -m "$fx/clip/$first" --vocab "$vocab" $imgs --out "$tmp/coll" --output-partition-count 2 >"$tmp/ix.jsonl" 2>"$tmp/err" \
  && [ -f "$tmp/coll/img_emb/img_emb_0.npy" ] && [ -f "$tmp/coll/metadata/metadata_1.parquet" ] && [ -f "$tmp/coll/image.index" ] \
  && grep -q '"index_built":true' "$tmp/ix.jsonl" && ok || bad "index: $(cat "$tmp/err")"
# index --worker (clipguide-spark's executors): partition numbers on stdin, one model load, the same rows as above;
# --images-from lists the images (relative to its folder).
for i in $imgs; do realpath "$i"; done >"$tmp/list.txt"
printf '1\n\n0\n1\n' | "$bin" index -m "$fx/clip/$first" --vocab "$vocab" --images-from "$tmp/list.txt" --out "$tmp/wcoll" \
  --output-partition-count 2 --worker >"$tmp/w.jsonl" 2>"$tmp/err" \
  && cmp -s "$tmp/coll/img_emb/img_emb_0.npy" "$tmp/wcoll/img_emb/img_emb_0.npy" \
  && cmp -s "$tmp/coll/img_emb/img_emb_1.npy" "$tmp/wcoll/img_emb/img_emb_1.npy" \
  && grep -q '"partition":1,"present":true' "$tmp/w.jsonl" && [ ! -e "$tmp/wcoll/image.index" ] \
  && ok || bad "index --worker: $(cat "$tmp/err") $(cat "$tmp/w.jsonl")"
# rerank --worker (clipguide-spark rerank): each partition's best with its input positions, then its count.
# shellcheck disable=SC2086
printf '0\n1\n' | "$bin" rerank -m "$fx/clip/$first" --vocab "$vocab" $imgs -p "a dog" --top 2 --worker \
  --output-partition-count 2 >"$tmp/rw.jsonl" 2>"$tmp/err" \
  && [ "$(grep -c '"rank"' "$tmp/rw.jsonl")" -eq 4 ] && grep -q '"images":2,"partition":1' "$tmp/rw.jsonl" \
  && grep -q '"position":3' "$tmp/rw.jsonl" && ok || bad "rerank --worker: $(cat "$tmp/err") $(cat "$tmp/rw.jsonl")"
# score --worker (clipguide-spark score): each partition's rows written whole to OUT/scores/scores_N.parquet.
# shellcheck disable=SC2086
printf '1\n0\n' | "$bin" score -m "$fx/clip/$first" --vocab "$vocab" $imgs -p "a dog" -p "a cat" --worker \
  --output-partition-count 2 --out "$tmp/sw" >"$tmp/sw.jsonl" 2>"$tmp/err" \
  && [ -s "$tmp/sw/scores/scores_0.parquet" ] && [ -s "$tmp/sw/scores/scores_1.parquet" ] \
  && [ "$(ls "$tmp/sw/scores" | wc -l)" -eq 2 ] && head -1 "$tmp/sw.jsonl" | grep -q '"images":2,"partition":1,"rows":4' \
  && ok || bad "score --worker: $(cat "$tmp/err") $(cat "$tmp/sw.jsonl")"
one=$(echo "$imgs" | head -1)
"$bin" search --index "$tmp/coll" --vocab "$vocab" --image "$one" --top 2 --format jsonl >"$tmp/hits.jsonl" 2>"$tmp/err" \
  && [ "$(wc -l <"$tmp/hits.jsonl")" -eq 2 ] && head -1 "$tmp/hits.jsonl" | grep -qF "\"image\":\"$one\"" \
  && ok || bad "search --image: $(cat "$tmp/err") $(cat "$tmp/hits.jsonl")"
"$bin" search --index "$tmp/coll" --vocab "$vocab" -p "a dog" --negative "a cat" --format table --html "$tmp/s.html" >"$tmp/hits.txt" 2>"$tmp/err" \
  && grep -q "rank" "$tmp/hits.txt" && grep -q "<img" "$tmp/s.html" && ok || bad "search table/html: $(cat "$tmp/err")"
# shellcheck disable=SC2086
"$bin" filter -m "$fx/clip/$first" --vocab "$vocab" $imgs --deny "a dog:-0.99" --format jsonl >"$tmp/f.jsonl" 2>"$tmp/err"
[ $? -eq 3 ] && [ "$(grep -c '"flagged":true' "$tmp/f.jsonl")" -eq 4 ] && ok || bad "filter, all flagged: exit 3 $(cat "$tmp/err")"
# shellcheck disable=SC2086
"$bin" filter -m "$fx/clip/$first" --vocab "$vocab" $imgs --deny "a dog:0.999" --format jsonl >"$tmp/f.jsonl" 2>"$tmp/err" \
  && [ "$(grep -c '"flagged":false' "$tmp/f.jsonl")" -eq 4 ] && ok || bad "filter, none flagged: exit 0 $(cat "$tmp/err")"
saf=tests/data/safety
"$bin" filter --safety-checker "$saf/pipeline/safety_checker" "$saf/images" --format jsonl >"$tmp/sf.jsonl" 2>"$tmp/err"
[ $? -eq 3 ] && python3 -c "
import json,sys
m=json.load(open(sys.argv[1])); rows={r['image'].split('/')[-1]: r for r in map(json.loads, open(sys.argv[2])) if 'image' in r}
bad=[p['file'] for p in m['pictures'] if rows[p['file'].split('/')[-1]]['flagged'] != p['has_nsfw_concept']]
assert not bad and len(rows)==len(m['pictures']), bad" "$saf/safety-manifest.json" "$tmp/sf.jsonl" && ok || bad "filter --safety-checker: $(cat "$tmp/err")"
mkdir -p "$tmp/q" && cp $imgs "$tmp/q/" && mkdir -p "$tmp/moved" && cp "$one" "$tmp/moved/"
"$bin" filter -m "$fx/clip/$first" --vocab "$vocab" "$tmp/q" --deny "a dog:-0.99" --move-to "$tmp/moved" --format jsonl >/dev/null 2>"$tmp/err"
[ "$(ls "$tmp/q" | wc -l)" -eq 0 ] && [ "$(ls "$tmp/moved" | wc -l)" -eq 5 ] && cmp -s "$one" "$tmp/moved/$(basename "$one")" \
  && ok || bad "filter --move-to: $(ls "$tmp/moved") $(cat "$tmp/err")"
# generate --deny: a concept the image cannot avoid (threshold -0.99) is reported and the image not written.
"$bin" generate -p "a red circle" --deny "a red circle" --deny-threshold -0.99 --generator pixels --steps 2 --size 32x32 \
  -o "$tmp/denied.png" >"$tmp/out" 2>"$tmp/err"
[ $? -eq 3 ] && [ ! -e "$tmp/denied.png" ] && grep -q "flagged" "$tmp/err" && ok || bad "generate --deny: $(cat "$tmp/err")"
"$bin" generate -p "a red circle" --deny "a blue star" --deny-threshold 0.99 --generator pixels --steps 2 --size 32x32 \
  -o "$tmp/kept.png" >"$tmp/out" 2>"$tmp/err" && [ -s "$tmp/kept.png" ] && ok || bad "generate --deny, not flagged: $(cat "$tmp/err")"
expect_fail index-no-out "$bin" index -m "$fx/clip/$first" --vocab "$vocab" "$one"
expect_fail index-bad-task "$bin" index -m "$fx/clip/$first" --vocab "$vocab" "$one" --out "$tmp/c2" --output-partition-count 2 --tasks 0,5
expect_fail index-worker-bad-task bash -c 'echo 7 | "$@"' _ "$bin" index -m "$fx/clip/$first" --vocab "$vocab" "$one" \
  --out "$tmp/c4" --output-partition-count 2 --worker
expect_fail index-worker-and-tasks "$bin" index -m "$fx/clip/$first" --vocab "$vocab" "$one" --out "$tmp/c5" --worker --tasks 0
expect_fail index-missing-list "$bin" index -m "$fx/clip/$first" --vocab "$vocab" --images-from "$tmp/none.txt" --out "$tmp/c6"
expect_fail rerank-worker-html bash -c 'echo 0 | "$@"' _ "$bin" rerank -m "$fx/clip/$first" --vocab "$vocab" "$one" -p x \
  --worker --html "$tmp/w.html"
expect_fail score-worker-no-out bash -c 'echo 0 | "$@"' _ "$bin" score -m "$fx/clip/$first" --vocab "$vocab" "$one" -p x --worker
expect_fail score-out-no-worker "$bin" score -m "$fx/clip/$first" --vocab "$vocab" "$one" -p x --out "$tmp/sw2"
expect_fail score-worker-bad-task bash -c 'echo 2 | "$@"' _ "$bin" score -m "$fx/clip/$first" --vocab "$vocab" "$one" -p x \
  --worker --out "$tmp/sw3" --output-partition-count 2
expect_fail index-bad-memory "$bin" index -m "$fx/clip/$first" --vocab "$vocab" "$one" --out "$tmp/c3" --max-index-memory lots
expect_fail index-other-count "$bin" index -m "$fx/clip/$first" --vocab "$vocab" "$one" --out "$tmp/coll" --output-partition-count 3
expect_fail search-not-a-collection "$bin" search --index "$tmp/q" -p x
expect_fail search-nothing "$bin" search --index "$tmp/coll"
expect_fail filter-nothing-denied "$bin" filter -m "$fx/clip/$first" --vocab "$vocab" "$one"
expect_fail filter-bad-threshold "$bin" filter -m "$fx/clip/$first" --vocab "$vocab" "$one" --deny "a dog:2"
expect_fail filter-bad-checker "$bin" filter --safety-checker "$fx/clip/$first" "$one"

echo "cli: $pass passed, $failed failed"
[ "$failed" -eq 0 ]
