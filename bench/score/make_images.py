"""Writes N smooth, noisy test pictures (PNG and JPEG, 640x480 to 1280x960) into FOLDER, the same every run.

usage: make_images.py FOLDER N
"""
import os
import sys

import numpy as np
from PIL import Image

out, count = sys.argv[1], int(sys.argv[2])
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(0)
sizes = ([(640, 480)] * 24 + [(800, 600)] * 16 + [(1024, 768)] * 16 + [(1280, 960)] * 8)[:count]
for i, (w, h) in enumerate(sizes):
    name = os.path.join(out, "img%02d.%s" % (i, "jpg" if i % 3 == 1 else "png"))
    if os.path.exists(name):
        continue
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    base = np.stack([np.sin(6 * x + i), np.cos(5 * y - i), np.sin(4 * (x + y) + 2 * i)], -1) * 0.5 + 0.5
    img = np.clip(base * 255 + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(name, quality=90) if name.endswith("jpg") else Image.fromarray(img).save(name)
