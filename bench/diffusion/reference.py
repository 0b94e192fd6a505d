"""bench/diffusion, the reference Python way: one CLIP-guided DDIM step as guided-diffusion and Crowson's notebook
do it (p_mean_variance without gradients for the sampler, again inside cond_fn with gradients; pred_xstart blended
with x; MakeCutouts; spherical + TV + range losses; condition_score; the DDIM update), on guided-diffusion's UNetModel
written out in plain PyTorch (unet.py's structure) with the weights bench_diffusion wrote, and the plain PyTorch CLIP
of bench/score. Prints one JSON object.

usage: reference.py CLIP.safetensors TOKENS.json UNET.safetensors STEPS THREADS
"""
import importlib.util
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.dirname(path))
    spec.loader.exec_module(module)
    return module


score_ref = load("score_reference", os.path.join(HERE, "..", "score", "reference.py"))
guide_ref = load("guide_reference", os.path.join(HERE, "..", "guide", "reference.py"))


class GroupNorm32(nn.GroupNorm):
    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


def normalization(ch):
    return GroupNorm32(32, ch)


def timestep_embedding(t, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Upsample(nn.Module):
    def __init__(self, ch, use_conv):
        super().__init__()
        if use_conv:
            self.conv = nn.Conv2d(ch, ch, 3, padding=1)
        self.use_conv = use_conv

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    def __init__(self, ch, use_conv):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)

    def forward(self, x):
        return self.op(x)


class ResBlock(nn.Module):
    def __init__(self, ch, emb_ch, out_ch, scale_shift, up=False, down=False):
        super().__init__()
        self.in_layers = nn.Sequential(normalization(ch), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        self.updown = up or down
        self.h_upd = Upsample(ch, False) if up else Downsample(ch, False) if down else nn.Identity()
        self.x_upd = Upsample(ch, False) if up else Downsample(ch, False) if down else nn.Identity()
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_ch, 2 * out_ch if scale_shift else out_ch))
        self.out_layers = nn.Sequential(normalization(out_ch), nn.SiLU(), nn.Dropout(0.0), nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip_connection = nn.Identity() if out_ch == ch else nn.Conv2d(ch, out_ch, 1)
        self.scale_shift = scale_shift

    def forward(self, x, emb):
        if self.updown:
            in_rest, in_conv = self.in_layers[:-1], self.in_layers[-1]
            h = in_conv(self.h_upd(in_rest(x)))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.scale_shift:
            scale, shift = torch.chunk(emb_out, 2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class QKVAttention(nn.Module):  # the "new order", as the 64x64 model uses
    def __init__(self, n_heads):
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv):
        bs, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.chunk(3, dim=1)
        scale = 1 / math.sqrt(math.sqrt(ch))
        weight = torch.einsum("bct,bcs->bts", (q * scale).view(bs * self.n_heads, ch, length),
                              (k * scale).view(bs * self.n_heads, ch, length))
        weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
        a = torch.einsum("bts,bcs->bct", weight, v.reshape(bs * self.n_heads, ch, length))
        return a.reshape(bs, -1, length)


class AttentionBlock(nn.Module):
    def __init__(self, ch, head_channels):
        super().__init__()
        self.norm = normalization(ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.attention = QKVAttention(ch // head_channels)
        self.proj_out = nn.Conv1d(ch, ch, 1)

    def forward(self, x):
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = self.proj_out(self.attention(self.qkv(self.norm(x))))
        return (x + h).reshape(b, c, *spatial)


class TimestepEmbedSequential(nn.Sequential):
    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNetModel(nn.Module):
    def __init__(self, mc=192, out_ch=6, nrb=3, mult=(1, 2, 3, 4), attn_levels=(1, 2, 3), head_channels=64):
        super().__init__()
        emb_ch = 4 * mc
        self.mc = mc
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(3, mc, 3, padding=1))])
        chans, ch = [mc], mc
        for level, m in enumerate(mult):
            for _ in range(nrb):
                layers = [ResBlock(ch, emb_ch, m * mc, True)]
                ch = m * mc
                if level in attn_levels:
                    layers.append(AttentionBlock(ch, head_channels))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(ResBlock(ch, emb_ch, ch, True, down=True)))
                chans.append(ch)
        self.middle_block = TimestepEmbedSequential(ResBlock(ch, emb_ch, ch, True), AttentionBlock(ch, head_channels),
                                                    ResBlock(ch, emb_ch, ch, True))
        self.output_blocks = nn.ModuleList([])
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(nrb + 1):
                layers = [ResBlock(ch + chans.pop(), emb_ch, mc * m, True)]
                ch = mc * m
                if level in attn_levels:
                    layers.append(AttentionBlock(ch, head_channels))
                if level and i == nrb:
                    layers.append(ResBlock(ch, emb_ch, ch, True, up=True))
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.Conv2d(mc, out_ch, 3, padding=1))

    def forward(self, x, timesteps):
        emb = self.time_embed(timestep_embedding(timesteps, self.mc))
        hs, h = [], x
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


