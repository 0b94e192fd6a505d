"""bench/sd, the Python way: diffusers on the venv's torch, the files make_models.py wrote. Times one classifier-free
guidance step (the pipeline's UNet on the unconditional and conditional batch, the guidance mix, the scheduler's
step) and one CLIP-guided step as diffusers' community clip_guided_stable_diffusion pipeline computes it: the same CFG
step, then its cond_fn (the UNet again, with gradients, on the conditional text; x_0 from epsilon blended with the
latents; the VAE decode; MakeCutouts' random cutouts pooled to CLIP's size; CLIP image features; the spherical
distance to the prompt's; the gradient through the VAE and the UNet; epsilon moved by it), then the scheduler's step.
Prints one JSON object of median seconds per step.

usage: peer.py MODELS_DIR SIZE STEPS THREADS [--cutn N] [--device D] [--bf16]

--bf16 also times the CFG step with the UNet under torch's CPU autocast in bf16.
"""
import json
import os
import statistics
import sys
import time

import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from transformers import CLIPModel

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools"))
import community_guidance as cg  # noqa: E402  (the community pipeline's guidance, shared with the fixture)

models, size, steps, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cutn = int(sys.argv[sys.argv.index("--cutn") + 1]) if "--cutn" in sys.argv else 4
device = sys.argv[sys.argv.index("--device") + 1] if "--device" in sys.argv else "cpu"
torch.set_num_threads(threads)
torch.manual_seed(0)
pipe = StableDiffusionPipeline.from_pretrained(f"{models}/pipeline", torch_dtype=torch.float32).to(device)
pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)  # the community pipeline's DDIM-like branch
clip = CLIPModel.from_pretrained(f"{models}/clip", torch_dtype=torch.float32).to(device).eval()
for module in (pipe.unet, pipe.vae, pipe.text_encoder, clip):
    module.requires_grad_(False)
prompt, negative = "an oil painting of a lighthouse in a storm", "blurry"
cond, uncond = pipe.encode_prompt(prompt, device, 1, True, negative_prompt=negative)
ids = pipe.tokenizer([prompt], padding="max_length", max_length=77, return_tensors="pt").input_ids
text_clip = cg.text_features(clip, ids.to(device))
cut_size = clip.config.vision_config.image_size


def cfg_step(x, t):
    return pipe.scheduler.step(cg.cfg_prediction(pipe, x, t, uncond, cond, 7.5), t, x).prev_sample


def guided_step(x, t):
    noise_cfg = cg.cfg_prediction(pipe, x, t, uncond, cond, 7.5)
    guided, _, _ = cg.cond_fn(pipe, clip, x, t, pipe.scheduler.alphas_cumprod[t], cond, text_clip, noise_cfg, 100.0,
                              lambda image: cg.make_cutouts(image, cutn, cut_size), cutn)
    return pipe.scheduler.step(guided, t, x).prev_sample


pipe.scheduler.set_timesteps(50)
latents = torch.randn(1, 4, size // 8, size // 8, device=device)


def timed(step, n):
    global latents
    times = []
    for i in range(n + 1):  # the first is a warm-up
        t = pipe.scheduler.timesteps[i]
        start = time.perf_counter()
        latents = step(latents, t)
        if device != "cpu":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


out = {"torch": torch.__version__, "size": size, "threads": threads, "cutn": cutn}
out["cfg_step_s"] = timed(cfg_step, steps)
if "--bf16" in sys.argv:
    pipe.scheduler.set_timesteps(50)
    with torch.autocast(device.split(":")[0], dtype=torch.bfloat16):
        out["cfg_bf16_step_s"] = timed(cfg_step, steps)
pipe.scheduler.set_timesteps(50)
out["guided_step_s"] = timed(guided_step, steps)
print(json.dumps(out))
