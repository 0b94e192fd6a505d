#!/usr/bin/env python3
"""Makes tests/data/sd: what diffusers' own Stable Diffusion schedulers, VAE and UNet compute, for the parity tests
of generators/sd_scheduler.h, vqgan.h (AutoencoderKL) and unet.h (load_sd_unet).

    .venv/bin/python tools/make_sd_fixtures.py [--out DIR] [--seed N] [--steps N] [--size N] [--vae-size N]
                                               [--unet-size N]

scheduler/scheduler_config.json is Stable Diffusion 1.x's, as its diffusers folder ships it (a PNDMScheduler
config without timestep_spacing, so each scheduler class fills in its own default, as diffusers' from_config does).
sd-manifest.json lists the cases: a scheduler name as clipguide spells it, the class diffusers ran, the overrides
given to from_config, the number of steps and DDIM's eta. For each case, schedulers.safetensors holds, under
"CASE/": timesteps (what the UNet is given, in order), sigmas where the class has them, init_noise_sigma, the
starting latents `sample` (standard normal times init_noise_sigma), and for step i the model output
`model_output_i` (random, so the test needs no UNet), the noise the step drew `noise_i` (zeros where it drew
none), the scaled model input `scaled_i` and the step's result `prev_i`. --seed, --steps and --size change every
value and shape; the tests read them from the files.

pipeline/ holds diffusers component folders (config.json and diffusion_pytorch_model.safetensors, weights in fp16
as many published folders keep them): vae/, an AutoencoderKL at the widths diffusers' tests use, and two
UNet2DConditionModels, unet_sd1/ (SD 1.x's shape: convolutional projections, one head count) and unet_sd2/ (SD
2.x's: linear projections, heads per level). sd-single.safetensors holds the VAE and unet_sd1 under latent
diffusion's names (first_stage_model.*, model.diffusion_model.*), as a CompVis single-file checkpoint does; the
script checks that diffusers' own convert_ldm_vae_checkpoint and convert_ldm_unet_checkpoint read them back to the
folders' weights. sd-reference.safetensors: vae/x (an image in [-1, 1]), the posterior's vae/mean and vae/logvar,
vae/z (latents) and vae/decoded; per UNet NAME/x, NAME/t (timesteps), NAME/context (text embeddings) and NAME/out.
Every reference is computed in fp32 from the fp16-rounded weights.
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file

import community_guidance as cg
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, PNDMScheduler)

# Stable Diffusion 1.x's scheduler/scheduler_config.json (runwayml/stable-diffusion-v1-5), key for key.
SD1_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}

# (case, clipguide's name, diffusers' class, from_config overrides, eta)
CASES = [
    ("pndm", "pndm", PNDMScheduler, {}, 0.0),
    ("ddim", "ddim", DDIMScheduler, {}, 0.0),
    ("ddim_eta", "ddim", DDIMScheduler, {}, 0.7),
    ("ddim_v_trailing", "ddim", DDIMScheduler, {"prediction_type": "v_prediction", "timestep_spacing": "trailing",
                                               "rescale_betas_zero_snr": True}, 0.0),
    ("euler", "euler", EulerDiscreteScheduler, {}, 0.0),
    ("euler_v_leading", "euler", EulerDiscreteScheduler, {"prediction_type": "v_prediction",
                                                         "timestep_spacing": "leading"}, 0.0),
    ("euler_karras", "euler", EulerDiscreteScheduler, {"use_karras_sigmas": True}, 0.0),
    ("euler_a", "euler_a", EulerAncestralDiscreteScheduler, {}, 0.0),
    ("euler_a_trailing", "euler_a", EulerAncestralDiscreteScheduler, {"timestep_spacing": "trailing"}, 0.0),
    ("ddim_linspace", "ddim", DDIMScheduler, {"timestep_spacing": "linspace"}, 0.0),
    ("pndm_linspace", "pndm", PNDMScheduler, {"timestep_spacing": "linspace"}, 0.0),
    ("pndm_trailing", "pndm", PNDMScheduler, {"timestep_spacing": "trailing"}, 0.0),
    ("dpmpp_2m", "dpmpp_2m", DPMSolverMultistepScheduler, {}, 0.0),
    ("dpmpp_2m_leading", "dpmpp_2m", DPMSolverMultistepScheduler, {"timestep_spacing": "leading"}, 0.0),
    ("dpmpp_2m_trailing", "dpmpp_2m", DPMSolverMultistepScheduler, {"timestep_spacing": "trailing"}, 0.0),
    ("dpmpp_2m_karras", "dpmpp_2m_karras", DPMSolverMultistepScheduler, {"use_karras_sigmas": True}, 0.0),
    ("dpmpp_2m_karras_v", "dpmpp_2m_karras", DPMSolverMultistepScheduler,
     {"use_karras_sigmas": True, "prediction_type": "v_prediction"}, 0.0),
]


def run_case(name, cls, overrides, eta, steps, shape, seed, tensors):
    scheduler = cls.from_config(SD1_SCHEDULER, **overrides)
    scheduler.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(shape, generator=g) * scheduler.init_noise_sigma
    tensors[f"{name}/timesteps"] = scheduler.timesteps.to(torch.float64).clone()
    if hasattr(scheduler, "sigmas") and scheduler.sigmas is not None and cls is not DDIMScheduler \
            and cls is not PNDMScheduler:
        tensors[f"{name}/sigmas"] = scheduler.sigmas.to(torch.float64).clone()
    tensors[f"{name}/init_noise_sigma"] = torch.tensor([float(scheduler.init_noise_sigma)], dtype=torch.float64)
    tensors[f"{name}/sample"] = sample.clone()
    for i, t in enumerate(scheduler.timesteps):
        scaled = scheduler.scale_model_input(sample, t)
        model_output = torch.randn(shape, generator=g)
        noise_seed = seed * 1000 + i
        kwargs = {}
        noise = torch.zeros(shape)
        if cls is EulerAncestralDiscreteScheduler:
            # The step draws its noise from this generator; the same draw is stored.
            noise = torch.randn(shape, generator=torch.Generator().manual_seed(noise_seed))
            kwargs["generator"] = torch.Generator().manual_seed(noise_seed)
        elif cls is DDIMScheduler and eta > 0:
            noise = torch.randn(shape, generator=torch.Generator().manual_seed(noise_seed))
            kwargs["eta"] = eta
            kwargs["variance_noise"] = noise
        sample = scheduler.step(model_output, t, sample, **kwargs).prev_sample
        tensors[f"{name}/model_output_{i}"] = model_output
        tensors[f"{name}/noise_{i}"] = noise
        tensors[f"{name}/scaled_{i}"] = scaled.clone()
        tensors[f"{name}/prev_{i}"] = sample.clone()
    return len(scheduler.timesteps)


def perturbed_fp16(model, scale):
    """The model's weights moved off their initial values (norms and biases away from 1 and 0, so a misplaced one
    shows) and rounded to fp16, the precision the fixture files keep; the model in eval mode, fp32."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
            p.copy_(p.half().float())
    return model.eval()


