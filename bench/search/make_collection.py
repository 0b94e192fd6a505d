"""Writes N smooth, noisy JPEG pictures (320x240 to 640x480, as web thumbnails run) into FOLDER, the same every run.

usage: make_collection.py FOLDER N
"""
import os
import sys

import numpy as np
from PIL import Image

out, count = sys.argv[1], int(sys.argv[2])
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(0)
sizes = [(320, 240), (400, 300), (480, 360), (640, 480), (300, 400)]
for i in range(count):
    name = os.path.join(out, f"img{i:06d}.jpg")
    if os.path.exists(name):
        continue
    w, h = sizes[i % len(sizes)]
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    base = np.stack([np.sin(6 * x + i), np.cos(5 * y - i), np.sin(4 * (x + y) + 2 * i)], -1) * 0.5 + 0.5
    img = np.clip(base * 255 + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(name, quality=90)
