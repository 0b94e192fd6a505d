#!/usr/bin/python3
"""The reference Python way of scoring images against prompts, for bench/score: PIL + torchvision
preprocessing (CLIP's _transform) and a straightforward PyTorch CLIP written after openai/CLIP clip/model.py,
loading the same safetensors weights. Prints one JSON line: images/s of the image pipeline, the scores, and the
FLOPs per image counted with forward hooks.

  reference.py WEIGHTS.safetensors TOKENS.json THREADS [--device cuda [--precision bf16|fp16]] IMAGE...
"""
import json
import math
import os
import struct
import sys
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor


def read_safetensors(path):
    dtypes = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "BF16": None}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        arr = np.frombuffer(data[b:e], dtype=dtypes[info["dtype"]]).reshape(info["shape"])
        out[name] = torch.from_numpy(arr.copy()).float() if info["dtype"] != "I64" else torch.from_numpy(arr.copy())
    return out


class Bottleneck(nn.Module):
    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = None
        if stride > 1 or inplanes != planes * 4:
            self.downsample = nn.Sequential(OrderedDict([("-1", nn.AvgPool2d(stride)),
                                                         ("0", nn.Conv2d(inplanes, planes * 4, 1, bias=False)),
                                                         ("1", nn.BatchNorm2d(planes * 4))]))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class AttentionPool2d(nn.Module):
    def __init__(self, spacial_dim, embed_dim, num_heads, output_dim):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.zeros(spacial_dim ** 2 + 1, embed_dim))
        self.k_proj, self.q_proj, self.v_proj = (nn.Linear(embed_dim, embed_dim) for _ in range(3))
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x):
        x = x.flatten(start_dim=2).permute(2, 0, 1)
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
        x = x + self.positional_embedding[:, None, :]
        x, _ = F.multi_head_attention_forward(
            query=x[:1], key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight, v_proj_weight=self.v_proj.weight,
            in_proj_weight=None, in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0, out_proj_weight=self.c_proj.weight,
            out_proj_bias=self.c_proj.bias, use_separate_proj_weight=True, training=False, need_weights=False)
        return x.squeeze(0)


