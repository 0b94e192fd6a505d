"""bench/score/siglip.sh's Python side.

make FOLDER SPIECE LAYERS: writes a SigLIP with So400m's widths (vision and text 1152 wide, 16 heads, MLP 4304,
patch 14 at 224 px, text context 64) and LAYERS layers a tower, random weights, as a Hugging Face SiglipModel folder
with the SentencePiece vocabulary SPIECE.

score FOLDER THREADS PROMPTS_FILE IMAGE...: the transformers way of scoring: SiglipProcessor's PIL image processor and
tokenizer (padding to max_length), SiglipModel.get_image_features / get_text_features in batches of 16 under
torch.inference_mode, normalized, cosine. Decode + preprocess + encode + score are timed; loading is not. Prints one
JSON object per precision: images/s and the scores.
"""
import json
import os
import shutil
import sys
import time

import torch
from PIL import Image
from transformers import SiglipConfig, SiglipModel, SiglipProcessor, SiglipTokenizer
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil


def make(folder, spiece, layers):
    os.makedirs(folder, exist_ok=True)
    shutil.copy(spiece, os.path.join(folder, "spiece.model"))
    tokenizer = SiglipTokenizer(vocab_file=os.path.join(folder, "spiece.model"), model_max_length=64)
    width = 1152
    config = SiglipConfig(
        text_config=dict(vocab_size=32000, hidden_size=width, intermediate_size=4304, num_hidden_layers=layers,
                         num_attention_heads=16, max_position_embeddings=64, projection_size=width,
                         pad_token_id=1, bos_token_id=None, eos_token_id=1),
        vision_config=dict(hidden_size=width, intermediate_size=4304, num_hidden_layers=layers,
                           num_attention_heads=16, image_size=224, patch_size=14),
    )
    torch.manual_seed(0)
    SiglipModel(config).eval().save_pretrained(folder)
    processor = SiglipProcessor(image_processor=SiglipImageProcessorPil(size={"height": 224, "width": 224}),
                                tokenizer=tokenizer)
    processor.save_pretrained(folder)


def score(folder, threads, prompts_file, images):
    torch.set_num_threads(threads)
    model = SiglipModel.from_pretrained(folder).eval()
    image_processor = SiglipImageProcessorPil(size={"height": 224, "width": 224})
    tokenizer = SiglipTokenizer(vocab_file=os.path.join(folder, "spiece.model"), model_max_length=64)
    prompts = [line.rstrip("\n") for line in open(prompts_file) if line.strip()]
    precisions = os.environ.get("PRECISIONS", "fp32").split()
    for prec in precisions:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=prec == "bf16")
        with torch.inference_mode(), autocast:
            tokens = tokenizer(prompts, padding="max_length", max_length=64, truncation=True,
                               return_tensors="pt")["input_ids"]
            text = model.get_text_features(input_ids=tokens).pooler_output.float()
            text = text / text.norm(dim=-1, keepdim=True)
            warm = image_processor([Image.open(p).convert("RGB") for p in images[:2]], return_tensors="pt")
            model.get_image_features(pixel_values=warm["pixel_values"])
            start = time.perf_counter()
            scores = []
            for b in range(0, len(images), 16):
                batch = image_processor([Image.open(p).convert("RGB") for p in images[b:b + 16]],
                                        return_tensors="pt")["pixel_values"]
                feats = model.get_image_features(pixel_values=batch).pooler_output.float()
                feats = feats / feats.norm(dim=-1, keepdim=True)
                scores.append(feats @ text.t())
            seconds = time.perf_counter() - start
        print(json.dumps({"precision": prec, "images_per_s": len(images) / seconds,
                          "scores": torch.cat(scores).tolist(), "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        score(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:])
