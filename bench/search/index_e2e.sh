#!/usr/bin/env bash
# bench/search/index_e2e.sh: `clipguide index` end to end (decode, preprocess, encode, write npy and Parquet) against
# clip-retrieval's inference done the same way in Python (bench/search/clip_retrieval_way.py: its DataLoader,
# open_clip model and writers), on IMAGES JPEG pictures (default 10,000; 320x240 to 640x480) with a full-size ViT-B/32
# of random weights, same thread count. Prints images/s and the ratio, and the largest difference between the two
# sides' float16 rows.
source "$(dirname "$0")/../common.sh"
setup_torch2
n=${IMAGES:-10000}
work=build/bench/index-e2e
mkdir -p "$work"
[ -s "$work/vitb32.safetensors" ] || build/bench/bench_make_clip ViT-B/32 "$work/vitb32.safetensors" >/dev/null
"$vpy" bench/search/make_collection.py "$work/images-$n" "$n"
rm -rf "$work/ours" "$work/python"
for bin in build build-torch2; do
  rm -rf "$work/ours"
  "$bin"/clipguide index -m "$work/vitb32.safetensors" --vocab "$vocab" --threads "$threads" --no-index \
    "$work/images-$n" --out "$work/ours" | tail -1 >"$work/ours-$bin.json"
done
"$vpy" bench/search/clip_retrieval_way.py "$work/vitb32.safetensors" "$work/images-$n" "$work/python" "$threads" 256 "$threads" >"$work/python.json"
"$vpy" - "$work" "$threads" <<'PY'
import json, sys
import numpy as np, pandas as pd
work, threads = sys.argv[1:3]
py = json.load(open(f"{work}/python.json"))
print(f"bench/search/index_e2e: {py['images']} images, ViT-B/32 (random weights), {threads} threads, python on torch {py['torch']}")
print(f"{'side':34} {'images/s':>9} {'ratio':>6}")
print(f"{'clip-retrieval way (python)':34} {py['images_per_second']:9.2f} {'':>6}")
for bin, name in (("build", "clipguide index (libtorch 1.13)"), ("build-torch2", "clipguide index (libtorch 2.x)")):
    ours = json.load(open(f"{work}/ours-{bin}.json"))["summary"]
    print(f"{name:34} {ours['images_per_second']:9.2f} {ours['images_per_second'] / py['images_per_second']:6.2f}")
a = np.load(f"{work}/ours/img_emb/img_emb_0.npy").astype(np.float32)
b = np.load(f"{work}/python/img_emb/img_emb_0.npy").astype(np.float32)
same = list(pd.read_parquet(f"{work}/ours/metadata/metadata_0.parquet")["image_path"]) == list(pd.read_parquet(f"{work}/python/metadata/metadata_0.parquet")["image_path"])
print(f"rows {a.shape} vs {b.shape}, same image order: {same}, largest |difference|: {np.abs(a - b).max():.2e}")
PY
