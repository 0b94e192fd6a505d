#!/usr/bin/env python3
"""Makes tests/data/families: small random-weight models of the CLIP families clipguide loads besides OpenAI's,
built with the peers' own classes (open_clip_torch, transformers) and saved in the files their users have, with
what the peers compute from them.

    .venv/bin/python tools/make_family_fixtures.py [--out DIR] [--seed N] [--scale K]

--seed and --scale change every weight and width; the tests read all shapes from the files, so they pass on
any set this makes. The models: open_clip's ViT-B-32-quickgelu and ViT-H-14 structures (CLIP), transformers'
SiglipModel as SigLIP (spiece.model, SiglipTokenizer) and as SigLIP 2 fixed-resolution (a Gemma-convention
tokenizer.model, Siglip2Tokenizer), and open_clip's SigLIP 2 layout (CustomTextCLIP on a timm SigLIP trunk, Gemma's
tokenizer files, clean "canonicalize"). The layout follows ../shared/fixtures/clip: families-manifest.json names each
model (family clip|siglip, format open_clip|hf), its files, config, preprocessing and tokenizer;
<model>.reference.safetensors holds, in fp32:
  pixels [4,3,R,R] (normalized, random), image_features [4,E], tokens [P,L] int64 (the manifest prompts, as the
  peer's tokenizer makes them), text_features [P,E], logits_per_image [4,P] (scale * cos, plus the bias for SigLIP),
  grad_weights [4,P] and pixels_grad (d/d pixels of sum(grad_weights * cos)), photo_pixels and photo_features
  (images/photo-*.png through the peer's own preprocessing), and for SigLIP sigmoid_per_image.
tokenizer_cases hold more texts through each SentencePiece model's own tokenizer (and Siglip2Tokenizer as
transformers saves it by default: no end token, left padding). preprocess.reference.safetensors holds open_clip's
image_transform of every photo for each resize mode and interpolation ("<mode>-<interpolation>-<size>@<file>",
[3,N,N]); the manifest lists the cases.
"""
import argparse
import io
import json
import os
import shutil
import string

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

import open_clip
import timm
from open_clip.transform import image_transform
import sentencepiece as spm
import transformers
from transformers import GemmaTokenizer, SiglipConfig, SiglipModel, SiglipTokenizer, Siglip2Tokenizer
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

PROMPTS = [
    "a red circle on a blue background",
    "Two cats, sleeping on a sofa!",
    "a photo of a DOG.",
    "green   triangle",
]


def make_photos(out, rng):
    """Smooth random pictures of awkward sizes, so that every resize mode crops, pads or squashes."""
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    names = []
    for i, (w, h) in enumerate([(97, 61), (45, 130), (80, 80)]):
        coarse = rng.uniform(0, 255, size=(4, 4, 3)).astype(np.float32)
        img = Image.fromarray(coarse.astype(np.uint8)).resize((w, h), Image.BICUBIC)
        noise = rng.integers(-20, 21, size=(h, w, 3))
        arr = np.clip(np.asarray(img).astype(np.int64) + noise, 0, 255).astype(np.uint8)
        name = f"images/photo-{i}.png"
        Image.fromarray(arr).save(os.path.join(out, name))
        names.append(name)
    return names


