"""clipguide-spark: `clipguide index`, `score` and `rerank` on an Apache Spark cluster.

    spark/clipguide-spark index INPUT... --out DIR [--master URL] [--output-partition-count P | --partition-size N]
                               [--clipguide BINARY] [--parquet-column COLUMN] [--no-index] [-- INDEX_OPTIONS...]
    spark/clipguide-spark score INPUT... -p PROMPT... --out DIR [--master URL] [...] [-- OPTIONS]
    spark/clipguide-spark rerank INPUT... -p PROMPT [--negative PROMPT]... --top K [--master URL] [...] [-- OPTIONS]

INPUT is a folder of images, an image, a text file of image paths (*.txt, one a line) or a Parquet file whose
--parquet-column (default image_path) names them. The heavy work stays in C++: every Spark task hands its partition
numbers to a long-lived `clipguide index --worker` process, one per Python worker; given spark.executor.cores, a
task takes a whole CPU executor (spark.task.cpus), so each executor has one such process and loads the model once
for all of its tasks. Partition i holds the inputs whose index mod P is i, exactly as a single `clipguide index`
with --output-partition-count P makes it, and each partition lands whole or not at all: a retried or speculative
task rewrites the same bytes, so no row is lost or doubled. When every partition is there, the driver builds the
faiss index over them (`clipguide index --build-index-only`). `score` has long-lived `clipguide score --worker`
processes score each partition against every prompt into DIR/scores/scores_N.parquet (image_path, prompt, score,
metric, position: the image's index in the inputs, to restore input order), each file whole or absent, and prints a
line per partition and a summary. `rerank` ranks each partition with a long-lived
`clipguide rerank --worker` that keeps its best K, and the driver merges them: best score first, ties in input
order, printed as JSON lines {"rank", "image", "score"} (each score as the partition's own batches computed it).

The output folder must be one that every executor and the driver see (a shared file system). Options after `--`
go to every `clipguide index` (--model, --vocab, --batch-size, --on-error, ...); the workers run in the driver's
folder, so relative paths there mean what they mean to the driver. Each task's worker gets
--threads spark.task.cpus, and, where Spark assigned the task a GPU (spark.task.resource.gpu.amount), --device
cuda:ADDRESS. index prints one JSON line per partition, then the index's and a summary. docs/scale.md: how
to configure a cluster, GPU executors, and Slurm.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clipguide_spark_worker  # noqa: E402  the executors' side, shipped to them with addPyFile

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # what clipguide takes from a folder (clip/score.cpp)


def fail(message):
    sys.exit(f"clipguide-spark: error: {message}")


def count_images(path):
    """How many images clipguide finds at path: a folder's images by extension, recursively, or 1."""
    if not os.path.isdir(path):
        return 1
    return sum(sum(f.lower().endswith(IMAGE_SUFFIXES) for f in files)
               for _, _, files in os.walk(path, followlinks=True))


def image_inputs(inputs, parquet_column, staging):
    """The clipguide arguments for the inputs, and how many images they name (to plan the partitions): folders
    and images as they are, text lists with --images-from, Parquet columns written out as such a list (paths
    relative to the Parquet file's folder made absolute)."""
    args, count = [], 0
    for n, item in enumerate(inputs):
        if item.startswith("file://"):
            item = item[len("file://"):]
        if "://" in item:
            fail(f"{item}: only local or shared-file-system paths are read (stage remote files first)")
        if not os.path.exists(item):
            fail(f"{item}: no such file or folder")
        if item.endswith((".parquet", ".txt")):
            base = os.path.dirname(os.path.abspath(item))
            if item.endswith(".parquet"):
                import pyarrow.parquet as pq

                table = pq.read_table(item)
                if parquet_column not in table.column_names:
                    fail(f"{item}: no column {parquet_column!r} (it has {', '.join(table.column_names)})")
                listed = table.column(parquet_column).to_pylist()
            else:
                with open(item) as f:
                    listed = [line.rstrip("\r\n") for line in f if line.strip()]
            paths = []
            for value in listed:
                if not value or "\n" in value:
                    fail(f"{item}: an empty or multi-line path")
                value = value[len("file://"):] if value.startswith("file://") else value
                paths.append(os.path.join(base, value))
                count += count_images(paths[-1])
            listing = os.path.join(staging, f"inputs-{n}.txt")
            with open(listing, "w") as f:
                f.writelines(p + "\n" for p in paths)
            args += ["--images-from", listing]
        else:
            args.append(os.path.abspath(item))
            count += count_images(item)
    return args, count