def spaced_schedule():
    """Cosine schedule, 1000 steps, respaced "ddim50" (gaussian_diffusion.py + respace.py)."""
    alpha_bar = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = torch.tensor([min(1 - alpha_bar((i + 1) / 1000) / alpha_bar(i / 1000), 0.999) for i in range(1000)], dtype=torch.float64)
    cumprod = torch.cumprod(1 - betas, 0)
    use = list(range(0, 1000, 20))
    new_betas, last = [], 1.0
    for i in use:
        new_betas.append(1 - cumprod[i].item() / last)
        last = cumprod[i].item()
    b = torch.tensor(new_betas, dtype=torch.float64)
    ac = torch.cumprod(1 - b, 0)
    ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    pv = b * (1 - ac_prev) / (1 - ac)
    return dict(timestep_map=torch.tensor(use), betas=b, ac=ac, ac_prev=ac_prev, sqrt_recip_ac=torch.sqrt(1 / ac),
                sqrt_recipm1_ac=torch.sqrt(1 / ac - 1), sqrt_1m_ac=torch.sqrt(1 - ac),
                log_pv_clipped=torch.log(torch.cat([pv[1:2], pv[1:]])), log_betas=torch.log(b),
                coef1=b * torch.sqrt(ac_prev) / (1 - ac), coef2=(1 - ac_prev) * torch.sqrt(1 - b) / (1 - ac))


def extract(arr, t, shape):
    return arr[t].float().view(-1, *([1] * (len(shape) - 1))).expand(shape)


def main():
    clip_path, tokens_path, unet_path = sys.argv[1:4]
    steps, threads = int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    clip = score_ref.CLIP(score_ref.read_safetensors(clip_path))
    unet = UNetModel()
    missing = unet.load_state_dict(score_ref.read_safetensors(unet_path), strict=True)
    for p in list(clip.parameters()) + list(unet.parameters()):
        p.requires_grad_(False)
    unet.eval()
    with torch.no_grad():
        text = clip.encode_text(torch.tensor(json.load(open(tokens_path))))
    make_cutouts = guide_ref.MakeCutouts(clip.resolution, 16)
    s = spaced_schedule()

    def p_mean_variance(x, t, clip_denoised):
        out = unet(x, s["timestep_map"][t])
        eps, var_values = out.split(3, dim=1)
        frac = (var_values + 1) / 2
        log_var = frac * extract(s["log_betas"], t, x.shape) + (1 - frac) * extract(s["log_pv_clipped"], t, x.shape)
        pred_xstart = extract(s["sqrt_recip_ac"], t, x.shape) * x - extract(s["sqrt_recipm1_ac"], t, x.shape) * eps
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean = extract(s["coef1"], t, x.shape) * pred_xstart + extract(s["coef2"], t, x.shape) * x
        return {"mean": mean, "log_variance": log_var, "pred_xstart": pred_xstart}

    def cond_fn(x, t):
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            out = p_mean_variance(x, t, False)
            fac = s["sqrt_1m_ac"][t].float()
            x_in = out["pred_xstart"] * fac + x * (1 - fac)
            clip_in = (make_cutouts(x_in.add(1).div(2)) - guide_ref.MEAN) / guide_ref.STD
            embeds = clip.visual(clip_in).float()
            dists = guide_ref.spherical_dist(embeds.unsqueeze(1), text.unsqueeze(0)).view(16, x.shape[0], -1)
            losses = dists.sum(2).mean(0)
            xp = F.pad(x_in, (0, 1, 0, 1), "replicate")
            tv = ((xp[..., :-1, 1:] - xp[..., :-1, :-1]) ** 2 + (xp[..., 1:, :-1] - xp[..., :-1, :-1]) ** 2).mean([1, 2, 3])
            rng = (out["pred_xstart"] - out["pred_xstart"].clamp(-1, 1)).pow(2).mean([1, 2, 3])
            loss = losses.sum() * 1000 + tv.sum() * 150 + rng.sum() * 50
            return -torch.autograd.grad(loss, x)[0]

    def ddim_step(x, t):
        out = p_mean_variance(x, t, True)
        alpha_bar = extract(s["ac"], t, x.shape)
        eps = (extract(s["sqrt_recip_ac"], t, x.shape) * x - out["pred_xstart"]) / extract(s["sqrt_recipm1_ac"], t, x.shape)
        eps = eps - (1 - alpha_bar).sqrt() * cond_fn(x, t)  # condition_score
        pred_xstart = extract(s["sqrt_recip_ac"], t, x.shape) * x - extract(s["sqrt_recipm1_ac"], t, x.shape) * eps
        eps = (extract(s["sqrt_recip_ac"], t, x.shape) * x - pred_xstart) / extract(s["sqrt_recipm1_ac"], t, x.shape)
        alpha_bar_prev = extract(s["ac_prev"], t, x.shape)
        noise = torch.randn_like(x)  # eta 0: unused, drawn as guided-diffusion draws it
        return pred_xstart * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev) * eps + 0 * noise

    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        x = ddim_step(x, torch.tensor([49]))  # warm-up
        times = []
        for k in range(steps):
            t0 = time.perf_counter()
            x = ddim_step(x, torch.tensor([48 - k]))
            times.append(time.perf_counter() - t0)
    print(json.dumps({"fp32_step_s": statistics.median(times), "threads": threads}))


if __name__ == "__main__":
    main()