def round_to_fp16(model):
    """Stores weights as fp16 in the files (the vocabulary table dominates the size); references are computed
    from the same rounded values in fp32."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())


def common_references(encode_image, encode_text, tokens, pixels, photo_pixels, scale, bias, rng):
    ref = {"pixels": pixels, "tokens": tokens}
    with torch.no_grad():
        ref["image_features"] = encode_image(pixels)
        ref["text_features"] = encode_text(tokens)
        ref["photo_pixels"] = photo_pixels
        ref["photo_features"] = encode_image(photo_pixels)
    x = pixels.clone().requires_grad_(True)
    img = encode_image(x)
    txt = ref["text_features"]
    cos = (img / img.norm(dim=-1, keepdim=True)) @ (txt / txt.norm(dim=-1, keepdim=True)).t()
    weights = torch.from_numpy(rng.standard_normal(cos.shape).astype(np.float32))
    (cos * weights).sum().backward()
    ref["grad_weights"] = weights
    ref["pixels_grad"] = x.grad
    logits = scale * cos.detach() + (bias if bias is not None else 0.0)
    ref["logits_per_image"] = logits
    if bias is not None:
        ref["sigmoid_per_image"] = torch.sigmoid(logits)
    return {k: v.detach().contiguous() if k == "tokens" else v.detach().float().contiguous() for k, v in ref.items()}


def open_clip_model(out, name, cfg, preprocess_cfg, weights_file, photos, rng, seed):
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**cfg)
    model.eval()
    round_to_fp16(model)
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": cfg, "preprocess_cfg": preprocess_cfg}, f, indent=2)
    sd = {k: v.half() for k, v in model.state_dict().items()}
    if weights_file.endswith(".safetensors"):
        save_file(sd, os.path.join(folder, weights_file))
    else:
        torch.save(sd, os.path.join(folder, weights_file))
    # Load it back the way open_clip's users do, and compute every reference with that model.
    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + folder)
    model.eval()
    tokenizer = open_clip.get_tokenizer("local-dir:" + folder)
    tokens = tokenizer(PROMPTS)
    size = cfg["vision_cfg"]["image_size"]
    pixels = torch.from_numpy(rng.standard_normal((4, 3, size, size)).astype(np.float32))
    photo_pixels = torch.stack([preprocess(Image.open(os.path.join(out, p))) for p in photos])
    ref = common_references(model.encode_image, model.encode_text, tokens, pixels, photo_pixels,
                            model.logit_scale.exp().item(), None, rng)
    save_file(ref, os.path.join(out, f"{name}.reference.safetensors"))
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    return {
        "family": "clip",
        "format": "open_clip",
        "files": [f"{name}/{weights_file}"],
        "folder": name,
        "tokenizer": {"kind": "clip_bpe", "context_length": t["context_length"]},
        "config": {
            "embed_dim": cfg["embed_dim"], "image_resolution": size, "vision_width": v["width"],
            "vision_layers": v["layers"], "vision_patch_size": v["patch_size"],
            "vision_heads": v["width"] // v["head_width"], "context_length": t["context_length"],
            "vocab_size": t["vocab_size"], "transformer_width": t["width"], "transformer_heads": t["heads"],
            "transformer_layers": t["layers"],
            "activation": "quick_gelu" if cfg.get("quick_gelu") else "gelu",
        },
        "preprocess": {k: preprocess_cfg.get(k) for k in ("mean", "std", "resize_mode", "interpolation")},
    }


WORDS = ("a an the red green blue yellow circle square triangle photo of on in background two cats dog "
         "sleeping sofa small large picture drawing painting sunset beach crowded city night").split()

# Gemma's SentencePiece conventions (SigLIP 2's vocabulary): BPE with byte fallback, no dummy prefix, no
# normalization, <pad> 0, <eos> 1, <bos> 2, <unk> 3, <mask> 4.
GEMMA_LIKE = dict(model_type="bpe", byte_fallback=True, add_dummy_prefix=False, normalization_rule_name="identity",
                  remove_extra_whitespaces=False, user_defined_symbols=["<mask>"], pad_id=0, eos_id=1, bos_id=2,
                  unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>")


def train_spiece(words_seed, **kwargs):
    """A small SentencePiece vocabulary over the fixture words; by default a unigram one in the T5/SigLIP
    convention (pad 0, eos 1, unk 2, no bos)."""
    rng = np.random.default_rng(words_seed)
    corpus = [" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) for _ in range(3000)]
    corpus += [p.lower() for p in PROMPTS]
    options = dict(vocab_size=120, model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    options.update(kwargs)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=model, character_coverage=1.0,
                                   hard_vocab_limit=False, minloglevel=2, **options)
    return model.getvalue()


def save_hf_tokenizer(tokenizer, folder):
    """save_pretrained, less the generating machine's paths (tokenizer.model stays beside it, as in the hub's
    folders)."""
    tokenizer.save_pretrained(folder)
    path = os.path.join(folder, "tokenizer_config.json")
    with open(path) as f:
        config = json.load(f)
    for key in ("vocab_file", "is_local", "local_files_only", "name_or_path"):
        config.pop(key, None)
    with open(path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)


def gemma_tokenizer_folder(folder, seed, cls, **kwargs):
    """A Gemma-convention tokenizer.model, and the transformers tokenizer `cls` made from it and saved beside
    it (tokenizer.json, tokenizer_config.json)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
        f.write(train_spiece(seed, vocab_size=300, **GEMMA_LIKE))
    tokenizer = cls.from_pretrained(folder, **kwargs)
    save_hf_tokenizer(tokenizer, folder)
    return cls.from_pretrained(folder)


