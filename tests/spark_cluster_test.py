#!/usr/bin/env python3
"""clipguide-spark on a real Spark standalone cluster that this test starts on the loopback address (a master
and two workers of one core each) and always stops: 2,000 images indexed across the cluster, one worker killed
mid-run, and the collection must equal a single-machine `clipguide index` of the same input (the same npy bytes,
the same metadata rows, every image exactly once). Then score and rerank over the cluster, against one process.

    tests/spark_cluster_test.py CLIPGUIDE_BINARY

Runs under .venv/bin/python; without .venv/ (pyspark) or Java it says so and exits 77 (ctest: skipped).
IMAGES (default 2000) and PARTITIONS (default 40) size the run.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

from venv_or_skip import rerun_in_venv, root  # tests/, beside this script

rerun_in_venv("pyspark")
if shutil.which("java") is None:
    print("SKIP: no Java (Debian's openjdk-17-jre-headless; scripts/setup installs it)")
    sys.exit(77)

import json  # noqa: E402
import types  # noqa: E402

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

sys.path.insert(0, os.path.join(root, "spark"))
from local_cluster import LocalCluster, wait_for  # noqa: E402

binary = os.path.abspath(sys.argv[1])
images = int(os.environ.get("IMAGES", "2000"))
partitions = int(os.environ.get("PARTITIONS", "40"))


def check_gpu_pinning():
    """The GPU Spark assigned a task reaches its worker's command line (a fake TaskContext: no GPU here)."""
    import clipguide_spark_worker as worker

    def context(resources):
        return types.SimpleNamespace(cpus=lambda: 3, resources=lambda: resources)

    gpu = {"gpu": types.SimpleNamespace(name="gpu", addresses=["5"])}
    assert worker.worker_command(["clipguide", "index"], context(gpu)) == \
        ["clipguide", "index", "--threads", "3", "--device", "cuda:5"]
    assert worker.worker_command(["clipguide", "index"], context({})) == ["clipguide", "index", "--threads", "3"]
    assert worker.worker_command(["clipguide", "index", "--device", "cpu"], context(gpu)) == \
        ["clipguide", "index", "--device", "cpu", "--threads", "3"]
    print("GPU pinning: a task assigned GPU 5 runs its worker with --device cuda:5")


def check_one_task_per_executor():
    """Given the executors' size, a CPU task takes a whole executor, so one worker (one model load) serves it."""
    import clipguide_spark as driver
    from pyspark import SparkConf

    def planned(**settings):
        conf = SparkConf(loadDefaults=False)
        for key, value in settings.items():
            conf.set(key.replace("_", "."), value)
        return driver.one_task_per_executor(conf).get("spark.task.cpus")

    assert planned(spark_executor_cores="8") == "8"
    assert planned(spark_executor_cores="8", spark_task_cpus="2") == "2"  # the user's own setting stands
    assert planned() is None
    assert planned(spark_executor_cores="64", spark_task_resource_gpu_amount="1") is None  # a task per GPU
    print("one task per CPU executor: spark.task.cpus = spark.executor.cores unless set, or GPUs split it")


def check_score(out):
    """The cluster's score partitions hold exactly one `clipguide score`'s rows: every image against every prompt,
    input order restored from the position column, scores within 1e-5 (partitions batch differently)."""
    single = subprocess.run([binary, "score", os.path.join(tmp, "images"), "-p", prompt, "-p", other_prompt,
                             "--threads", "1", "--format", "jsonl"], check=True, stdout=subprocess.PIPE,
                            text=True).stdout
    theirs = [r for r in map(json.loads, single.splitlines()) if "prompt" in r]
    files = sorted(os.listdir(os.path.join(out, "scores")))
    assert files == [f"scores_{p}.parquet" for p in range(8)], files
    table = pq.read_table(os.path.join(out, "scores")).to_pydict()
    assert set(table) == {"image_path", "prompt", "score", "metric", "position"}, table.keys()
    order = sorted(range(len(table["score"])),
                   key=lambda i: (table["position"][i], [prompt, other_prompt].index(table["prompt"][i])))
    assert len(order) == len(theirs) == 2 * images, (len(order), len(theirs))
    for i, row in zip(order, theirs):
        assert (table["image_path"][i], table["prompt"][i]) == (row["image"], row["prompt"]), (i, row)
        assert abs(table["score"][i] - row["score"]) < 1e-5 and table["metric"][i] == "cosine", (i, row)
    print(f"score over the cluster: 8 Parquet partitions, the single process's {len(theirs)} rows")


