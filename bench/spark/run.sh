#!/usr/bin/env bash
# bench/spark: `clipguide index` on a Spark standalone cluster on this machine (spark/local_cluster.py: a master and
# one or two workers of one core each) against the single-process `clipguide index`, and against clip-retrieval's
# way of distributing its inference with PySpark (every task runs its partition's inference in Python, loading the
# model itself: bench/spark/peer.py around bench/search/clip_retrieval_way.py). IMAGES JPEGs (default 400, 320x240
# to 640x480), full-size ViT-B/32 of random weights, PARTITIONS partitions (default 8). Prints images/s and ratios,
# and Spark's cost per partition (the same run with 5x the partitions).
source "$(dirname "$0")/../common.sh"
setup_torch2
n=${IMAGES:-400}
work=build/bench/spark
mkdir -p "$work"
model=build/bench/index-e2e/vitb32.safetensors
[ -s "$model" ] || { mkdir -p "$(dirname "$model")"; build/bench/bench_make_clip ViT-B/32 "$model" >/dev/null; }
"$vpy" bench/search/make_collection.py "$work/images-$n" "$n"
"$vpy" bench/spark/bench_spark.py "$bin2/clipguide" "$model" "$vocab" "$work/images-$n" "$work" "${PARTITIONS:-8}"