def siglip_model(out, name, scale, photos, rng, seed, siglip2=False):
    """SiglipModel in a Hugging Face folder: SigLIP's (a T5-style spiece.model, SiglipTokenizer) or, with
    siglip2, SigLIP 2's fixed-resolution form (a Gemma-convention tokenizer.model and Siglip2Tokenizer, which
    lower-cases; end token appended and right padding, as open_clip's SigLIP 2 tokenizer sets them)."""
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    if siglip2:
        tokenizer = gemma_tokenizer_folder(folder, seed, Siglip2Tokenizer, add_eos_token=True,
                                           padding_side="right")
        vocab_file, special = "tokenizer.model", dict(pad_token_id=0, bos_token_id=2, eos_token_id=1)
    else:
        vocab_file, special = "spiece.model", dict(pad_token_id=1, bos_token_id=None, eos_token_id=1)
        with open(os.path.join(folder, vocab_file), "wb") as f:
            f.write(train_spiece(seed))
        tokenizer = SiglipTokenizer(vocab_file=os.path.join(folder, vocab_file), model_max_length=16)
    width = 32 * scale
    context = 16
    config = SiglipConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=width * 3,
                         num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=context,
                         projection_size=48 * scale, **special),
        vision_config=dict(hidden_size=48 * scale, intermediate_size=width * 2 + 8, num_hidden_layers=2,
                           num_attention_heads=3, image_size=32, patch_size=8),
    )
    torch.manual_seed(seed)
    model = SiglipModel(config)
    with torch.no_grad():  # a trained-looking temperature and bias instead of the init's
        model.logit_scale.fill_(float(np.log(10.0)))
        model.logit_bias.fill_(-3.0)
    model.eval()
    model.save_pretrained(folder)
    image_processor = SiglipImageProcessorPil(size={"height": 32, "width": 32})
    if siglip2:
        image_processor.save_pretrained(folder)
    else:
        transformers.SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    model = SiglipModel.from_pretrained(folder)
    model.eval()
    tokens = tokenizer(PROMPTS, padding="max_length", max_length=context, truncation=True,
                       return_tensors="pt")["input_ids"]
    pixels = torch.from_numpy(rng.standard_normal((4, 3, 32, 32)).astype(np.float32))
    photo_pixels = image_processor([Image.open(os.path.join(out, p)).convert("RGB") for p in photos],
                                   return_tensors="pt")["pixel_values"]

    def encode_image(x):
        return model.get_image_features(pixel_values=x).pooler_output

    def encode_text(t):
        return model.get_text_features(input_ids=t).pooler_output

    ref = common_references(encode_image, encode_text, tokens, pixels, photo_pixels,
                            model.logit_scale.exp().item(), model.logit_bias.item(), rng)
    save_file(ref, os.path.join(out, f"{name}.reference.safetensors"))
    t, v = config.text_config, config.vision_config
    return {
        "family": "siglip",
        "format": "hf",
        "files": [name],
        "folder": name,
        "tokenizer": {"kind": "sentencepiece", "file": f"{name}/{vocab_file}", "context_length": context},
        "config": {
            "embed_dim": t.projection_size, "image_resolution": v.image_size, "vision_width": v.hidden_size,
            "vision_layers": v.num_hidden_layers, "vision_patch_size": v.patch_size,
            "vision_heads": v.num_attention_heads, "context_length": context, "vocab_size": t.vocab_size,
            "transformer_width": t.hidden_size, "transformer_heads": t.num_attention_heads,
            "transformer_layers": t.num_hidden_layers, "activation": t.hidden_act,
        },
        "preprocess": {"mean": list(image_processor.image_mean), "std": list(image_processor.image_std),
                       "resize_mode": "squash", "interpolation": "bicubic"},
    }