def one_task_per_executor(conf):
    """With CPU executors of a known size (spark.executor.cores) and no spark.task.cpus of the user's, each task
    takes a whole executor: its one Python worker, and so its one clipguide worker and model load, serves every
    task the executor runs, with all its cores as --threads. (A clipguide worker runs its partitions one after
    another, so tasks sharing an executor would queue on it anyway.) Executors with GPU tasks keep one task, and
    one model, per GPU."""
    cores = conf.get("spark.executor.cores")
    if cores and not conf.contains("spark.task.cpus") and not conf.contains("spark.task.resource.gpu.amount"):
        conf.set("spark.task.cpus", cores)
    return conf


def run_on_spark(opts, base, partitions, name):
    """Runs the workers over partitions 0..P-1 on the cluster: {partition: (last line, rows)}."""
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    conf = SparkConf().setAppName(f"clipguide-spark {name}").setMaster(opts.master)
    conf.set("spark.pyspark.python", sys.executable).set("spark.pyspark.driver.python", sys.executable)
    conf.set("spark.python.worker.reuse", "true")  # the worker, and its model, outlive each task
    for setting in opts.conf:
        key, eq, value = setting.partition("=")
        if not eq:
            fail(f"--conf {setting}: expected KEY=VALUE")
        conf.set(key, value)
    spark = SparkSession.builder.config(conf=one_task_per_executor(conf)).getOrCreate()
    try:
        # One Spark partition per collection partition: a failure retries only that one.
        tasks = spark.sparkContext.parallelize(range(partitions), partitions)
        # A module of its own, so its state (the worker) lives as long as the Python worker that imported it.
        spark.sparkContext.addPyFile(clipguide_spark_worker.__file__)
        run, cwd = clipguide_spark_worker.run_partitions, os.getcwd()
        done = {p: (last, rows) for p, last, rows in tasks.mapPartitions(lambda it: run(base, cwd, it)).collect()}
    finally:
        spark.stop()
    missing = [p for p in range(partitions) if p not in done]
    if missing:
        fail(f"partitions {missing} were not made")
    return done


