"""bench/score, today's peers: the same scoring as reference.py (PIL + torchvision preprocessing, batches of 32,
decode + preprocess + encode + score timed, model loading excluded) through open_clip and transformers on the
venv's PyTorch 2.x, in fp32 and under bf16 autocast, in torch.inference_mode(); each also through torch.compile as a
reference line. Prints one JSON object per line: peer, precision, images/s, scores.

usage: peers.py WEIGHTS.safetensors TOKENS.json THREADS [--compile] IMAGE...
"""
import json
import os
import sys
import time

import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from python_peers import peers, precision, precisions  # noqa: E402
from reference import clip_preprocess  # noqa: E402  (bench/score, the script's own folder)


def main():
    weights, tokens_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with_compile = sys.argv[4] == "--compile"
    images = sys.argv[5 if with_compile else 4:]
    torch.set_num_threads(threads)
    tokens = torch.tensor(json.load(open(tokens_path)))
    for peer in peers(weights, with_compile):
        preprocess = clip_preprocess(peer.resolution)
        for prec in precisions():
            with torch.inference_mode(), precision(prec):
                text = peer.text_fn(tokens).float()
                text = text / text.norm(dim=-1, keepdim=True)
                warm = torch.stack([preprocess(Image.open(p)) for p in images[:32]])
                peer.image_fn(warm)  # warm-up (and, compiled, the compilation) on a full batch, untimed
                start = time.perf_counter()
                scores = []
                for b in range(0, len(images), 32):
                    batch = torch.stack([preprocess(Image.open(p)) for p in images[b:b + 32]])
                    feats = peer.image_fn(batch).float()
                    feats = feats / feats.norm(dim=-1, keepdim=True)
                    scores.append(feats @ text.t())
                seconds = time.perf_counter() - start
            print(json.dumps({"peer": peer.name, "precision": prec, "images_per_s": len(images) / seconds,
                              "scores": torch.cat(scores).tolist(), "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