def register_tiny_siglip_trunk(scale):
    """A timm ViT with SigLIP's structure (no class token, 'map' attention-pool head, exact GELU, eps 1e-6)
    at fixture widths, under a name of its own: open_clip builds its SigLIP image towers from timm names."""
    from timm.models import register_model
    from timm.models.vision_transformer import _create_vision_transformer
    name = f"vit_fixture_siglip_x{scale}"
    if name not in timm.list_models(name):
        def tiny(pretrained=False, **kwargs):
            args = dict(img_size=32, patch_size=8, embed_dim=48 * scale, depth=2, num_heads=3, mlp_ratio=2.5,
                        class_token=False, global_pool="map")
            return _create_vision_transformer(name, pretrained=False, **dict(args, **kwargs))
        tiny.__name__ = name
        register_model(tiny)
    return name


def open_clip_siglip_model(out, name, scale, photos, rng, seed):
    """open_clip's SigLIP 2 layout (CustomTextCLIP: a timm trunk under visual.trunk.*, text.*, logit_bias) with
    its open_clip_config.json and the Gemma tokenizer files open_clip's SigLIP 2 repos carry."""
    folder = os.path.join(out, name)
    tokenizer = gemma_tokenizer_folder(folder, seed, GemmaTokenizer, add_bos_token=False, add_eos_token=True,
                                       padding_side="right")
    context = 16
    cfg = {
        "embed_dim": 48 * scale, "init_logit_bias": -10.0,
        "vision_cfg": {"image_size": 32, "timm_model_name": register_tiny_siglip_trunk(scale),
                       "timm_model_pretrained": False, "timm_pool": "map", "timm_proj": "none",
                       "head_width": 16 * scale},
        "text_cfg": {"context_length": context, "vocab_size": len(tokenizer), "hf_tokenizer_name": name,
                     "tokenizer_kwargs": {"clean": "canonicalize"}, "width": 32 * scale, "heads": 2, "layers": 2,
                     "no_causal_mask": True, "proj_bias": True, "pool_type": "last", "norm_kwargs": {"eps": 1e-6},
                     "act_kwargs": {"approximate": "tanh"}},
    }
    preprocess_cfg = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
                      "resize_mode": "squash"}
    torch.manual_seed(seed)
    model = open_clip.model.CustomTextCLIP(**cfg)
    model.eval()
    round_to_fp16(model)
    with open(os.path.join(folder, "open_clip_config.json"), "w") as f:
        json.dump({"model_cfg": dict(cfg, custom_text=True), "preprocess_cfg": preprocess_cfg}, f, indent=2)
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()},
              os.path.join(folder, "open_clip_model.safetensors"))
    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:" + folder)
    model.eval()
    tokens = open_clip.get_tokenizer("local-dir:" + folder)(PROMPTS)
    pixels = torch.from_numpy(rng.standard_normal((4, 3, 32, 32)).astype(np.float32))
    photo_pixels = torch.stack([preprocess(Image.open(os.path.join(out, p))) for p in photos])
    ref = common_references(model.encode_image, model.encode_text, tokens, pixels, photo_pixels,
                            model.logit_scale.exp().item(), model.logit_bias.item(), rng)
    save_file(ref, os.path.join(out, f"{name}.reference.safetensors"))
    t = cfg["text_cfg"]
    return {
        "family": "siglip",
        "format": "open_clip",
        "files": [f"{name}/open_clip_model.safetensors"],
        "folder": name,
        "tokenizer": {"kind": "sentencepiece", "file": f"{name}/tokenizer.model", "context_length": context},
        "config": {
            "embed_dim": cfg["embed_dim"], "image_resolution": 32, "vision_width": 48 * scale, "vision_layers": 2,
            "vision_patch_size": 8, "vision_heads": 3, "context_length": context, "vocab_size": t["vocab_size"],
            "transformer_width": t["width"], "transformer_heads": t["heads"], "transformer_layers": t["layers"],
            "activation": "gelu_tanh",
        },
        "preprocess": preprocess_cfg,
    }


