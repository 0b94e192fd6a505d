"""Today's Python peers for the benches, on the venv's PyTorch 2.x (scripts/venv): open_clip's CLIP and Hugging Face
transformers' CLIPModel (SDPA attention), built from their own classes with random init and then given the bench's
weights (OpenAI names, as our safetensors files hold them), so every peer computes the same function as ours.

Shared by bench/score/peers.py and bench/guide/peers.py. A peer is a callable image tower: normalized pixels
[B, 3, R, R] -> image features [B, E], plus its resolution and its text features for the bench's tokens.
"""
import contextlib
import os

import torch
from safetensors.torch import load_file

MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


class Peer:
    def __init__(self, name, image_fn, text_fn, resolution, modules):
        self.name, self.image_fn, self.text_fn, self.resolution, self.modules = name, image_fn, text_fn, resolution, modules

    def compiled(self):
        """The same peer with its image tower through torch.compile (a reference line, not a target)."""
        return Peer(self.name + " +compile", torch.compile(self.image_fn), self.text_fn, self.resolution, self.modules)


def openai_weights(path):
    sd = {k: v.float() for k, v in load_file(path).items()}
    for key in ("input_resolution", "context_length", "vocab_size"):
        sd.pop(key, None)
    return sd


def open_clip_peer(path):
    """open_clip.create_model(<the OpenAI architecture>-quickgelu, pretrained=None), then our weights."""
    import open_clip

    sd = openai_weights(path)
    vit = "visual.proj" in sd
    name = "ViT-B-32-quickgelu" if vit else "RN50-quickgelu"
    model = open_clip.create_model(name, pretrained=None)
    model.load_state_dict(sd, strict=True)
    model.eval().requires_grad_(False)
    res = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    return Peer("open_clip " + open_clip.__version__, model.encode_image, model.encode_text, res, model)


def _hf_state_dict(sd, prefix_openai, prefix_hf, layers):
    """OpenAI transformer blocks -> Hugging Face CLIP encoder layers (q/k/v split from in_proj)."""
    out = {}
    for i in range(layers):
        a, h = f"{prefix_openai}.resblocks.{i}", f"{prefix_hf}.encoder.layers.{i}"
        for j, part in enumerate(("q", "k", "v")):
            w, b = sd[f"{a}.attn.in_proj_weight"], sd[f"{a}.attn.in_proj_bias"]
            n = w.shape[0] // 3
            out[f"{h}.self_attn.{part}_proj.weight"] = w[j * n:(j + 1) * n]
            out[f"{h}.self_attn.{part}_proj.bias"] = b[j * n:(j + 1) * n]
        for ours, theirs in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                             ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
            for kind in ("weight", "bias"):
                out[f"{h}.{theirs}.{kind}"] = sd[f"{a}.{ours}.{kind}"]
    return out


def hf_peer(path):
    """transformers.CLIPModel(config, attn_implementation="sdpa") with our ViT weights (HF has no ResNet CLIP)."""
    import transformers
    from transformers import CLIPConfig, CLIPModel

    sd = openai_weights(path)
    if "visual.proj" not in sd:
        return None
    vw, tw = sd["visual.conv1.weight"].shape[0], sd["ln_final.weight"].shape[0]
    patch = sd["visual.conv1.weight"].shape[-1]
    res = patch * round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    vl = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
    tl = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
    embed = sd["text_projection"].shape[1]
    config = CLIPConfig(
        text_config=dict(hidden_size=tw, intermediate_size=4 * tw, num_attention_heads=tw // 64, num_hidden_layers=tl,
                         max_position_embeddings=sd["positional_embedding"].shape[0],
                         vocab_size=sd["token_embedding.weight"].shape[0], hidden_act="quick_gelu"),
        vision_config=dict(hidden_size=vw, intermediate_size=4 * vw, num_attention_heads=vw // 64, num_hidden_layers=vl,
                           image_size=res, patch_size=patch, hidden_act="quick_gelu"),
        projection_dim=embed)
    model = CLIPModel._from_config(config, attn_implementation="sdpa")
    assert model.config._attn_implementation == "sdpa"
    hf = {
        "vision_model.embeddings.class_embedding": sd["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": sd["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": sd["visual.ln_pre.weight"], "vision_model.pre_layrnorm.bias": sd["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": sd["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": sd["visual.ln_post.bias"],
        "visual_projection.weight": sd["visual.proj"].t(),
        "text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "text_model.final_layer_norm.weight": sd["ln_final.weight"], "text_model.final_layer_norm.bias": sd["ln_final.bias"],
        "text_projection.weight": sd["text_projection"].t(),
        "logit_scale": sd["logit_scale"],
    }
    hf.update(_hf_state_dict(sd, "visual.transformer", "vision_model", vl))
    hf.update(_hf_state_dict(sd, "transformer", "text_model", tl))
    missing, unexpected = model.load_state_dict(hf, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    assert not missing and not unexpected, (missing, unexpected)
    model.eval().requires_grad_(False)

    def features(out):  # transformers 5 returns a model output from get_*_features, 4.x a tensor
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    def image_fn(pixels):
        return features(model.get_image_features(pixel_values=pixels))

    def text_fn(tokens):
        return features(model.get_text_features(input_ids=tokens))

    return Peer("transformers " + transformers.__version__ + " (sdpa)", image_fn, text_fn, res, model)


def precision(name):
    """fp32: as is; bf16: CPU autocast to bfloat16, as a Python user would run it."""
    if name == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def precisions():
    """The precisions a bench times: $PRECISIONS (words; bench/common.sh sets it), else fp32 and bf16."""
    return os.environ.get("PRECISIONS", "fp32 bf16").split()


def peers(path, with_compile):
    out = [p for p in (open_clip_peer(path), hf_peer(path)) if p is not None]
    if with_compile:
        out += [p.compiled() for p in list(out)]
    return out
