#!/usr/bin/env bash
# bench/search/index_e2e.sh: `clipguide index` end to end (decode, preprocess, encode, write npy and Parquet) against
# clip-retrieval's inference done the same way in Python (bench/search/clip_retrieval_way.py: its DataLoader,
# open_clip model and writers), on IMAGES JPEG pictures (default 10,000; 320x240 to 640x480) with a full-size ViT-B/32
# of random weights, same thread count. fp32 on both sides (as clip-retrieval runs on a CPU), then bf16 on both
# (`--precision bf16`; torch's CPU autocast on the Python side) where the CPU has bf16 units (PRECISIONS, common.sh). Prints images/s, the
# ratios, and how far each side's float16 rows are from the Python fp32 rows.
source "$(dirname "$0")/../common.sh"
setup_torch2
n=${IMAGES:-10000}
work=build/bench/index-e2e
mkdir -p "$work"
[ -s "$work/vitb32.safetensors" ] || build/bench/bench_make_clip ViT-B/32 "$work/vitb32.safetensors" >/dev/null
"$vpy" bench/search/make_collection.py "$work/images-$n" "$n"
for precision in $PRECISIONS; do
  for bin in build build-torch2; do
    [ "$bin/$precision" = build/bf16 ] && continue  # libtorch 1.13 has no fast CPU bf16 path
    rm -rf "$work/ours-$bin-$precision"
    "$bin"/clipguide index -m "$work/vitb32.safetensors" --vocab "$vocab" --threads "$threads" --no-index \
      --precision "$precision" "$work/images-$n" --out "$work/ours-$bin-$precision" | tail -1 >"$work/ours-$bin-$precision.json"
  done
  rm -rf "$work/python-$precision"
  "$vpy" bench/search/clip_retrieval_way.py "$work/vitb32.safetensors" "$work/images-$n" "$work/python-$precision" \
    "$threads" 256 "$threads" "$precision" >"$work/python-$precision.json"
done
# shellcheck disable=SC2086
"$vpy" - "$work" "$threads" $PRECISIONS <<'PY'
import json, os, sys
import numpy as np, pandas as pd
work, threads, precisions = sys.argv[1], sys.argv[2], sys.argv[3:]
py = {p: json.load(open(f"{work}/python-{p}.json")) for p in precisions}
print(f"bench/search/index_e2e: {py['fp32']['images']} images, ViT-B/32 (random weights), {threads} threads, "
      f"python on torch {py['fp32']['torch']}")
rows = lambda folder: np.load(f"{work}/{folder}/img_emb/img_emb_0.npy").astype(np.float32)
reference = rows("python-fp32")
paths = list(pd.read_parquet(f"{work}/python-fp32/metadata/metadata_0.parquet")["image_path"])
print(f"{'side':42} {'images/s':>9} {'vs py fp32':>10} {'vs py same':>10} {'max |diff|':>10} {'min cos':>8}")
for p in precisions:
    sides = [(f"python-{p}", f"clip-retrieval way (python, {p})", py[p]["images_per_second"])]
    for bin, name in (("build", "libtorch 1.13"), ("build-torch2", "libtorch 2.x")):
        if os.path.exists(f"{work}/ours-{bin}-{p}.json"):
            speed = json.load(open(f"{work}/ours-{bin}-{p}.json"))["summary"]["images_per_second"]
            sides.append((f"ours-{bin}-{p}", f"clipguide index ({name}, {p})", speed))
    for folder, name, speed in sides:
        if folder != "python-fp32":  # every side indexes the same images in the same order
            assert list(pd.read_parquet(f"{work}/{folder}/metadata/metadata_0.parquet")["image_path"]) == paths, folder
        r = rows(folder)
        cos = (r * reference).sum(1) / np.linalg.norm(r, axis=1) / np.linalg.norm(reference, axis=1)
        print(f"{name:42} {speed:9.2f} {speed / py['fp32']['images_per_second']:10.2f} "
              f"{speed / py[p]['images_per_second']:10.2f} {np.abs(r - reference).max():10.2e} {cos.min():8.5f}")
PY
