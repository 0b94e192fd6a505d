"""clip-retrieval's `inference` over a folder of images, written out step by step with the libraries it uses, in the
project's pinned venv: clip-retrieval 2.45 itself pins numpy<2, pandas<3, pyarrow<16 and open-clip-torch<3, which
this venv's stack does not satisfy, and it loads its models by name from the hub. What it does, and what this does:
a torch DataLoader over the files (PIL decode, the model's open_clip preprocess), encode_image in batches, the
features L2-normalized and cast to float16 (its ClipMapper), np.save of the partition and pandas' to_parquet of
image_path (its NumpyWriter / OutputSink). Prints one JSON line: images, seconds, images per second.

    clip_retrieval_way.py MODEL.safetensors IMAGE_FOLDER OUT_FOLDER THREADS BATCH WORKERS [PRECISION]

PRECISION is fp32 (default, as clip-retrieval runs on a CPU) or bf16: encode_image under torch's CPU autocast to
bfloat16, the same trade as `clipguide index --precision bf16`, to compare like with like.
"""
import json
import os
import sys
import time

import numpy as np
import open_clip
import pandas as pd
import torch
from PIL import Image
from safetensors.torch import load_file

model_path, folder, out, threads, batch, workers = sys.argv[1:7]
precision = sys.argv[7] if len(sys.argv) > 7 else "fp32"
assert precision in ("fp32", "bf16"), precision
torch.set_num_threads(int(threads))
started = time.perf_counter()
model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32-quickgelu", pretrained=None)
state = {k: v.float() for k, v in load_file(model_path).items()}
missing, unexpected = model.load_state_dict(state, strict=False)
assert not [k for k in missing if k != "attn_mask"] and not unexpected, (missing, unexpected)
model.eval()
load_seconds = time.perf_counter() - started


class Files(torch.utils.data.Dataset):
    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return preprocess(Image.open(self.paths[i])), self.paths[i]


paths = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith((".jpg", ".png")))
loader = torch.utils.data.DataLoader(Files(paths), batch_size=int(batch), shuffle=False, num_workers=int(workers),
                                     prefetch_factor=2 if int(workers) > 0 else None)
started = time.perf_counter()
features, names = [], []
with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
    for pixels, batch_paths in loader:
        f = model.encode_image(pixels).float()
        f /= f.norm(dim=-1, keepdim=True)
        features.append(f.cpu().to(torch.float16).numpy())
        names.extend(batch_paths)
os.makedirs(os.path.join(out, "img_emb"), exist_ok=True)
os.makedirs(os.path.join(out, "metadata"), exist_ok=True)
np.save(os.path.join(out, "img_emb", "img_emb_0.npy"), np.concatenate(features))
pd.DataFrame({"image_path": names}).to_parquet(os.path.join(out, "metadata", "metadata_0.parquet"))
seconds = time.perf_counter() - started
print(json.dumps(dict(images=len(names), seconds=seconds, images_per_second=len(names) / seconds,
                      load_seconds=load_seconds, torch=torch.__version__, precision=precision)))
