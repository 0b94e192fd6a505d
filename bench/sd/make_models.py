"""bench/sd: Stable Diffusion 1.5's shapes with random weights, made with diffusers' and transformers' own classes and
saved as a diffusers folder (fp16 weights, as published folders keep them): UNet2DConditionModel (320-640-1280-1280,
two res blocks a level, 8 heads, 768-d cross-attention), AutoencoderKL (128-256-512-512, 4 latent channels, f8),
CLIPTextModel (ViT-L/14's text tower) with CLIP's own vocabulary, PNDM's scheduler config; and a ViT-B/32-shape
CLIPModel to guide with. Both sides of the bench load these files.

usage: make_models.py OUT_DIR VOCAB_DIR   (VOCAB_DIR: CLIP's vocab.json and merges.txt)
"""
import json
import os
import shutil
import sys

import torch
from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, CLIPTokenizer

out, vocab = sys.argv[1], sys.argv[2]
if os.path.exists(os.path.join(out, "pipeline", "model_index.json")) and os.path.exists(os.path.join(out, "clip")):
    sys.exit(0)
torch.manual_seed(0)
unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
vae = AutoencoderKL(block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
                    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                    sample_size=512)
text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                    num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                                    projection_dim=768))
tokenizer = CLIPTokenizer.from_pretrained(vocab) if os.path.exists(os.path.join(vocab, "tokenizer_config.json")) \
    else CLIPTokenizer(vocab=json.load(open(os.path.join(vocab, "vocab.json"))),
                       merges=[tuple(l.split()) for l in open(os.path.join(vocab, "merges.txt")).read().split("\n")[1:] if l],
                       model_max_length=77)
scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                          steps_offset=1, set_alpha_to_one=False)
pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                               safety_checker=None, feature_extractor=None, requires_safety_checker=False)
pipe.to(torch.float16).save_pretrained(os.path.join(out, "pipeline"))
for name in ("vocab.json", "merges.txt"):  # the vocabulary files clipguide reads, as SD folders ship them
    shutil.copy(os.path.join(vocab, name), os.path.join(out, "pipeline", "tokenizer", name))
CLIPModel(CLIPConfig()).save_pretrained(os.path.join(out, "clip"))  # ViT-B/32's shape
print(json.dumps({"unet_parameters": sum(p.numel() for p in unet.parameters()),
                  "vae_parameters": sum(p.numel() for p in vae.parameters())}))