class ModifiedResNet(nn.Module):
    def __init__(self, layers, output_dim, heads, input_resolution, width):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self._inplanes = width
        self.layer1 = self._make_layer(width, layers[0])
        self.layer2 = self._make_layer(width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(width * 8, layers[3], stride=2)
        self.attnpool = AttentionPool2d(input_resolution // 32, width * 32, heads, output_dim)

    def _make_layer(self, planes, blocks, stride=1):
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * 4
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        x = F.avg_pool2d(x, 2)
        return self.attnpool(self.layer4(self.layer3(self.layer2(self.layer1(x)))))


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, d_model, n_head, attn_mask=None):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_head)
        self.ln_1 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(d_model, d_model * 4)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(d_model * 4, d_model))]))
        self.ln_2 = nn.LayerNorm(d_model)
        self.register_buffer("attn_mask", attn_mask, persistent=False)  # moves with .to(device)

    def forward(self, x):
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=self.attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, attn_mask=None):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, attn_mask) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    def __init__(self, input_resolution, patch_size, width, layers, heads, output_dim):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros((input_resolution // patch_size) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, output_dim))

    def forward(self, x):
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        x = torch.cat([self.class_embedding + x.new_zeros(x.shape[0], 1, x.shape[-1]), x], dim=1)
        x = self.ln_pre(x + self.positional_embedding)
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x[:, 0, :]) @ self.proj


class CLIP(nn.Module):
    def __init__(self, sd):
        super().__init__()
        embed_dim = sd["text_projection"].shape[1]
        if "visual.proj" in sd:
            width = sd["visual.conv1.weight"].shape[0]
            patch = sd["visual.conv1.weight"].shape[-1]
            layers = len([k for k in sd if k.startswith("visual.") and k.endswith(".attn.in_proj_weight")])
            res = patch * round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
            self.visual = VisionTransformer(res, patch, width, layers, width // 64, embed_dim)
        else:
            counts = [len(set(k.split(".")[2] for k in sd if k.startswith(f"visual.layer{b}"))) for b in range(1, 5)]
            width = sd["visual.layer1.0.conv1.weight"].shape[0]
            res = round((sd["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5) * 32
            self.visual = ModifiedResNet(counts, embed_dim, width * 32 // 64, res, width)
        self.resolution = res
        ctx, tw = sd["positional_embedding"].shape
        mask = torch.full((ctx, ctx), float("-inf")).triu_(1)
        layers = len(set(k.split(".")[2] for k in sd if k.startswith("transformer.resblocks")))
        self.transformer = Transformer(tw, layers, tw // 64, mask)
        self.token_embedding = nn.Embedding(*sd["token_embedding.weight"].shape)
        self.positional_embedding = nn.Parameter(torch.zeros(ctx, tw))
        self.ln_final = nn.LayerNorm(tw)
        self.text_projection = nn.Parameter(torch.zeros(tw, embed_dim))
        self.logit_scale = nn.Parameter(torch.zeros([]))
        self.load_state_dict({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, strict=False)
        self.eval()

    def encode_text(self, text):
        x = self.token_embedding(text) + self.positional_embedding
        x = self.ln_final(self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2))
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection


def count_flops(model, res):
    """Multiply-adds x 2 of one image through the visual tower, from forward hooks."""
    total = [0]

    def conv(m, i, o):
        total[0] += 2 * o.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups

    def linear(m, i, o):
        total[0] += 2 * o.numel() * m.in_features

    def mha(m, i, o):
        length, batch, d = i[0].shape
        total[0] += batch * (2 * length * d * 3 * d + 2 * length * d * d + 4 * length * length * d)

    def pool(m, i, o):
        b, c, h, w = i[0].shape
        length = h * w + 1
        total[0] += b * (2 * c * c + 4 * length * c * c + 4 * length * c + 2 * c * m.c_proj.out_features)

    hooks = []
    for mod in model.visual.modules():
        if isinstance(mod, nn.Conv2d):
            hooks.append(mod.register_forward_hook(conv))
        elif isinstance(mod, nn.Linear) and not isinstance(mod, nn.modules.linear.NonDynamicallyQuantizableLinear):
            hooks.append(mod.register_forward_hook(linear))
        elif isinstance(mod, nn.MultiheadAttention):
            hooks.append(mod.register_forward_hook(mha))
        elif isinstance(mod, AttentionPool2d):
            hooks.append(mod.register_forward_hook(pool))
    with torch.no_grad():
        model.visual(torch.zeros(1, 3, res, res))
    for h in hooks:
        h.remove()
    return total[0]


def clip_preprocess(resolution):
    """The Python way of preparing an image for CLIP (openai/CLIP's transform): PIL bicubic resize of the short side,
    centre crop, RGB, CLIP's mean and std."""
    return Compose([Resize(resolution, interpolation=InterpolationMode.BICUBIC), CenterCrop(resolution),
                    lambda im: im.convert("RGB"), ToTensor(),
                    Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])


class ImageFiles(torch.utils.data.Dataset):
    def __init__(self, paths, preprocess):
        self.paths, self.preprocess = paths, preprocess

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.preprocess(Image.open(self.paths[i]))


def score_on_gpu(weights, tokens_path, workers, images, device, precision):
    model = CLIP(read_safetensors(weights)).to(device)
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}
    preprocess = clip_preprocess(model.resolution)
    loader = torch.utils.data.DataLoader(ImageFiles(images, preprocess), batch_size=32, num_workers=workers,
                                         pin_memory=True)
    with torch.inference_mode(), torch.autocast("cuda", dtype=half.get(precision, torch.bfloat16), enabled=precision in half):
        text = model.encode_text(torch.tensor(json.load(open(tokens_path)), device=device)).float()
        text = text / text.norm(dim=-1, keepdim=True)
        model.visual(next(iter(loader)).to(device))  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        scores = []
        for batch in loader:
            feats = model.visual(batch.to(device, non_blocking=True)).float()
            scores.append(feats / feats.norm(dim=-1, keepdim=True) @ text.t())
        scores = torch.cat(scores).cpu()
        seconds = time.perf_counter() - start
    print(json.dumps({"images": len(images), "seconds": seconds, "images_per_s": len(images) / seconds,
                      "precision": precision, "device": str(device), "torch": torch.__version__.split("+")[0]}))


def main():
    weights, tokens_path, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    args = sys.argv[4:]
    # --device cuda [--precision bf16|fp16]: the GPU bench's PyTorch eager scoring, decoding on a DataLoader's
    # worker processes into pinned memory, as a PyTorch user feeds a GPU.
    device, precision = torch.device("cpu"), "fp32"
    while args and args[0].startswith("--"):
        if args[0] == "--device":
            device = torch.device(args[1])
        elif args[0] == "--precision":
            precision = args[1]
        args = args[2:]
    images = args
    if device.type == "cuda":
        return score_on_gpu(weights, tokens_path, threads, images, device, precision)
    torch.set_num_threads(threads)
    model = CLIP(read_safetensors(weights))
    tokens = torch.tensor(json.load(open(tokens_path)))
    preprocess = clip_preprocess(model.resolution)
    with torch.no_grad():
        text = model.encode_text(tokens)
        text = text / text.norm(dim=-1, keepdim=True)
        model.visual(preprocess(Image.open(images[0])).unsqueeze(0))  # warm-up, as our side's first batch pays too
        start = time.perf_counter()
        scores = []
        for b in range(0, len(images), 32):
            batch = torch.stack([preprocess(Image.open(p)) for p in images[b:b + 32]])
            feats = model.visual(batch)
            feats = feats / feats.norm(dim=-1, keepdim=True)
            scores.append(feats @ text.t())
        seconds = time.perf_counter() - start
    # The GEMM peaks, bf16 only where it is timed (PRECISIONS): on a CPU without bf16 units it is emulated, and
    # these products alone take minutes.
    a = torch.randn(2048, 2048)
    peak_bf16 = None
    timed = [torch.float32] + ([torch.bfloat16] if "bf16" in os.environ.get("PRECISIONS", "fp32 bf16").split() else [])
    for dtype in timed:
        x = a.to(dtype)
        torch.mm(x, x)
        t0 = time.perf_counter()
        for _ in range(5):
            torch.mm(x, x)
        peak = 5 * 2 * 2048 ** 3 / (time.perf_counter() - t0) / 1e9
        if dtype == torch.float32:
            peak_fp32 = peak
        else:
            peak_bf16 = peak
    print(json.dumps({"images": len(images), "seconds": seconds, "images_per_s": len(images) / seconds,
                      "scores": torch.cat(scores).tolist(), "flops_per_image": count_flops(model, model.resolution),
                      "peak_fp32_gflops": peak_fp32, "peak_bf16_gflops": peak_bf16, "threads": threads,
                      "torch": torch.__version__.split("+")[0]}))


if __name__ == "__main__":
    main()
