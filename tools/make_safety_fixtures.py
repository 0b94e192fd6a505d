#!/usr/bin/env python3
"""Makes tests/data/safety: a small random-weight Stable Diffusion safety checker, saved as diffusers saves a
pipeline's safety_checker/ and feature_extractor/ folders, and what diffusers decides on a few pictures.

    .venv/bin/python tools/make_safety_fixtures.py [--out DIR] [--seed N] [--scale K]

The checker is diffusers' own StableDiffusionSafetyChecker on a tiny CLIPConfig. Its concept embeddings are drawn
near some pictures' embeddings, and its thresholds are set around the resulting cosines, so that the pictures
include flagged and clean ones, special-care hits (with diffusers' 0.01 adjustment) and misses.
safety-manifest.json lists the pictures and, for each, diffusers' verdict from StableDiffusionSafetyChecker.forward:
has_nsfw_concept, concept_scores and special_scores (rounded to 3 decimals, as diffusers reports them), and the
unrounded cosines to each concept ("concept_cos", "special_cos") from its image embeddings.
safety-reference.safetensors holds the checker's input pixels (clip_input [N,3,R,R], from CLIPImageProcessorPil) and
image embeddings (image_embeds [N,E]). --seed and --scale change
the weights, the widths and the concepts; the tests read everything from the files.
"""
import argparse
import json
import os
import shutil

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPConfig
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker, cosine_distance


def make_pictures(out, rng, count, resolution):
    """Pictures of awkward sizes whose resized long side minus the crop is even: there, transformers' PIL
    processor (which crops at (size - crop) // 2) and torchvision's CenterCrop (which rounds (size - crop) / 2)
    take the same pixels, so the decisions from the files are diffusers' whichever it ran with."""
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    names = []
    sizes = [(97, 61), (45, 130), (80, 80), (64, 48), (33, 90), (120, 70)]
    for i in range(count):
        w, h = sizes[i % len(sizes)]
        while (int(resolution * max(w, h) / min(w, h)) - resolution) % 2:
            w += 1
        coarse = rng.uniform(0, 255, size=(3, 3, 3)).astype(np.float32)
        img = Image.fromarray(coarse.astype(np.uint8)).resize((w, h), Image.BICUBIC)
        noise = rng.integers(-15, 16, size=(h, w, 3))
        arr = np.clip(np.asarray(img).astype(np.int64) + noise, 0, 255).astype(np.uint8)
        name = f"picture-{i}.png"
        Image.fromarray(arr).save(os.path.join(out, "images", name))
        names.append(name)
    return names


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "safety"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=int, default=1)
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    k = args.scale
    resolution = 32 * k
    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=100, max_position_embeddings=16),
        vision_config=dict(hidden_size=32 * k, intermediate_size=80 * k, num_hidden_layers=2 + k,
                           num_attention_heads=2 * k, patch_size=8, image_size=resolution, hidden_act="quick_gelu"),
        projection_dim=24 * k)
    checker = StableDiffusionSafetyChecker(config).eval()
    # PIL resampling, as CLIPImageProcessor did before transformers 5 (its default now resizes with torchvision).
    processor = CLIPImageProcessorPil(size={"shortest_edge": resolution},
                                   crop_size={"height": resolution, "width": resolution})
    names = make_pictures(out, rng, 12, resolution)
    images = [Image.open(os.path.join(out, "images", n)).convert("RGB") for n in names]
    clip_input = processor(images, return_tensors="pt").pixel_values
    with torch.no_grad():
        embeds = checker.visual_projection(checker.vision_model(clip_input)[1])
        unit = torch.nn.functional.normalize(embeds)
        # Concepts near some pictures. Random towers embed every picture in much the same direction, so each
        # threshold is placed among that concept's cosines: a few concepts flag their closest pictures, one sits
        # 0.0003 under a picture's cosine (a score diffusers rounds to 0: not flagged), the rest flag none.
        concepts = checker.concept_embeds.shape[0]
        specials = checker.special_care_embeds.shape[0]
        near = torch.tensor(rng.integers(0, len(names), size=concepts + specials))
        noise = torch.tensor(rng.normal(size=(concepts + specials, embeds.shape[1])), dtype=torch.float32)
        targets = unit[near] + 0.6 * torch.nn.functional.normalize(noise)
        cos = torch.mm(torch.nn.functional.normalize(targets), unit.t())  # [concepts + specials, pictures]
        ordered = cos.sort(1, descending=True).values
        thresholds = ordered[:, 0] + 0.05
        flagging = rng.choice(concepts, size=3, replace=False)
        for c in flagging:
            r = int(rng.integers(1, 4))  # flags its r closest pictures
            thresholds[c] = (ordered[c, r - 1] + ordered[c, r]) / 2
        boundary = [c for c in range(concepts) if c not in flagging][0]
        thresholds[boundary] = ordered[boundary, 0] - 0.0003
        special = concepts + int(rng.integers(0, specials))
        thresholds[special] = (ordered[special, 1] + ordered[special, 2]) / 2  # special care for two pictures
        checker.concept_embeds.copy_(targets[:concepts])
        checker.concept_embeds_weights.copy_(thresholds[:concepts])
        checker.special_care_embeds.copy_(targets[concepts:])
        checker.special_care_embeds_weights.copy_(thresholds[concepts:])
        pictures = torch.zeros(len(names), 3, resolution, resolution)
        _, has_nsfw = checker(clip_input=clip_input, images=pictures.clone())
        # forward() rounds its scores; the same computation, unrounded, for the cosines.
        concept_cos = cosine_distance(embeds, checker.concept_embeds)
        special_cos = cosine_distance(embeds, checker.special_care_embeds)
        # forward()'s own per-image dictionaries, recomputed here as it builds them, to store the scores.
        results = []
        for i in range(len(names)):
            adjustment = 0.0
            special_scores, concept_scores = [], []
            for c in range(specials):
                s = round(special_cos.numpy()[i][c] - checker.special_care_embeds_weights[c].item() + adjustment, 3)
                special_scores.append(float(s))
                if s > 0:
                    adjustment = 0.01
            for c in range(concepts):
                s = round(concept_cos.numpy()[i][c] - checker.concept_embeds_weights[c].item() + adjustment, 3)
                concept_scores.append(float(s))
            results.append(dict(file=f"images/{names[i]}", has_nsfw_concept=bool(has_nsfw[i]),
                                concept_scores=concept_scores, special_scores=special_scores,
                                concept_cos=concept_cos[i].tolist(), special_cos=special_cos[i].tolist(),
                                image_embeds=embeds[i].tolist()))
            assert (max(concept_scores) > 0) == bool(has_nsfw[i]), "recomputed scores disagree with diffusers"
    save_file({"clip_input": clip_input.contiguous(), "image_embeds": embeds.contiguous()},
              os.path.join(out, "safety-reference.safetensors"))
    checker.save_pretrained(os.path.join(out, "pipeline", "safety_checker"))
    processor.save_pretrained(os.path.join(out, "pipeline", "feature_extractor"))
    flagged = sum(r["has_nsfw_concept"] for r in results)
    special = sum(any(s > 0 for s in r["special_scores"]) for r in results)
    manifest = dict(reference="diffusers StableDiffusionSafetyChecker.forward", seed=args.seed, scale=args.scale,
                    checker="pipeline/safety_checker", concepts=concepts, special_concepts=specials,
                    flagged=flagged, special_care=special, pictures=results)
    with open(os.path.join(out, "safety-manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"{out}: {len(names)} pictures, {flagged} flagged, {special} with special care")


if __name__ == "__main__":
    main()