def preprocess_cases(out, photos):
    cases, ref = [], {}
    for mode in ("shortest", "longest", "squash"):
        for interpolation in ("bicubic", "bilinear"):
            for size in (24, 56):
                transform = image_transform(size, is_train=False, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3),
                                            resize_mode=mode, interpolation=interpolation)
                case = {"resize_mode": mode, "interpolation": interpolation, "size": size,
                        "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3]}
                cases.append(case)
                for p in photos:
                    ref[f"{mode}-{interpolation}-{size}@{p}"] = transform(Image.open(os.path.join(out, p)))
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(out, "preprocess.reference.safetensors"))
    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "families"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=int, default=1, help="multiplies the widths")
    args = parser.parse_args()
    out = os.path.abspath(args.out)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    rng = np.random.default_rng(args.seed)
    photos = make_photos(out, rng)
    s = args.scale
    models = {}
    # open_clip's ViT-B-32-quickgelu structure, small: QuickGELU, heads = width / 64 nowhere, OpenAI mean/std.
    models["openclip-b32-quickgelu"] = open_clip_model(out, "openclip-b32-quickgelu", {
        "embed_dim": 24 * s, "quick_gelu": True,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 48 * s, "head_width": 16, "patch_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32 * s, "heads": 2, "layers": 2},
    }, {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD),
        "interpolation": "bicubic", "resize_mode": "shortest"}, "open_clip_pytorch_model.bin", photos, rng,
        args.seed + 1)
    # open_clip's ViT-H-14 structure, small: exact GELU, head width 80 -> heads != width / 64, patch 14.
    models["openclip-h14"] = open_clip_model(out, "openclip-h14", {
        "embed_dim": 32 * s,
        "vision_cfg": {"image_size": 56, "layers": 2, "width": 40 * s, "head_width": 20, "patch_size": 14},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32 * s, "heads": 4, "layers": 2},
    }, {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bilinear", "resize_mode": "squash"},
        "open_clip_model.safetensors", photos, rng, args.seed + 2)
    models["siglip"] = siglip_model(out, "siglip", s, photos, rng, args.seed + 3)
    models["siglip2"] = siglip_model(out, "siglip2", s, photos, rng, args.seed + 4, siglip2=True)
    models["openclip-siglip2"] = open_clip_siglip_model(out, "openclip-siglip2", s, photos, rng, args.seed + 5)
    manifest = {
        "generator": "tools/make_family_fixtures.py",
        "peers": {"open_clip_torch": open_clip.__version__, "transformers": transformers.__version__,
                  "torch": torch.__version__},
        "seed": args.seed, "scale": args.scale,
        "prompts": PROMPTS, "photos": photos, "models": models,
        "preprocess_cases": preprocess_cases(out, photos),
        "tokenizer_cases": tokenizer_cases(out, models, args.seed),
        "sentencepiece_cases": sentencepiece_cases(out, models, args.seed),
    }
    with open(os.path.join(out, "families-manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)


def tokenizer_cases(out, models, seed):
    """More texts through each SentencePiece model's own tokenizer (punctuation, case, whitespace, unknown
    characters, too long), and through Siglip2Tokenizer as transformers saves it by default (no end token, left
    padding)."""
    texts = ["Hello, World!", "  spaced\tout\n text  ", "UPPER lower MiXeD", "café DÉJÀ vu", "emoji 🙂 here",
             "under_score and-dash", "a " * 30, "", "!!!", "İstanbul ÀÉÎ ＡＢＣ", "&amp; <mask> x", "ﬁne"]
    folder = os.path.join(out, "siglip2-tokenizer-defaults")
    gemma_tokenizer_folder(folder, seed + 11, Siglip2Tokenizer)
    files = {"siglip2-tokenizer-defaults/tokenizer.model": ("transformers", folder)}
    for name, m in models.items():
        if m["tokenizer"]["kind"] == "sentencepiece":
            files[m["tokenizer"]["file"]] = (m["format"], os.path.join(out, m["folder"]))
    cases = []
    for file, (peer, folder) in files.items():
        if peer == "open_clip":
            tok = open_clip.get_tokenizer("local-dir:" + folder)
            encode = lambda text: tok([text], context_length=16)[0].tolist()
        else:
            tok = transformers.AutoTokenizer.from_pretrained(folder)
            encode = lambda text: tok(text, padding="max_length", max_length=16, truncation=True)["input_ids"]
        for text in texts:
            cases.append({"file": file, "text": text, "ids": encode(text)})
    return cases


RAW_TEXTS = ["Hello, World!", "  leading and trailing  ", "tabs\tand\nnewlines", "ｆｕｌｌｗｉｄｔｈ ＡＢＣ ①②",
             "ﬁne ligature", "café déjà vu", "emoji 🙂 and 漢字", "<mask> user defined <mask>here", "a" * 40,
             "UPPER lower", "double  space", "", "x"]


def sentencepiece_cases(out, models, seed):
    """SentencePiece models of the other kinds users meet (BPE with byte fallback and no dummy prefix, as Gemma's;
    unigram with user-defined pieces), and raw texts through each, as the sentencepiece library encodes them."""
    rng = np.random.default_rng(seed + 7)
    words = ("the quick brown fox jumps over lazy dog photo of a cat on sofa red green blue circle "
             "café naïve 漢字 mask here").split()
    corpus = [" ".join(rng.choice(words, size=rng.integers(3, 9))) for _ in range(3000)]
    made = {}
    for name, kwargs in {
        "spm-bpe-bytes.model": dict(model_type="bpe", vocab_size=400, byte_fallback=True, add_dummy_prefix=False,
                                    normalization_rule_name="identity", remove_extra_whitespaces=False,
                                    user_defined_symbols=["<mask>"], pad_id=0, eos_id=1, bos_id=2, unk_id=3),
        "spm-unigram-user.model": dict(model_type="unigram", vocab_size=90, user_defined_symbols=["<mask>"],
                                       pad_id=0, eos_id=1, unk_id=2, bos_id=-1),
    }.items():
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_writer=buf, character_coverage=1.0,
                                       hard_vocab_limit=False, minloglevel=2, **kwargs)
        with open(os.path.join(out, name), "wb") as f:
            f.write(buf.getvalue())
        made[name] = name
    for name, m in models.items():
        if m["tokenizer"]["kind"] == "sentencepiece":
            made[name] = m["tokenizer"]["file"]
    cases = []
    for file in made.values():
        sp = spm.SentencePieceProcessor(model_file=os.path.join(out, file))
        for text in RAW_TEXTS:
            cases.append({"file": file, "text": text, "ids": sp.encode(text)})
    return cases


if __name__ == "__main__":
    main()