def vae_to_ldm(state):
    """diffusers' AutoencoderKL names -> latent diffusion's first_stage_model names (the inverse of diffusers'
    convert_ldm_vae_checkpoint): up_blocks count down from the top, attention projections are 1x1 convolutions."""
    levels = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("decoder.up_blocks."))
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[1] in ("down_blocks", "up_blocks"):
            i = int(parts[2]) if parts[1] == "down_blocks" else levels - 1 - int(parts[2])
            rest = ".".join(parts[3:])
            rest = rest.replace("resnets.", "block.").replace("conv_shortcut", "nin_shortcut")
            rest = rest.replace("downsamplers.0", "downsample").replace("upsamplers.0", "upsample")
            key = f"{parts[0]}.{'down' if parts[1] == 'down_blocks' else 'up'}.{i}.{rest}"
        elif parts[1] == "mid_block":
            rest = ".".join(parts[2:])
            rest = rest.replace("resnets.0", "block_1").replace("resnets.1", "block_2")
            rest = rest.replace("attentions.0.group_norm", "attn_1.norm").replace("attentions.0.to_q", "attn_1.q")
            rest = rest.replace("attentions.0.to_k", "attn_1.k").replace("attentions.0.to_v", "attn_1.v")
            rest = rest.replace("attentions.0.to_out.0", "attn_1.proj_out").replace("conv_shortcut", "nin_shortcut")
            key = f"{parts[0]}.mid.{rest}"
            if ".attn_1." in key and value.dim() == 2:
                value = value[:, :, None, None]
        else:
            key = key.replace("conv_norm_out", "norm_out")
        out[key] = value
    return out


