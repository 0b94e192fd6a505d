"""bench/diffusion, the reference Python way: one CLIP-guided DDIM step as guided-diffusion and Crowson's notebook
do it (p_mean_variance without gradients for the sampler, again inside cond_fn with gradients; pred_xstart blended
with x; MakeCutouts; spherical + TV + range losses; condition_score; the DDIM update), on guided-diffusion's UNetModel
written out in plain PyTorch (unet.py's structure) with the weights bench_diffusion wrote, and the plain PyTorch CLIP
of bench/score. Prints one JSON object.

usage: reference.py CLIP.safetensors TOKENS.json UNET.safetensors STEPS THREADS [bf16|fp16] [--compile] [--device D]
                    [--unet 64|256] [--cutn N]
"""
import contextlib
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
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32, device=t.device) / half)
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


def qkv_attention(q, k, v):
    """q, k, v [B*H, ch, T] -> [B*H, ch, T]: softmax over the keys of q.k / sqrt(ch), the weights in fp32."""
    scale = 1 / math.sqrt(math.sqrt(q.shape[1]))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    weight = torch.softmax(weight.float(), dim=-1).type(weight.dtype)
    return torch.einsum("bts,bcs->bct", weight, v)


class QKVAttention(nn.Module):  # the "new order", as the 64x64 model uses
    def __init__(self, n_heads):
        super().__init__()
        self.n_heads = n_heads

    def forward(self, qkv):
        bs, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = (t.reshape(bs * self.n_heads, ch, length) for t in qkv.chunk(3, dim=1))
        return qkv_attention(q, k, v).reshape(bs, -1, length)


class QKVAttentionLegacy(QKVAttention):  # heads outermost, as the 256x256 model uses
    def forward(self, qkv):
        bs, width, length = qkv.shape
        ch = width // (3 * self.n_heads)
        q, k, v = qkv.reshape(bs * self.n_heads, ch * 3, length).split(ch, dim=1)
        return qkv_attention(q, k, v).reshape(bs, -1, length)


class AttentionBlock(nn.Module):
    def __init__(self, ch, head_channels, new_order=True):
        super().__init__()
        self.norm = normalization(ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.attention = (QKVAttention if new_order else QKVAttentionLegacy)(ch // head_channels)
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
    def __init__(self, mc=192, out_ch=6, nrb=3, mult=(1, 2, 3, 4), attn_levels=(1, 2, 3), head_channels=64,
                 new_order=True):
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
                    layers.append(AttentionBlock(ch, head_channels, new_order))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(ResBlock(ch, emb_ch, ch, True, down=True)))
                chans.append(ch)
        self.middle_block = TimestepEmbedSequential(ResBlock(ch, emb_ch, ch, True), AttentionBlock(ch, head_channels, new_order),
                                                    ResBlock(ch, emb_ch, ch, True))
        self.output_blocks = nn.ModuleList([])
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(nrb + 1):
                layers = [ResBlock(ch + chans.pop(), emb_ch, mc * m, True)]
                ch = mc * m
                if level in attn_levels:
                    layers.append(AttentionBlock(ch, head_channels, new_order))
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
    # Options: bf16 or fp16 (autocast for CLIP; on CUDA for the UNet too, as our side runs it), --compile (torch.compile
    # of the UNet and of CLIP's image tower: a reference line, PyTorch 2.x only), --device cuda, --unet 64|256 (the
    # 64x64 or the 256x256 uncond model's shape), --cutn N.
    opts = sys.argv[6:]
    value = lambda flag, default: opts[opts.index(flag) + 1] if flag in opts else default
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}
    precision = next((p for p in half if p in opts), "fp32")
    compiled = "--compile" in opts
    device = torch.device(value("--device", "cpu"))
    size, cutn = int(value("--unet", 64)), int(value("--cutn", 16))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    clip = score_ref.CLIP(score_ref.read_safetensors(clip_path)).to(device)
    if size == 256:
        unet = UNetModel(256, 6, 2, (1, 1, 2, 2, 4, 4), (3, 4, 5), 64, new_order=False)
    else:
        unet = UNetModel()
    unet.load_state_dict(score_ref.read_safetensors(unet_path), strict=True)
    unet.to(device)
    for p in list(clip.parameters()) + list(unet.parameters()):
        p.requires_grad_(False)
    unet.eval()
    with torch.no_grad():
        text = clip.encode_text(torch.tensor(json.load(open(tokens_path)), device=device))
    make_cutouts = guide_ref.MakeCutouts(clip.resolution, cutn)
    visual = torch.compile(clip.visual) if compiled else clip.visual
    unet_fn = torch.compile(unet) if compiled else unet
    mean, std = guide_ref.MEAN.to(device), guide_ref.STD.to(device)
    s = {k: v.to(device) for k, v in spaced_schedule().items()}
    autocast = lambda: torch.autocast(device.type, dtype=half.get(precision, torch.bfloat16), enabled=precision != "fp32")
    unet_autocast = autocast if device.type == "cuda" else contextlib.nullcontext

    def p_mean_variance(x, t, clip_denoised):
        with unet_autocast():
            out = unet_fn(x, s["timestep_map"][t]).float()
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
            clip_in = (make_cutouts(x_in.add(1).div(2)) - mean) / std
            with autocast():
                embeds = visual(clip_in).float()
            dists = guide_ref.spherical_dist(embeds.unsqueeze(1), text.unsqueeze(0)).view(cutn, x.shape[0], -1)
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

    x = torch.randn(1, 3, size, size).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    with torch.no_grad():
        x = ddim_step(x, torch.tensor([49], device=device))  # warm-up
        times = []
        for k in range(steps):
            sync()
            t0 = time.perf_counter()
            x = ddim_step(x, torch.tensor([48 - k], device=device))
            sync()
            times.append(time.perf_counter() - t0)
    print(json.dumps({"step_s": statistics.median(times), "precision": precision, "compiled": compiled,
                      "torch": torch.__version__, "threads": threads, "device": str(device)}))


if __name__ == "__main__":
    main()
