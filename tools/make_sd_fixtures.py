#!/usr/bin/env python3
"""Makes tests/data/sd: what diffusers' own Stable Diffusion schedulers compute, for the parity tests of
generators/sd_scheduler.h.

    .venv/bin/python tools/make_sd_fixtures.py [--out DIR] [--seed N] [--steps N] [--size N]

scheduler/scheduler_config.json is Stable Diffusion 1.x's, as its diffusers folder ships it (a PNDMScheduler
config without timestep_spacing, so each scheduler class fills in its own default, as diffusers' from_config does).
sd-manifest.json lists the cases: a scheduler name as clipguide spells it, the class diffusers ran, the overrides
given to from_config, the number of steps and DDIM's eta. For each case, schedulers.safetensors holds, under
"CASE/": timesteps (what the UNet is given, in order), sigmas where the class has them, init_noise_sigma, the
starting latents `sample` (standard normal times init_noise_sigma), and for step i the model output
`model_output_i` (random, so the test needs no UNet), the noise the step drew `noise_i` (zeros where it drew
none), the scaled model input `scaled_i` and the step's result `prev_i`. --seed, --steps and --size change every
value and shape; the tests read them from the files.
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
    ("dpmpp_2m", "dpmpp_2m", DPMSolverMultistepScheduler, {}, 0.0),
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "sd"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--size", type=int, default=8, help="latent height and width")
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
    import diffusers
    manifest = {"diffusers": diffusers.__version__, "torch": torch.__version__, "seed": args.seed,
                "scheduler_config": "scheduler/scheduler_config.json", "cases": cases}
    with open(os.path.join(out, "sd-manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    print(f"wrote {out}: {len(cases)} scheduler cases, {len(tensors)} tensors")


if __name__ == "__main__":
    main()
