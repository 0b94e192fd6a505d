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


def make_vae(out, seed, size, tensors):
    """A tiny AutoencoderKL as diffusers' tests size theirs, its weights rounded to fp16 (the single file keeps them
    so, as many released checkpoints do), saved as a diffusers vae/ folder and under first_stage_model.* in a single
    file; its posterior on a random image and its decoding of random latents."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[32, 64], layers_per_block=1,
                        latent_channels=4, norm_num_groups=32, sample_size=size)
    with torch.no_grad():
        for p in vae.parameters():  # norms and biases away from 1 and 0, so a misplaced one shows
            p.add_(torch.randn_like(p) * 0.05)
            p.copy_(p.half().float())
    vae.eval()
    vae.half().save_pretrained(os.path.join(out, "pipeline", "vae"))
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
    return ldm, {"scaling_factor": vae.config.scaling_factor, "image_size": size, "latent_size": size // factor}


# Two tiny UNet2DConditionModels at the widths diffusers' tests use: SD 1.x's shape (convolutional projections,
# a head count for every level) and SD 2.x's (linear projections, heads per level, a wider text embedding).
UNETS = {
    "unet_sd1": dict(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=32,
                     attention_head_dim=4, use_linear_projection=False),
    "unet_sd2": dict(block_out_channels=(32, 64), layers_per_block=1, cross_attention_dim=48,
                     attention_head_dim=(2, 4), use_linear_projection=True),
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


def make_unet(out, name, shape, seed, size, tensors):
    """A tiny UNet2DConditionModel (diffusers' own class), saved as pipeline/NAME/ and under model.diffusion_model.*;
    its output for random latents, timesteps and text embeddings."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    torch.manual_seed(seed)
    attn_levels = ("CrossAttnDownBlock2D",) * (len(shape["block_out_channels"]) - 1) + ("DownBlock2D",)
    unet = UNet2DConditionModel(sample_size=size, in_channels=4, out_channels=4, norm_num_groups=32,
                                down_block_types=attn_levels,
                                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (len(attn_levels) - 1),
                                **shape)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
            p.copy_(p.half().float())
    unet.eval()
    unet.half().save_pretrained(os.path.join(out, "pipeline", name))
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
    return ldm


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "sd"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--size", type=int, default=8, help="the schedulers' latent height and width")
    ap.add_argument("--vae-size", type=int, default=16, help="the VAE's image height and width")
    ap.add_argument("--unet-size", type=int, default=8, help="the UNets' latent height and width")
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
    single, vae = make_vae(out, args.seed + 7, args.vae_size, reference)
    unets = {}
    for k, (name, shape) in enumerate(UNETS.items()):
        ldm = make_unet(out, name, shape, args.seed + 11 + k, args.unet_size, reference)
        unets[name] = {"folder": f"pipeline/{name}", "heads": shape["attention_head_dim"]}
        if k == 0:  # the single file holds SD 1.x's UNet beside the VAE, as a CompVis checkpoint does
            single.update(ldm)
            unets[name]["single_file"] = "sd-single.safetensors"
    save_file(single, os.path.join(out, "sd-single.safetensors"))
    # The single file's latent diffusion config, as v1-inference.yaml lays it out (the heads are not in the weights).
    sd1 = UNETS["unet_sd1"]
    with open(os.path.join(out, "sd-single.yaml"), "w") as f:
        f.write("model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n  params:\n    unet_config:\n"
                "      target: ldm.modules.diffusionmodules.openaimodel.UNetModel\n      params:\n"
                f"        num_heads: {sd1['attention_head_dim']}\n        context_dim: {sd1['cross_attention_dim']}\n"
                f"        num_res_blocks: {sd1['layers_per_block']}\n        transformer_depth: 1\n"
                "        use_linear_in_transformer: false\n")
    save_file({k: v.contiguous() for k, v in reference.items()}, os.path.join(out, "sd-reference.safetensors"))
    import diffusers
    manifest = {"diffusers": diffusers.__version__, "torch": torch.__version__, "seed": args.seed,
                "scheduler_config": "scheduler/scheduler_config.json", "cases": cases,
                "pipeline": "pipeline", "single_file": "sd-single.safetensors", "original_config": "sd-single.yaml",
                "reference": "sd-reference.safetensors", "vae": vae, "unets": unets}
    with open(os.path.join(out, "sd-manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    print(f"wrote {out}: {len(cases)} scheduler cases, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
