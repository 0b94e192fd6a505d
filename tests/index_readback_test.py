#!/usr/bin/env python3
"""clipguide index's layout read back by the Python stack that reads clip-retrieval's: pyarrow and pandas for
metadata/*.parquet, numpy for img_emb/*.npy and text_emb/*.npy, and the rows checked against `clipguide embed`.

    tests/index_readback_test.py CLIPGUIDE_BINARY

Runs under .venv/bin/python (scripts/venv); where there is no venv it says so and exits 77 (ctest: skipped).
"""
import json
import os
import subprocess
import sys
import tempfile

from venv_or_skip import rerun_in_venv, root  # tests/, beside this script

rerun_in_venv("pyarrow, pandas and numpy")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

binary = os.path.abspath(sys.argv[1])
fixtures = os.environ.get("CLIPGUIDE_FIXTURES", os.path.join(root, "..", "shared", "fixtures"))
manifest = json.load(open(os.path.join(fixtures, "clip", "clip-manifest.json")))
name, entry = next(iter(manifest["models"].items()))
model = os.path.join(fixtures, "clip", entry["files"][0])
vocab = os.path.join(fixtures, "tokenizer", "bpe_simple_vocab_16e6.txt.gz")
heads = str(entry["config"]["transformer_heads"])
images = [os.path.join(fixtures, "clip", f) for f in entry["images"] + entry["photos"]]
common = ["-m", model, "--vocab", vocab, "--text-heads", heads]

with tempfile.TemporaryDirectory() as tmp:
    pairs = os.path.join(tmp, "pairs.csv")
    captions = [f"caption {i}, with a comma" for i in range(len(images))]
    with open(pairs, "w") as f:
        f.write("image,prompt\n")
        for image, caption in zip(images, captions):
            f.write(f'{image},"{caption}"\n')
    partitions = 3
    out = os.path.join(tmp, "collection")
    subprocess.run([binary, "index", *common, "--captions", pairs, "--out", out,
                    "--output-partition-count", str(partitions)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([binary, "embed", *common, "--normalize", "--format", "npy", "-o", os.path.join(tmp, "e.npy"),
                    *sum((["--image", i] for i in images), []), *sum((["--text", c] for c in captions), [])],
                   check=True)
    embedded = np.load(os.path.join(tmp, "e.npy"))
    image_rows, text_rows = embedded[: len(images)], embedded[len(images):]
    failures = []
    for p in range(partitions):
        n = str(p).zfill(len(str(partitions)))
        meta = os.path.join(out, "metadata", f"metadata_{n}.parquet")
        table = pq.read_table(meta)
        frame = pd.read_parquet(meta)
        img = np.load(os.path.join(out, "img_emb", f"img_emb_{n}.npy"))
        txt = np.load(os.path.join(out, "text_emb", f"text_emb_{n}.npy"))
        wanted = list(range(p, len(images), partitions))
        if table.column_names != ["image_path", "caption"]:
            failures.append(f"partition {p}: columns {table.column_names}")
        if list(frame["image_path"]) != [images[i] for i in wanted]:
            failures.append(f"partition {p}: pandas reads image_path {list(frame['image_path'])}")
        if table.column("caption").to_pylist() != [captions[i] for i in wanted]:
            failures.append(f"partition {p}: pyarrow reads caption {table.column('caption').to_pylist()}")
        if img.dtype != np.float16 or txt.dtype != np.float16 or img.shape != (len(wanted), image_rows.shape[1]):
            failures.append(f"partition {p}: npy {img.dtype} {img.shape}, {txt.dtype} {txt.shape}")
            continue
        # The stored rows are embed's normalized rows in float16 (its fp32 rows rounded once).
        for rows, ref, what in ((img, image_rows, "image"), (txt, text_rows, "text")):
            expected = ref[wanted].astype(np.float16)
            worst = float(np.abs(rows.astype(np.float32) - expected.astype(np.float32)).max())
            if worst > 1e-3:
                failures.append(f"partition {p}: {what} rows differ from clipguide embed by {worst}")
    index = json.load(open(os.path.join(out, "index.json")))
    if index["image"]["rows"] != len(images) or index["text"]["rows"] != len(images):
        failures.append(f"index.json: {index}")
    for f in failures:
        print("FAIL:", f)
    print(f"{partitions} partitions, {len(images)} rows read back by pyarrow, pandas and numpy: "
          f"{'ok' if not failures else f'{len(failures)} failures'}")
    sys.exit(1 if failures else 0)
