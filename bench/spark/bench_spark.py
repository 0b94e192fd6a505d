"""bench/spark's measurements (run by bench/spark/run.sh, which makes the images and the model).

    bench_spark.py CLIPGUIDE MODEL VOCAB IMAGE_FOLDER WORK_FOLDER PARTITIONS
"""
import json
import os
import shutil
import subprocess
import sys
import time

root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(root, "spark"))
from local_cluster import LocalCluster  # noqa: E402

binary, model, vocab, folder, work = (os.path.abspath(a) for a in sys.argv[1:6])
partitions = int(sys.argv[6])
images = len([f for f in os.listdir(folder) if f.endswith(".jpg")])
model_args = ["-m", model, "--vocab", vocab]


def timed(command, env=None):
    """Wall seconds of a command from start to exit (JVM and driver start-up included), and its last JSON line."""
    started = time.perf_counter()
    with open(os.path.join(work, "bench.log"), "a") as log:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"bench/spark: {command[:3]} failed (exit {done.returncode}); see {log.name}")
    return time.perf_counter() - started, json.loads(done.stdout.strip().splitlines()[-1])


def fresh(name):
    path = os.path.join(work, name)
    shutil.rmtree(path, ignore_errors=True)
    return path


def ours_on_spark(cluster, parts, name):
    seconds, last = timed([sys.executable, os.path.join(root, "spark", "clipguide-spark"), "index", folder,
                           "--out", fresh(name), "--master", cluster.url, "--output-partition-count", str(parts),
                           "--clipguide", binary, "--no-index", "--"] + model_args, cluster.env)
    assert last["summary"]["images"] == images, last
    return seconds


rows = []
for threads in (1, 2):
    seconds, last = timed([binary, "index", folder, "--out", fresh(f"single-{threads}"), "--no-index", "--threads",
                           str(threads), "--output-partition-count", str(partitions)] + model_args)
    rows.append((f"clipguide index, 1 process, {threads} thread{'s' if threads > 1 else ''}", seconds))
overhead = None
for workers in (1, 2):
    cluster_dir = fresh(f"cluster-{workers}")
    os.makedirs(cluster_dir)
    with LocalCluster(workers=workers, cores=1, folder=cluster_dir) as cluster:
        rows.append((f"clipguide-spark, {workers} worker{'s' if workers > 1 else ''} x 1 core",
                     ours_on_spark(cluster, partitions, f"ours-{workers}")))
        if workers == 2:
            many = ours_on_spark(cluster, 5 * partitions, "ours-many")
            overhead = (many - rows[-1][1]) / (4 * partitions)
            seconds, last = timed([sys.executable, os.path.join(root, "bench", "spark", "peer.py"), cluster.url, model,
                                   folder, fresh("python"), str(partitions)], cluster.env)
            assert last["images"] == images, last
            rows.append(("clip-retrieval way on Spark, 2 workers x 1 core", seconds))
python_rate = images / rows[-1][1]
print(f"bench/spark: {images} JPEGs, ViT-B/32 (random weights), {partitions} partitions; wall time from start to "
      "exit (Spark's JVMs and driver included)")
print(f"{'run':50} {'s':>7} {'images/s':>9} {'vs python':>9}")
for name, seconds in rows:
    print(f"{name:50} {seconds:7.1f} {images / seconds:9.2f} {images / seconds / python_rate:9.2f}")
print(f"two workers vs one: {rows[2][1] / rows[3][1]:.2f}x; Spark's cost per partition: {overhead:.2f} s "
      f"(2 workers, {partitions} vs {5 * partitions} partitions)")