def main(argv):
    if "--" in argv:
        cut = argv.index("--")
        argv, passed = argv[:cut], argv[cut + 1:]
    else:
        passed = []
    parser = argparse.ArgumentParser(prog="clipguide-spark",
                                     description="clipguide index, score and rerank on Apache Spark")
    sub = parser.add_subparsers(dest="command", required=True)
    index = sub.add_parser("index", help="embed images into clip-retrieval's layout, then build the index")
    index.add_argument("--out", required=True, help="the collection folder, on a file system every node sees")
    index.add_argument("--no-index", action="store_true", help="write the partitions only")
    score = sub.add_parser("score", help="every image against every prompt, into Parquet partitions")
    score.add_argument("--out", required=True,
                       help="the folder for scores/scores_N.parquet, on a file system every node sees")
    score.add_argument("-p", "--prompt", action="append", required=True, help="a prompt; repeatable")
    rerank = sub.add_parser("rerank", help="the best images for the prompts: per-partition top K, merged here")
    rerank.add_argument("-p", "--prompt", action="append", required=True, help="a prompt; repeatable")
    rerank.add_argument("--negative", action="append", default=[], help="a prompt to avoid; repeatable")
    rerank.add_argument("--top", type=int, required=True, help="how many to keep")
    rerank.add_argument("--work", default=".clipguide-spark",
                        help="a folder every node sees, for the input lists made from Parquet inputs")
    for command in (index, score, rerank):
        command.add_argument("inputs", nargs="+", help="folders, images, *.txt lists or *.parquet files")
        command.add_argument("--master", default=os.environ.get("MASTER", "local[*]"), help="Spark master URL")
        command.add_argument("--output-partition-count", type=int,
                             help="partitions P (default: images / partition size)")
        command.add_argument("--partition-size", type=int, default=1000,
                             help="images per partition when P is not given")
        command.add_argument("--clipguide", default=os.path.join(root, "build", "clipguide"),
                             help="the clipguide binary")
        command.add_argument("--parquet-column", default="image_path",
                             help="the column of image paths in Parquet inputs")
        command.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="a Spark setting")
    opts = parser.parse_args(argv)
    if not os.access(opts.clipguide, os.X_OK):
        fail(f"{opts.clipguide}: no clipguide binary there (build it, or give --clipguide)")
    if opts.partition_size < 1 or (opts.output_partition_count is not None and opts.output_partition_count < 1):
        fail("partition counts and sizes must be at least 1")
    for banned in ("--worker", "--tasks", "--output-partition-count", "--out", "-o", "--build-index-only", "--top",
                   "-p", "--prompt", "--negative", "--copy-to", "--link-to", "--html", "--group-by", "--pairs"):
        if banned in passed:
            fail(f"{banned} is the driver's to set; drop it after --")
    staging = os.path.abspath(opts.work) if opts.command == "rerank" \
        else os.path.join(os.path.abspath(opts.out), ".clipguide-spark")
    os.makedirs(staging, exist_ok=True)
    inputs, images = image_inputs(opts.inputs, opts.parquet_column, staging)
    partitions = opts.output_partition_count or max(1, math.ceil(images / opts.partition_size))
    base = [os.path.abspath(opts.clipguide), opts.command, "--output-partition-count", str(partitions), "--worker"]
    started = time.perf_counter()
    if opts.command == "rerank":
        if opts.top < 1:
            fail("--top must be at least 1")
        base += [f"--prompt={p}" for p in opts.prompt] + [f"--negative={n}" for n in opts.negative]
        base += ["--top", str(opts.top)] + inputs + passed
        done = run_on_spark(opts, base, partitions, "rerank")
        # Each partition's best, merged: best score first, ties in input order, as one rerank ranks them.
        rows = sorted((row for _, ranked in done.values() for row in ranked),
                      key=lambda row: (-row["score"], row["position"]))[:opts.top]
        for rank, row in enumerate(rows, 1):
            print(json.dumps({"rank": rank, "image": row["image"], "score": row["score"]}))
        summary = {"partitions": partitions, "images": sum(last["images"] for last, _ in done.values()),
                   "seconds": time.perf_counter() - started}
        print(json.dumps({"summary": summary}), flush=True)
        return
    out = os.path.abspath(opts.out)
    if opts.command == "score":
        base += [f"--prompt={p}" for p in opts.prompt] + ["--out", out] + inputs + passed
        done = {p: last for p, (last, _) in run_on_spark(opts, base, partitions, "score").items()}
        for partition, last in sorted(done.items()):
            print(json.dumps({"partition": partition, "rows": last["rows"], "images": last["images"]}))
        summary = {"partitions": partitions, "images": sum(last["images"] for last in done.values()),
                   "rows": sum(last["rows"] for last in done.values()), "scores": os.path.join(out, "scores"),
                   "seconds": time.perf_counter() - started}
        print(json.dumps({"summary": summary}), flush=True)
        return
    base += ["--out", out] + inputs + passed
    done = {p: last.get("rows") for p, (last, _) in run_on_spark(opts, base, partitions, "index").items()}
    embed_seconds = time.perf_counter() - started
    for partition, rows in sorted(done.items()):
        print(json.dumps({"partition": partition, "rows": rows} if rows is not None
                         else {"partition": partition, "present": True}))
    summary = {"partitions": partitions, "partitions_written": sum(r is not None for r in done.values()),
               "images": sum(r or 0 for r in done.values()), "seconds": embed_seconds}
    if not opts.no_index:
        built = subprocess.run([opts.clipguide, "index", "--out", out, "--build-index-only"], stdout=subprocess.PIPE,
                               text=True)
        if built.returncode != 0:
            fail("building the index over the partitions failed (its error is above)")
        sys.stdout.write(built.stdout)
    summary["index_built"] = not opts.no_index
    summary["seconds_total"] = time.perf_counter() - started
    print(json.dumps({"summary": summary}), flush=True)
