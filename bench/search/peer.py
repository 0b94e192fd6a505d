"""bench/search's Python side: the same index with faiss's own Python package (faiss-cpu, pinned in .venv/), as
autofaiss and clip-retrieval build it: the npy partitions loaded with numpy, the same faiss index_factory string,
nprobe and training sample size, inner-product metric. Prints one JSON line like bench_search's.

    peer.py DIR FACTORY NPROBE TRAIN_ROWS THREADS
"""
import glob
import json
import resource
import sys
import time

import faiss
import numpy as np

work, factory, nprobe, train_rows, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
faiss.omp_set_num_threads(threads)
parts = sorted(glob.glob(f"{work}/part_*.npy"), key=lambda p: int(p.rsplit("_", 1)[1].split(".")[0]))
t0 = time.perf_counter()
index = faiss.index_factory(int(np.load(parts[0], mmap_mode="r").shape[1]), factory, faiss.METRIC_INNER_PRODUCT)
if not index.is_trained:
    rows = sum(np.load(p, mmap_mode="r").shape[0] for p in parts)
    pick = np.sort(np.random.default_rng(0).choice(rows, size=min(train_rows, rows), replace=False))
    data = np.concatenate([np.load(p).astype(np.float32) for p in parts])  # as autofaiss: the embeddings in memory
    index.train(np.ascontiguousarray(data[pick]))
    del data
for p in parts:
    index.add(np.load(p).astype(np.float32))
if nprobe > 0:
    faiss.extract_index_ivf(index).nprobe = nprobe
build = time.perf_counter() - t0
queries = np.load(f"{work}/queries.npy").astype(np.float32)
t1 = time.perf_counter()
_, ids = index.search(queries, 10)
batched = len(queries) / (time.perf_counter() - t1)
singles = 50 if nprobe == 0 else 500
t2 = time.perf_counter()
for q in range(singles):
    index.search(queries[q:q + 1], 10)
single = singles / (time.perf_counter() - t2)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
recall = 1.0
if nprobe > 0:  # this index's own recall@10 against exact search over the same rows, after the timings
    exact = faiss.IndexFlatIP(index.d)
    for p in parts:
        exact.add(np.load(p).astype(np.float32))
    _, truth = exact.search(queries, 10)
    recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), truth.tolist())]))
print(json.dumps(dict(factory=factory, build_seconds=build, peak_rss_mb=peak, batched_qps=batched, single_qps=single,
                      recall_at_10=recall, first_query_ids=ids[0].tolist(), faiss=faiss.__version__)))
