#!/usr/bin/env bash
# bench/search/run.sh: the search index over N synthetic 512-d unit vectors in clusters (N=1000000 by default, written
# as 10 float16 npy partitions, as `clipguide index` writes them): build time and peak memory, queries per second at
# K=10 (2,000 queries in one batch, and one at a time) for the exact and the approximate index, and the approximate
# index's recall@10 against exact search; each against faiss's Python package building the same index from the same
# files (the way autofaiss and clip-retrieval do), same thread count (THREADS, default every CPU).
source "$(dirname "$0")/../common.sh"
setup_torch2
n=${N:-1000000}
work=build/bench/search-clustered-$n
[ -f "$work/queries.npy" ] || build/bench/bench_search make "$work" "$n" 512 1000 10
for kind in exact approx; do
  THREADS=$threads build/bench/bench_search build "$work" "$kind" >"$work/ours-$kind.json"
  read -r factory nprobe train < <("$vpy" -c "import json,sys; d=json.load(open(sys.argv[1])); print(d['factory'], d['nprobe'], max(64 * int(d['factory'][3:].split(',')[0]) if d['factory'].startswith('IVF') else 0, 65536))" "$work/ours-$kind.json")
  "$vpy" bench/search/peer.py "$work" "$factory" "$nprobe" "$train" "$threads" >"$work/peer-$kind.json"
done
"$vpy" - "$work" "$threads" <<'PY'
import json, sys
work, threads = sys.argv[1:3]
print(f"bench/search: {threads} threads; ours = clipguide's jobs/vector_index (built by Debian's libfaiss 1.7.3, searched by"
      " our kernel), python = faiss-cpu; QPS batch: the second batch of 2,000 (cold s: our first, which pages the index in)")
print(f"{'index':28} {'rows':>8} {'build s':>8} {'py':>7} {'peak MB':>8} {'py':>7} {'QPS batch':>10} {'py':>9} {'ratio':>6} {'QPS 1-by-1':>11} {'py':>9} {'ratio':>6} {'recall@10':>9} {'py':>6} {'cold s':>8}")
for kind in ("exact", "approx"):
    o = json.load(open(f"{work}/ours-{kind}.json"))
    p = json.load(open(f"{work}/peer-{kind}.json"))
    same = "" if o["first_query_ids"] == p["first_query_ids"] else "  (first query's ids differ)"
    print(f"{o['factory'] + (' nprobe ' + str(o['nprobe']) if o['nprobe'] else ''):28} {o['rows']:8d} {o['build_seconds']:8.1f} {p['build_seconds']:7.1f} "
          f"{o['peak_rss_mb']:8.0f} {p['peak_rss_mb']:7.0f} {o['batched_qps']:10.0f} {p['batched_qps']:9.0f} {o['batched_qps'] / p['batched_qps']:6.2f} "
          f"{o['single_qps']:11.0f} {p['single_qps']:9.0f} {o['single_qps'] / p['single_qps']:6.2f} {o.get('recall_at_10', 1.0):9.3f} {p['recall_at_10']:6.3f}"
          f" {o['first_batch_seconds']:8.2f}{same}")
PY
