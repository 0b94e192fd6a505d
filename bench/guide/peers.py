"""bench/guide, today's peers: reference.py's guidance step (MakeCutouts, ClampWithGrad, spherical distance to the
cached text embedding, backward to the image, Adam) with the image tower of open_clip and of transformers on the
venv's PyTorch 2.x, in fp32 and under bf16 autocast, in grad mode; each also through torch.compile as a reference
line. Prints one JSON object per line: peer, precision, median seconds per step.

usage: peers.py CLIP.safetensors TOKENS.json SIZE CUTN STEPS THREADS [--compile]
"""
import importlib.util
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from python_peers import MEAN, STD, peers, precision, precisions  # noqa: E402

# The notebook's step pieces from this bench's reference.py (loaded under its own name: it imports bench/score's).
_spec = importlib.util.spec_from_file_location("guide_reference", os.path.join(os.path.dirname(__file__), "reference.py"))
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)
ClampWithGrad, MakeCutouts, spherical_dist = reference.ClampWithGrad, reference.MakeCutouts, reference.spherical_dist


def main():
    weights, tokens_path = sys.argv[1], sys.argv[2]
    size, cutn, steps, threads = (int(a) for a in sys.argv[3:7])
    with_compile = len(sys.argv) > 7 and sys.argv[7] == "--compile"
    torch.set_num_threads(threads)
    tokens = torch.tensor(json.load(open(tokens_path)))
    for peer in peers(weights, with_compile):
        for prec in precisions():
            torch.manual_seed(0)
            with torch.no_grad(), precision(prec):
                text = peer.text_fn(tokens).float()
            make_cutouts = MakeCutouts(peer.resolution, cutn)
            param = (torch.rand(1, 3, size, size) - 0.5).mul(0.5).add(0.5).requires_grad_(True)
            opt = torch.optim.Adam([param], lr=0.05)

            def step():
                opt.zero_grad()
                with precision(prec):
                    image = ClampWithGrad.apply(param)
                    feats = peer.image_fn((make_cutouts(image) - MEAN) / STD).float()
                    loss = spherical_dist(feats.unsqueeze(1), text.unsqueeze(0)).mean()
                loss.backward()
                opt.step()

            step()  # warm-up (and, compiled, the compilation)
            step()
            times = []
            for _ in range(steps):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            print(json.dumps({"peer": peer.name, "precision": prec, "step_s": statistics.median(times),
                              "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