def make_images(folder):
    """Coloured shapes on coloured grounds, 96 to 160 px JPEGs and PNGs."""
    rng = np.random.default_rng(5)
    os.makedirs(folder)
    for i in range(images):
        size = int(rng.integers(96, 161))
        img = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 256, 3)))
        box = sorted(rng.integers(0, size, 2)), sorted(rng.integers(0, size, 2))
        ImageDraw.Draw(img).ellipse([box[0][0], box[1][0], box[0][1] + 1, box[1][1] + 1],
                                    fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        img.save(os.path.join(folder, f"{i:05d}.{'jpg' if i % 3 else 'png'}"))


prompt = "a red circle on a blue background"
other_prompt = "a green square"


def check_rerank(ours):
    """The cluster's top 10 against one `clipguide rerank --top 10`: the same images in the same order, and scores
    within 1e-5 (a partition's batches differ from one process's, so scores may differ in their last bits, and
    images whose scores are that close may trade places)."""
    single = subprocess.run([binary, "rerank", os.path.join(tmp, "images"), "-p", prompt, "--top", "10", "--threads",
                             "1", "--format", "jsonl"], check=True, stdout=subprocess.PIPE, text=True).stdout
    theirs = [json.loads(line) for line in single.splitlines() if '"rank"' in line]
    assert len(ours) == len(theirs) == 10, (ours, theirs)
    their_score = {r["image"]: r["score"] for r in theirs}
    for a, b in zip(ours, theirs):
        assert abs(a["score"] - b["score"]) < 1e-5, (a, b)
        if a["image"] != b["image"]:  # a near-tie: the image is theirs too at the same score, or ties the 10th
            assert abs(their_score.get(a["image"], -9) - a["score"]) < 1e-5 or \
                abs(a["score"] - theirs[-1]["score"]) < 1e-5, (a, b)
    print("rerank --top 10 over the cluster: the single process's top 10")


def check_input_lists(folder):
    """The driver's inputs: a text list and a Parquet column, relative paths taken from their own folders."""
    import clipguide_spark as driver
    import pyarrow as pa

    names = sorted(os.listdir(folder))[:5]
    lists = os.path.join(tmp, "lists")
    os.makedirs(lists)
    with open(os.path.join(lists, "some.txt"), "w") as f:
        f.write("".join(f"../images/{n}\n" for n in names[:3]) + "\n")
    pq.write_table(pa.table({"image_path": [f"../images/{n}" for n in names[3:]]}), os.path.join(lists, "p.parquet"))
    staging = os.path.join(tmp, "staging")
    os.makedirs(staging)
    args, count = driver.image_inputs([os.path.join(lists, "some.txt"), os.path.join(lists, "p.parquet"), folder],
                                      "image_path", staging)
    assert count == 5 + images, count
    listed = [open(args[i + 1]).read().split() for i, a in enumerate(args) if a == "--images-from"]
    assert [[os.path.realpath(p) for p in paths] for paths in listed] == \
        [[os.path.join(os.path.realpath(folder), n) for n in part] for part in (names[:3], names[3:])], listed
    assert args[-1] == os.path.abspath(folder)
    print("driver inputs: a text list and a Parquet column, relative to their folders")


def check_spark_reads_metadata(folder):
    """Spark reads the collection's metadata (pyarrow and pandas: index_readback)."""
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.master("local[1]").appName("read metadata").getOrCreate()
    try:
        frame = spark.read.parquet(os.path.join(folder, "metadata"))
        assert frame.count() == images and frame.select("image_path").distinct().count() == images
    finally:
        spark.stop()
    print(f"Spark reads the metadata: {images} distinct image paths")


def read_collection(folder):
    rows, names = [], []
    for p in range(partitions):
        name = f"{p:0{len(str(partitions - 1))}d}" if partitions > 1 else "0"
        with open(os.path.join(folder, "img_emb", f"img_emb_{name}.npy"), "rb") as f:
            rows.append(f.read())
        names.append(pq.read_table(os.path.join(folder, "metadata", f"metadata_{name}.parquet")).to_pydict())
    return rows, names


check_gpu_pinning()
check_one_task_per_executor()
tmp = tempfile.mkdtemp(prefix="clipguide-spark-test-")
try:
    folder = os.path.join(tmp, "images")
    make_images(folder)
    check_input_lists(folder)
    single = os.path.join(tmp, "single")
    subprocess.run([binary, "index", folder, "--out", single, "--output-partition-count", str(partitions),
                    "--no-index", "--threads", "1"], check=True, stdout=subprocess.DEVNULL)
    cluster_out = os.path.join(tmp, "cluster")
    with LocalCluster(workers=2, cores=1, folder=tmp) as cluster, open(cluster.log, "a") as logs:
        print(f"cluster up: {cluster.url}, 2 workers of 1 core")
        started = time.monotonic()
        driver = subprocess.Popen(
            [sys.executable, os.path.join(root, "spark", "clipguide-spark"), "index", folder, "--out", cluster_out,
             "--master", cluster.url, "--output-partition-count", str(partitions), "--clipguide", binary,
             "--conf", "spark.executor.memory=512m", "--conf", "spark.task.maxFailures=8"],
            env=cluster.env, stdout=subprocess.PIPE, stderr=logs, text=True)
        metadata = os.path.join(cluster_out, "metadata")
        landed = lambda: sum(f.endswith(".parquet") for f in os.listdir(metadata)) \
            if os.path.isdir(metadata) else 0  # noqa: E731
        wait_for("the first partitions", lambda: landed() >= 2 or driver.poll() is not None, 300)
        at_kill = landed()
        assert at_kill < partitions, f"all {partitions} partitions landed before a worker could be killed"
        cluster.kill_worker(0)
        print(f"killed worker 0 with {at_kill} of {partitions} partitions landed")
        out, _ = driver.communicate(timeout=600)
        seconds = time.monotonic() - started
        assert driver.returncode == 0, f"the driver failed (exit {driver.returncode}); log: {cluster.log}"
        # rerank --top over the cluster (the worker left): per-partition best, merged on the driver.
        ranked = subprocess.run(
            [sys.executable, os.path.join(root, "spark", "clipguide-spark"), "rerank", folder, "-p", prompt,
             "--top", "10", "--master", cluster.url, "--output-partition-count", "8", "--clipguide", binary,
             "--work", os.path.join(tmp, "work")], env=cluster.env, stdout=subprocess.PIPE, stderr=logs, text=True)
        assert ranked.returncode == 0, f"clipguide-spark rerank failed; log: {cluster.log}"
        scored = subprocess.run(
            [sys.executable, os.path.join(root, "spark", "clipguide-spark"), "score", folder, "-p", prompt, "-p",
             other_prompt, "--out", os.path.join(tmp, "scored"), "--master", cluster.url,
             "--output-partition-count", "8", "--clipguide", binary], env=cluster.env, stdout=subprocess.PIPE,
            stderr=logs, text=True)
        assert scored.returncode == 0, f"clipguide-spark score failed; log: {cluster.log}"
    check_score(os.path.join(tmp, "scored"))
    check_rerank([json.loads(line) for line in ranked.stdout.splitlines() if '"rank"' in line])
    summary = json.loads(out.strip().splitlines()[-1])["summary"]
    assert summary["index_built"], summary

    check_spark_reads_metadata(cluster_out)
    ours_rows, ours_names = read_collection(cluster_out)
    their_rows, their_names = read_collection(single)
    for p in range(partitions):
        assert ours_rows[p] == their_rows[p], f"partition {p}: npy bytes differ from the single-machine run"
        assert ours_names[p] == their_names[p], f"partition {p}: metadata rows differ"
    paths = [path for names in ours_names for path in names["image_path"]]
    assert len(paths) == images and len(set(paths)) == images, (len(paths), len(set(paths)))
    assert sorted(paths) == sorted(os.path.join(folder, f) for f in os.listdir(folder))
    print(f"spark_cluster: {images} images, {partitions} partitions in {seconds:.1f} s with a worker killed; "
          "npy bytes and metadata rows equal to the single-machine run, every image once; cluster stopped")
finally:
    shutil.rmtree(tmp, ignore_errors=True)
print("PASS")
