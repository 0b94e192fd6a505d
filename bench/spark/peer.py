"""clip-retrieval's way of running its inference on Spark, for bench/spark: one Spark task per partition (inputs
i, i + P, ... of the sorted folder), each running the whole Python inference on its partition in a fresh process
that loads the model itself (bench/search/clip_retrieval_way.py, one thread and one DataLoader worker per core), as
clip-retrieval's PySpark distributor runs its worker per task. Prints one JSON line: images, seconds.

    peer.py MASTER MODEL.safetensors IMAGE_FOLDER OUT_FOLDER PARTITIONS
"""
import json
import os
import subprocess
import sys
import time

from pyspark import SparkConf, TaskContext
from pyspark.sql import SparkSession

master, model, folder, out, partitions = sys.argv[1:6]
partitions = int(partitions)
way = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "search", "clip_retrieval_way.py")
python = sys.executable
paths = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith((".jpg", ".png")))


def run(tasks):
    cores = str(TaskContext.get().cpus())
    for t in tasks:
        mine = os.path.join(out, f"inputs-{t}")
        os.makedirs(mine, exist_ok=True)
        for p in paths[t::partitions]:
            link = os.path.join(mine, os.path.basename(p))
            if not os.path.exists(link):
                os.symlink(p, link)
        done = subprocess.run([python, way, model, mine, os.path.join(out, f"part-{t}"), cores, "256", "1"],
                              check=True, stdout=subprocess.PIPE, text=True)
        yield json.loads(done.stdout.strip().splitlines()[-1])["images"]


conf = SparkConf().setAppName("clip-retrieval way on Spark").setMaster(master)
conf.set("spark.pyspark.python", python).set("spark.pyspark.driver.python", python)
started = time.perf_counter()
spark = SparkSession.builder.config(conf=conf).getOrCreate()
try:
    images = sum(spark.sparkContext.parallelize(range(partitions), partitions).mapPartitions(run).collect())
finally:
    spark.stop()
print(json.dumps({"images": images, "seconds": time.perf_counter() - started}))