def make_vae(folders, seed, size, tensors):
    """A tiny AutoencoderKL as diffusers' tests size theirs, its weights rounded to fp16 (the single file keeps them
    so, as many released checkpoints do), saved as a diffusers vae/ folder and under first_stage_model.* in a single
    file; its posterior on a random image and its decoding of random latents."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[32, 64], layers_per_block=1,
                        latent_channels=4, norm_num_groups=32, sample_size=size)
    perturbed_fp16(vae, 0.05)
    vae.half()
    for folder in folders:
        vae.save_pretrained(os.path.join(folder, "vae"))
    vae.float()
    ldm = {f"first_stage_model.{k}": v.half() for k, v in vae_to_ldm(vae.state_dict()).items()}
    back = convert_ldm_vae_checkpoint(ldm, vae.config)
    assert set(back) == set(vae.state_dict()), set(back) ^ set(vae.state_dict())
    for k, v in vae.state_dict().items():
        assert torch.equal(back[k].float(), v), k
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(1, 3, size, size, generator=g) * 2 - 1
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    z = torch.randn(1, vae.config.latent_channels, size // factor, size // factor, generator=g)
    with torch.no_grad():
        posterior = vae.encode(x).latent_dist
        decoded = vae.decode(z).sample
    tensors.update({"vae/x": x, "vae/mean": posterior.mean, "vae/logvar": posterior.logvar, "vae/z": z,
                    "vae/decoded": decoded})
    return vae, ldm, {"scaling_factor": vae.config.scaling_factor, "image_size": size, "latent_size": size // factor}


# The text encoders' width: the single file's text tower takes its heads from the width (width / 64, as SD's real
# towers have them), so the tiny towers keep that rule: 128 wide, 2 heads.
TEXT_WIDTH = 128

# Stable Diffusion 2.x's scheduler/scheduler_config.json (stabilityai/stable-diffusion-2): Euler, v prediction.
SD2_SCHEDULER = dict(SD1_SCHEDULER, _class_name="EulerDiscreteScheduler", prediction_type="v_prediction")

# Two tiny pipelines at the widths diffusers' tests use: SD 1.x's shape (convolutional projections, one head count
# for every level, a QuickGELU text tower padded with <|endoftext|>, PNDM) and SD 2.x's (linear projections, heads
# per level, an exact-GELU text tower padded with "!", Euler with v prediction).
PIPELINES = {
    "sd1": dict(unet=dict(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=TEXT_WIDTH,
                          attention_head_dim=4, use_linear_projection=False),
                hidden_act="quick_gelu", pad="<|endoftext|>", scheduler=SD1_SCHEDULER),
    "sd2": dict(unet=dict(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=TEXT_WIDTH,
                          attention_head_dim=(2, 4), use_linear_projection=True),
                hidden_act="gelu", pad="!", scheduler=SD2_SCHEDULER),
}


def unet_to_ldm(state, config):
    """diffusers' UNet2DConditionModel names -> latent diffusion's model.diffusion_model names (the inverse of
    diffusers' convert_ldm_unet_checkpoint)."""
    L = config.layers_per_block
    resnet = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
              "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
    attends = {i: t.startswith("CrossAttn") for i, t in enumerate(config.up_block_types)}
    out = {}
    for key, value in state.items():
        p = key.split(".")
        if p[0] == "conv_in":
            name = f"input_blocks.0.0.{p[1]}"
        elif p[0] == "time_embedding":
            name = f"time_embed.{0 if p[1] == 'linear_1' else 2}.{p[2]}"
        elif p[0] == "conv_norm_out":
            name = f"out.0.{p[1]}"
        elif p[0] == "conv_out":
            name = f"out.2.{p[1]}"
        elif p[0] == "down_blocks":
            i, kind = int(p[1]), p[2]
            if kind == "resnets":
                name = f"input_blocks.{1 + i * (L + 1) + int(p[3])}.0.{resnet[p[4]]}.{p[5]}"
            elif kind == "attentions":
                name = f"input_blocks.{1 + i * (L + 1) + int(p[3])}.1.{'.'.join(p[4:])}"
            else:
                name = f"input_blocks.{1 + i * (L + 1) + L}.0.op.{p[-1]}"
        elif p[0] == "mid_block":
            if p[1] == "resnets":
                name = f"middle_block.{0 if p[2] == '0' else 2}.{resnet[p[3]]}.{p[4]}"
            else:
                name = f"middle_block.1.{'.'.join(p[3:])}"
        elif p[0] == "up_blocks":
            i, kind = int(p[1]), p[2]
            if kind == "resnets":
                name = f"output_blocks.{i * (L + 1) + int(p[3])}.0.{resnet[p[4]]}.{p[5]}"
            elif kind == "attentions":
                name = f"output_blocks.{i * (L + 1) + int(p[3])}.1.{'.'.join(p[4:])}"
            else:
                name = f"output_blocks.{i * (L + 1) + L}.{2 if attends[i] else 1}.conv.{p[-1]}"
        else:
            raise KeyError(key)
        out[name] = value
    return out


def make_unet(folder, name, shape, seed, size, tensors):
    """A tiny UNet2DConditionModel (diffusers' own class), saved as FOLDER/unet/ and under model.diffusion_model.*;
    its output for random latents, timesteps and text embeddings."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    torch.manual_seed(seed)
    attn_levels = ("CrossAttnDownBlock2D",) * (len(shape["block_out_channels"]) - 1) + ("DownBlock2D",)
    unet = UNet2DConditionModel(sample_size=size, in_channels=4, out_channels=4, norm_num_groups=32,
                                down_block_types=attn_levels,
                                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (len(attn_levels) - 1),
                                **shape)
    perturbed_fp16(unet, 0.02)
    unet.half().save_pretrained(os.path.join(folder, "unet"))
    unet.float()
    ldm = {f"model.diffusion_model.{k}": v.half() for k, v in unet_to_ldm(unet.state_dict(), unet.config).items()}
    back = convert_ldm_unet_checkpoint(ldm, unet.config)
    assert set(back) == set(unet.state_dict()), set(back) ^ set(unet.state_dict())
    for k, v in unet.state_dict().items():
        assert torch.equal(back[k].float(), v), k
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(2, 4, size, size, generator=g)
    t = torch.tensor([981.0, 37.5])  # an integer and a fractional timestep (Euler's Karras ones are fractional)
    context = torch.randn(2, 7, shape["cross_attention_dim"], generator=g)
    with torch.no_grad():
        y = unet(x, t, encoder_hidden_states=context).sample
    tensors.update({f"{name}/x": x, f"{name}/t": t, f"{name}/context": context, f"{name}/out": y})
    return unet, ldm


def make_tokenizer(folder, merges_file, merges, pad):
    """A CLIPTokenizer over the first `merges` merges of CLIP's own vocabulary (a prefix of a BPE vocabulary is one
    too), in OpenAI's order: bytes, bytes with </w>, the merges, then the two special tokens; saved as
    FOLDER/tokenizer/ with vocab.json and merges.txt, as Stable Diffusion's folders keep it."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    with open(merges_file, encoding="utf-8") as f:
        lines = [line for line in f.read().split("\n")[1:] if line][:merges]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in lines]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {s: i for i, s in enumerate(vocab)}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in lines], pad_token=pad,
                              model_max_length=77)
    where = os.path.join(folder, "tokenizer")
    tokenizer.save_pretrained(where)
    with open(os.path.join(where, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(where, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(lines) + "\n")
    return CLIPTokenizer.from_pretrained(where)


def make_text_encoder(folder, seed, vocab_size, hidden_act, extra_layer):
    """A tiny CLIPTextModel (transformers' own class), saved as FOLDER/text_encoder/ in fp16. With `extra_layer`,
    also open_clip's names for a text tower one block deeper whose penultimate block's states are this model's
    (what a CompVis SD 2.x file's cond_stage_model.model.* holds: the tower with its projection and logit scale)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=TEXT_WIDTH, intermediate_size=160,
                            num_hidden_layers=3, num_attention_heads=TEXT_WIDTH // 64, max_position_embeddings=77,
                            hidden_act=hidden_act, projection_dim=TEXT_WIDTH, bos_token_id=vocab_size - 2,
                            eos_token_id=vocab_size - 1, pad_token_id=1)
    model = CLIPTextModel(config)
    perturbed_fp16(model, 0.05)
    model.half().save_pretrained(os.path.join(folder, "text_encoder"))
    model.float()
    # transformers 5 names CLIPTextModel's weights without the text_model. prefix that SD's files (and transformers
    # 4's folders) carry; the single files get the prefixed names.
    sd = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in model.state_dict().items()}
    if not extra_layer:
        return model, {f"cond_stage_model.transformer.{k}": v.half() for k, v in sd.items()
                       if not k.endswith("position_ids")}
    out = {"token_embedding.weight": sd["text_model.embeddings.token_embedding.weight"],
           "positional_embedding": sd["text_model.embeddings.position_embedding.weight"],
           "ln_final.weight": sd["text_model.final_layer_norm.weight"],
           "ln_final.bias": sd["text_model.final_layer_norm.bias"],
           "text_projection": torch.randn(TEXT_WIDTH, TEXT_WIDTH) * 0.05, "logit_scale": torch.tensor(4.6)}
    layers = config.num_hidden_layers
    for i in range(layers + 1):
        src = f"text_model.encoder.layers.{min(i, layers - 1)}."
        get = lambda n: sd[src + n] + (torch.randn_like(sd[src + n]) * 0.05 if i == layers else 0)
        dst = f"transformer.resblocks.{i}."
        out[dst + "attn.in_proj_weight"] = torch.cat([get(f"self_attn.{q}_proj.weight") for q in "qkv"])
        out[dst + "attn.in_proj_bias"] = torch.cat([get(f"self_attn.{q}_proj.bias") for q in "qkv"])
        for ours, theirs in [("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                             ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")]:
            out[dst + ours + ".weight"] = get(theirs + ".weight")
            out[dst + ours + ".bias"] = get(theirs + ".bias")
    return model, {f"cond_stage_model.model.{k}": v.half() for k, v in out.items()}


def guided_step(pipe, clip_dir, clip_vocab, prompt, negative, latents, step, steps, cfg, clip_scale, tensors):
    """One CLIP-guided DDIM step as diffusers' community clip_guided_stable_diffusion computes it (its cond_fn), with
    one cutout: the whole decoded image resampled to CLIP's input. The CFG prediction comes from one UNet batch; the
    guidance takes the conditional prediction through x_0 = (x - sqrt(1 - a) eps) / sqrt(a), blended with x by
    fac = sqrt(1 - a), decoded, scored by CLIP (spherical distance to the prompt), and its gradient moves eps by
    -sqrt(1 - a) grad."""
    from diffusers import DDIMScheduler
    from transformers import CLIPModel, CLIPTokenizer

    clip = CLIPModel.from_pretrained(clip_dir).eval()
    clip_tok = CLIPTokenizer(os.path.join(clip_vocab, "vocab.json"), os.path.join(clip_vocab, "merges.txt"))
    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    t = scheduler.timesteps[step]
    cond, uncond = pipe.encode_prompt(prompt, "cpu", 1, True, negative_prompt=negative)
    ids = clip_tok([prompt], padding="max_length", max_length=77, return_tensors="pt").input_ids
    text_clip = cg.text_features(clip, ids)
    noise_cfg = cg.cfg_prediction(pipe, latents, t, uncond, cond, cfg)
    size = clip.config.vision_config.image_size
    guided, grads, loss = cg.cond_fn(pipe, clip, latents, t, scheduler.alphas_cumprod[t], cond, text_clip, noise_cfg,
                                     clip_scale, lambda image: cg.resample(image, size), 1)
    prev = scheduler.step(guided, t, latents).prev_sample
    tensors.update({"guided/latents": latents.clone(), "guided/grad": grads, "guided/noise_cfg": noise_cfg,
                    "guided/noise_guided": guided, "guided/prev": prev, "guided/loss": loss.view(1)})
    return {"prompt": prompt, "negative": negative, "step": step, "steps": steps, "cfg_scale": cfg,
            "clip_guidance_scale": clip_scale, "timestep": int(t), "clip": os.path.basename(clip_dir.rstrip("/")),
            "scheduler": "ddim"}


def make_pipeline(out, name, spec, vae, factor, seed, size, unet_size, merges_file, tensors):
    """A diffusers Stable Diffusion folder (model_index.json, scheduler, tokenizer, text_encoder, unet, vae); its text
    states, a 4-step sampling with classifier-free guidance and a negative prompt from stored latents, and an
    image-to-image run at strength 0.5 from a stored image and the noise its generator drew."""
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
    from diffusers import EulerDiscreteScheduler, PNDMScheduler

    folder = os.path.join(out, "pipeline", name)
    os.makedirs(os.path.join(folder, "scheduler"))
    with open(os.path.join(folder, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(spec["scheduler"], f, indent=2)
    scheduler_cls = {"PNDMScheduler": PNDMScheduler, "EulerDiscreteScheduler": EulerDiscreteScheduler}
    scheduler = scheduler_cls[spec["scheduler"]["_class_name"]].from_config(spec["scheduler"])
    tokenizer = make_tokenizer(folder, merges_file, 600, spec["pad"])
    text_encoder, text_ldm = make_text_encoder(folder, seed, len(tokenizer.get_vocab()), spec["hidden_act"],
                                               extra_layer=name == "sd2")
    unet, unet_ldm = make_unet(folder, name, spec["unet"], seed + 1, unet_size, tensors)
    components = dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                      safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = StableDiffusionPipeline(**components)
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(dict(pipe.config, _class_name="StableDiffusionPipeline"), f, indent=2, default=list)
    prompt, negative = "a red cube on a blue table", "blurry, dark"
    cond, uncond = pipe.encode_prompt(prompt, "cpu", 1, True, negative_prompt=negative)
    ids = tokenizer([prompt, negative], padding="max_length", max_length=77, truncation=True,
                    return_tensors="pt").input_ids
    side = size * factor  # the images' side; latents are `size`
    g = torch.Generator().manual_seed(seed + 2)
    start = torch.randn(1, 4, size, size, generator=g)  # the pipeline multiplies by init_noise_sigma
    with torch.no_grad():
        sampled = pipe(prompt, negative_prompt=negative, num_inference_steps=4, guidance_scale=7.5, latents=start,
                       height=side, width=side, output_type="latent").images
        image = pipe.vae.decode(sampled / vae.config.scaling_factor).sample
    init = torch.rand(1, 3, side, side, generator=g)
    img_seed = seed + 3
    img2img = StableDiffusionImg2ImgPipeline(**components)
    with torch.no_grad():
        refined = img2img(prompt, image=init, strength=0.5, num_inference_steps=4, guidance_scale=7.5,
                          negative_prompt=negative, generator=torch.Generator().manual_seed(img_seed),
                          output_type="latent").images
    # The draws that run made from its generator, in order: the posterior's sample, then the noise added.
    draws = torch.Generator().manual_seed(img_seed)
    posterior_noise = torch.randn(1, 4, size, size, generator=draws)
    add_noise = torch.randn(1, 4, size, size, generator=draws)
    tensors.update({f"{name}/tokens": ids, f"{name}/cond": cond, f"{name}/uncond": uncond,
                    f"{name}/start": start, f"{name}/sampled": sampled, f"{name}/image": image,
                    f"{name}/init": init, f"{name}/posterior_noise": posterior_noise, f"{name}/add_noise": add_noise,
                    f"{name}/refined": refined})
    entry = {"folder": f"pipeline/{name}", "prompt": prompt, "negative": negative, "steps": 4, "cfg_scale": 7.5,
             "strength": 0.5, "scheduler": spec["scheduler"]["_class_name"], "latent_size": size, "image_size": side}
    return pipe, entry, text_ldm, unet_ldm


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "sd"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--size", type=int, default=8, help="the schedulers' latent height and width")
    ap.add_argument("--vae-size", type=int, default=16, help="the VAE's image height and width")
    ap.add_argument("--unet-size", type=int, default=8, help="the UNets' latent height and width")
    ap.add_argument("--latent-size", type=int, default=40, help="the pipelines' latent height and width")
    shared = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "fixtures")
    ap.add_argument("--merges", default=os.path.join(shared, "tokenizer", "hf-tokenizer", "merges.txt"),
                    help="CLIP's merges.txt; the tokenizers take its first merges")
    ap.add_argument("--clip", default=os.path.join(shared, "clip", "vit-tiny.hf"),
                    help="the Hugging Face CLIPModel folder that guides (the CLIP fixture's)")
    ap.add_argument("--clip-vocab", default=os.path.join(shared, "tokenizer", "hf-tokenizer"))
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(os.path.join(out, "scheduler"))
    with open(os.path.join(out, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(SD1_SCHEDULER, f, indent=2)
    shape = (1, 4, args.size, args.size)
    tensors, cases = {}, {}
    for k, (name, ours, cls, overrides, eta) in enumerate(CASES):
        calls = run_case(name, cls, overrides, eta, args.steps, shape, args.seed * 100 + k, tensors)
        cases[name] = {"scheduler": ours, "diffusers_class": cls.__name__, "overrides": overrides,
                       "steps": args.steps, "eta": eta, "unet_calls": calls}
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(out, "schedulers.safetensors"))
    reference = {}
    folders = [os.path.join(out, "pipeline", name) for name in PIPELINES]
    vae, vae_ldm, vae_info = make_vae(folders, args.seed + 7, args.vae_size, reference)
    factor = vae_info["image_size"] // vae_info["latent_size"]
    pipelines, unets, pipes = {}, {}, {}
    for k, (name, spec) in enumerate(PIPELINES.items()):
        pipe, entry, text_ldm, unet_ldm = make_pipeline(out, name, spec, vae, factor, args.seed + 11 + 10 * k,
                                                        args.latent_size, args.unet_size, args.merges, reference)
        pipes[name] = pipe
        unets[name] = {"folder": f"pipeline/{name}/unet", "heads": spec["unet"]["attention_head_dim"]}
        # Each single file holds the VAE, the UNet and the text tower under latent diffusion's names, as a CompVis
        # checkpoint does; its yaml says what the weights cannot (heads, projections, the text layer SD 2 uses).
        single = f"{name}-single.safetensors"
        save_file(dict(vae_ldm, **unet_ldm, **text_ldm), os.path.join(out, single))
        u = spec["unet"]
        heads = u["attention_head_dim"]
        head_line = (f"num_heads: {heads}" if isinstance(heads, int)
                     else f"num_head_channels: {u['block_out_channels'][0] // heads[0]}")
        cond = ("ldm.modules.encoders.modules.FrozenCLIPEmbedder" if name == "sd1" else
                "ldm.modules.encoders.modules.FrozenOpenCLIPEmbedder\n      params:\n        layer: penultimate")
        with open(os.path.join(out, f"{name}-single.yaml"), "w") as f:
            f.write("model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n  params:\n"
                    f"    parameterization: {'v' if spec['scheduler'].get('prediction_type') == 'v_prediction' else 'eps'}\n"
                    "    unet_config:\n      target: ldm.modules.diffusionmodules.openaimodel.UNetModel\n      params:\n"
                    f"        {head_line}\n        context_dim: {u['cross_attention_dim']}\n"
                    f"        num_res_blocks: {u['layers_per_block']}\n        transformer_depth: 1\n"
                    f"        use_linear_in_transformer: {'true' if u['use_linear_projection'] else 'false'}\n"
                    f"    cond_stage_config:\n      target: {cond}\n")
        entry.update(single_file=single, original_config=f"{name}-single.yaml")
        unets[name].update(single_file=single, original_config=f"{name}-single.yaml")
        pipelines[name] = entry
    guided = guided_step(pipes["sd1"], args.clip, args.clip_vocab, pipelines["sd1"]["prompt"],
                         pipelines["sd1"]["negative"], reference["sd1/start"], 1, 4, 7.5, 100.0, reference)
    save_file({k: v.contiguous() for k, v in reference.items()}, os.path.join(out, "sd-reference.safetensors"))
    import diffusers
    manifest = {"diffusers": diffusers.__version__, "torch": torch.__version__, "seed": args.seed,
                "scheduler_config": "scheduler/scheduler_config.json", "cases": cases,
                "vae_folder": "pipeline/sd1/vae", "vae_single_file": "sd1-single.safetensors",
                "reference": "sd-reference.safetensors", "vae": vae_info, "unets": unets, "pipelines": pipelines,
                "guided": guided}
    with open(os.path.join(out, "sd-manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    print(f"wrote {out}: {len(cases)} scheduler cases, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
