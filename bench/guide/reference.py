"""bench/guide, the reference Python way: one guidance step as the VQGAN+CLIP notebooks write it (nerdyrodent's
MakeCutouts with adaptive average pooling, random flips and noise, spherical distance to a cached text embedding,
ClampWithGrad, Adam), on a plain PyTorch CLIP (bench/score/reference.py, after openai/CLIP model.py), and a taming
VQGAN decoder (f16 ImageNet shape) decode + backward. Prints one JSON object.

usage: reference.py CLIP.safetensors TOKENS.json SIZE CUTN STEPS THREADS [vqgan] [--device D] [--precision P]
"""
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "score"))
from reference import CLIP, read_safetensors  # noqa: E402

MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


class ClampWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(0, 1)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (g * (x - x.clamp(0, 1)) >= 0)


class MakeCutouts(nn.Module):
    def __init__(self, cut_size, cutn, cut_pow=1.0, noise_fac=0.1):
        super().__init__()
        self.cut_size, self.cutn, self.cut_pow, self.noise_fac = cut_size, cutn, cut_pow, noise_fac

    def forward(self, x):
        side_y, side_x = x.shape[2:4]
        max_size = min(side_x, side_y)
        min_size = min(side_x, side_y, self.cut_size)
        cutouts = []
        for _ in range(self.cutn):
            size = int(torch.rand([]) ** self.cut_pow * (max_size - min_size) + min_size)
            ox = torch.randint(0, side_x - size + 1, ())
            oy = torch.randint(0, side_y - size + 1, ())
            cutouts.append(F.adaptive_avg_pool2d(x[:, :, oy:oy + size, ox:ox + size], self.cut_size))
        batch = torch.cat(cutouts)
        flip = (torch.rand(batch.shape[0], 1, 1, 1) < 0.5).to(batch.device)
        batch = torch.where(flip, batch.flip(3), batch)
        facs = batch.new_empty([batch.shape[0], 1, 1, 1]).uniform_(0, self.noise_fac)
        return batch + facs * torch.randn_like(batch)


def spherical_dist(x, y):
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    return (x - y).norm(dim=-1).div(2).arcsin().pow(2).mul(2)


# ---- taming Decoder (model.py), only what the decoder needs ----
def nonlinearity(x):
    return x * torch.sigmoid(x)  # as taming's model.py writes it


def norm(c):
    return nn.GroupNorm(32, c, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1, self.conv1 = norm(cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2, self.conv2 = norm(cout), nn.Conv2d(cout, cout, 3, 1, 1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x):
        h = self.conv1(nonlinearity(self.norm1(x)))
        h = self.conv2(nonlinearity(self.norm2(h)))
        return (self.nin_shortcut(x) if self.nin_shortcut is not None else x) + h


class AttnBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        h = self.norm(x)
        b, c, hh, ww = x.shape
        q = self.q(h).reshape(b, c, hh * ww).permute(0, 2, 1)
        w = torch.bmm(q, self.k(h).reshape(b, c, hh * ww)) * c ** -0.5
        w = F.softmax(w, dim=2)
        h = torch.bmm(self.v(h).reshape(b, c, hh * ww), w.permute(0, 2, 1)).reshape(b, c, hh, ww)
        return x + self.proj_out(h)


class Decoder(nn.Module):
    def __init__(self, ch=128, ch_mult=(1, 1, 2, 2, 4), num_res_blocks=2, attn_levels=(4,), z_channels=256):
        super().__init__()
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, 3, 1, 1)
        self.mid = nn.ModuleList([ResnetBlock(block_in, block_in), AttnBlock(block_in), ResnetBlock(block_in, block_in)])
        self.levels = []
        for i in reversed(range(len(ch_mult))):
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, ch * ch_mult[i]))
                block_in = ch * ch_mult[i]
                if i in attn_levels:
                    blocks.append(AttnBlock(block_in))
            up = nn.Conv2d(block_in, block_in, 3, 1, 1) if i != 0 else None
            self.levels.append((nn.ModuleList(blocks), up))
        self.blocks = nn.ModuleList([nn.ModuleList([b, u]) if u is not None else b for b, u in self.levels])
        self.norm_out, self.conv_out = norm(block_in), nn.Conv2d(block_in, 3, 3, 1, 1)

    def forward(self, z):
        h = self.conv_in(z)
        for m in self.mid:
            h = m(h)
        for blocks, up in self.levels:
            for b in blocks:
                h = b(h)
            if up is not None:
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(nonlinearity(self.norm_out(h)))


def main():
    weights, tokens_path = sys.argv[1], sys.argv[2]
    size, cutn, steps, threads = (int(a) for a in sys.argv[3:7])
    opts = sys.argv[7:]
    with_vqgan = "vqgan" in opts
    # --device cuda and --precision bf16|fp16 (autocast on that device): the GPU bench's PyTorch eager step.
    device = torch.device(opts[opts.index("--device") + 1] if "--device" in opts else "cpu")
    precision = opts[opts.index("--precision") + 1] if "--precision" in opts else "fp32"
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = CLIP(read_safetensors(weights)).to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        text = model.encode_text(torch.tensor(json.load(open(tokens_path)), device=device))
    make_cutouts = MakeCutouts(model.resolution, cutn)
    param = (torch.rand(1, 3, size, size) - 0.5).mul(0.5).add(0.5).to(device).requires_grad_(True)
    opt = torch.optim.Adam([param], lr=0.05)
    mean, std = MEAN.to(device), STD.to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None

    def step():
        opt.zero_grad()
        with torch.autocast(device.type, dtype=half.get(precision, torch.bfloat16), enabled=precision in half):
            image = ClampWithGrad.apply(param)
            feats = model.visual((make_cutouts(image) - mean) / std).float()
            loss = spherical_dist(feats.unsqueeze(1), text.unsqueeze(0)).mean()
        loss.backward()
        opt.step()

    step()  # warm-up
    times = []
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    out = {f"{precision}_step_s": statistics.median(times), "threads": threads, "device": str(device)}
    if with_vqgan:
        dec, post_quant_conv = Decoder(), nn.Conv2d(256, 256, 1)
        codebook = torch.randn(16384, 256)
        for p in list(dec.parameters()) + list(post_quant_conv.parameters()):
            p.requires_grad_(False)
        z = torch.randn(1, 256, size // 16, size // 16, requires_grad=True)

        def synth(z):
            # The notebook's vector_quantize with the straight-through gradient, then decode.
            x = z.movedim(1, 3)
            d = x.pow(2).sum(dim=-1, keepdim=True) + codebook.pow(2).sum(dim=1) - 2 * x @ codebook.T
            x_q = F.one_hot(d.argmin(-1), codebook.shape[0]).to(d.dtype) @ codebook
            z_q = (x + (x_q - x).detach()).movedim(3, 1)
            return dec(post_quant_conv(z_q))

        times = []
        for i in range(4):
            t0 = time.perf_counter()
            synth(z).square().mean().backward()
            if i > 0:
                times.append(time.perf_counter() - t0)
            z.grad = None
        out["vqgan_decode_backward_s"] = statistics.median(times)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
