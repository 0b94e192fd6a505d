#!/usr/bin/env bash
# End-to-end checks of `clipguide generate` on the fixture models: outputs and metadata, bit-identical replay,
# SIGINT then --resume giving the uninterrupted image, reconstruction, candidates, and bad input.
source "$(dirname "$0")/common.sh"

# The first ViT CLIP of the manifest and its text heads; the VQGAN files.
source "$(dirname "$0")/fixture_models.sh"
read -r clip heads < <(fixture_vit_clip)
read -r ckpt st yaml init < <(fixture_vqgan)
guide=(--clip-model "$fx/clip/$clip" --text-heads "$heads" --vocab "$vocab" --cutn 6 --threads 2)
vq=(--vqgan-checkpoint "$fx/vqgan/$ckpt")

# Decompressed pixel rows of a PNG (metadata aside), for comparing images.
pixels() { python3 -c "
import sys,struct,zlib
b=open(sys.argv[1],'rb').read(); i=8; d=b''
while i < len(b):
    n=struct.unpack('>I', b[i:i+4])[0]
    if b[i+4:i+8] == b'IDAT': d += b[i+8:i+8+n]
    i += 12 + n
sys.stdout.buffer.write(zlib.decompress(d))" "$1"; }

# A run writes the PNG (with its metadata chunks), the sidecar and one log line per step.
"$bin" generate -p "a red circle:1 | fog:-0.5" "${guide[@]}" "${vq[@]}" --size 48x32 --steps 6 --seed 3 \
  -o "$tmp/a.png" --log "$tmp/a.jsonl" >"$tmp/out" 2>"$tmp/err"
if [ $? -eq 0 ] && [ -s "$tmp/a.png" ] && [ "$(wc -l <"$tmp/a.jsonl")" -eq 6 ] && grep -aq '"argv"' "$tmp/a.png" \
   && python3 -c "
import json,sys; d=json.load(open(sys.argv[1]))
assert d['seed']==3 and d['steps_done']==6 and d['size']==[48,32]
assert all(len(m['sha256'])==64 for m in d['models']) and {m['role'] for m in d['models']}=={'clip','vqgan'}
assert set(d['loss'])=={'a red circle','fog'}" "$tmp/a.json"; then ok; else bad "generate vqgan: $(cat "$tmp/err")"; fi

# Replay (from the sidecar or from the PNG) reproduces the image bit for bit.
"$bin" generate --replay "$tmp/a.json" -o "$tmp/r.png" >/dev/null 2>"$tmp/err" && cmp -s <(pixels "$tmp/a.png") <(pixels "$tmp/r.png") \
  && ok || bad "replay from json: $(cat "$tmp/err")"
"$bin" generate --replay "$tmp/a.png" >/dev/null 2>"$tmp/err" && cmp -s <(pixels "$tmp/a.png") <(pixels "$tmp/a.replay.png") \
  && ok || bad "replay from png: $(cat "$tmp/err")"

# A sidecar from before requests were recorded holds only the command line; it replays the same.
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); del d['request']; json.dump(d, open(sys.argv[2], 'w'))" \
  "$tmp/a.json" "$tmp/old.json"
"$bin" generate --replay "$tmp/old.json" -o "$tmp/old.png" >/dev/null 2>"$tmp/err" && cmp -s <(pixels "$tmp/a.png") <(pixels "$tmp/old.png") \
  && ok || bad "replay from an argv-only sidecar: $(cat "$tmp/err")"

# A replay refuses a model file that changed since the run (here: the same weights in the other file format).
cp "$fx/vqgan/$st" "$tmp/v.bin"
"$bin" generate -p x "${guide[@]}" --vqgan-checkpoint "$tmp/v.bin" --size 16x16 --steps 1 --seed 1 -o "$tmp/v.png" >/dev/null 2>&1
cp "$fx/vqgan/$ckpt" "$tmp/v.bin"
"$bin" generate --replay "$tmp/v.json" -o "$tmp/v2.png" >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && grep -q "changed since the recorded run" "$tmp/err" && [ ! -e "$tmp/v2.png" ] && ok || bad "replay of a changed model: $(cat "$tmp/err")"

# SIGINT mid-run saves the image and state; --resume finishes it, identical to a run never stopped.
args=(-p "a blue square" "${guide[@]}" --vqgan-checkpoint "$fx/vqgan/$st" --size 32x32 --steps 100 --seed 4)
"$bin" generate "${args[@]}" -o "$tmp/int.png" --log "$tmp/int.jsonl" >/dev/null 2>"$tmp/int.err" &
pid=$!
for _ in $(seq 200); do [ -s "$tmp/int.jsonl" ] && [ "$(wc -l <"$tmp/int.jsonl")" -ge 3 ] && break; sleep 0.1; done
kill -INT $pid
wait $pid
rc=$?
stopped=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['steps_done'])" "$tmp/int.json" 2>/dev/null || echo 0)
if [ $rc -eq 130 ] && [ -s "$tmp/int.state.safetensors" ] && [ "$stopped" -gt 0 ] && [ "$stopped" -lt 100 ] \
   && grep -q -- "--resume" "$tmp/int.err"; then ok; else bad "sigint: rc=$rc stopped=$stopped $(cat "$tmp/int.err")"; fi
# A sidecar naming a candidate the run does not have is refused, not read out of bounds.
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d['resume']['kept']=[99]; json.dump(d, open(sys.argv[2], 'w'))" \
  "$tmp/int.json" "$tmp/tampered.json"
"$bin" generate --resume "$tmp/tampered.json" >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "resume.kept names candidate 99" "$tmp/err" && ok \
  || bad "tampered resume.kept: $(cat "$tmp/err")"
if "$bin" generate --resume "$tmp/int.json" >/dev/null 2>"$tmp/err" && [ ! -e "$tmp/int.state.safetensors" ]; then
  "$bin" generate "${args[@]}" -o "$tmp/full.png" >/dev/null 2>&1
  cmp -s <(pixels "$tmp/int.png") <(pixels "$tmp/full.png") && ok || bad "resumed image differs from the uninterrupted one"
else bad "resume: $(cat "$tmp/err")"; fi
"$bin" generate --resume "$tmp/full.json" >/dev/null 2>"$tmp/err"; [ $? -eq 1 ] && grep -q "nothing to resume" "$tmp/err" && ok \
  || bad "resume of a finished run: $(cat "$tmp/err")"

# --steps 0 writes the VQGAN's reconstruction of the init image, at its size.
"$bin" generate --steps 0 --init-image "$fx/vqgan/$init" "${vq[@]}" --vqgan-config "$fx/vqgan/$yaml" -o "$tmp/rec.png" \
  >/dev/null 2>"$tmp/err" && [ -s "$tmp/rec.png" ] && ok || bad "reconstruction: $(cat "$tmp/err")"

# Candidates: -n 3 --keep 2 writes two ranked images, each with a sidecar; frames for every step of every run.
"$bin" generate -p "green" "${guide[@]}" --generator pixels --pixel-param fourier --lr 0.05 --size 32x32 --steps 8 \
  -n 3 --keep 2 --explore-steps 2 --frames "$tmp/frames" --seed 1 -o "$tmp/c.png" >"$tmp/out" 2>"$tmp/err"
if [ $? -eq 0 ] && [ -s "$tmp/c-1.png" ] && [ -s "$tmp/c-2.json" ] && [ ! -e "$tmp/c-3.png" ] && [ ! -e "$tmp/c.png" ] \
   && [ "$(ls "$tmp/frames" | wc -l)" -eq $((3 * 2 + 2 * 6)) ] && [ "$(wc -l <"$tmp/out")" -eq 2 ]; then ok; else
  bad "candidates: $(cat "$tmp/err")"; fi

# A sampler run (NAME, then its arguments) stopped by SIGINT after a few steps and resumed gives the image of a run
# never stopped.
resumes_as_uninterrupted() {
  local name=$1; shift
  "$bin" generate "$@" -o "$tmp/$name-int.png" --log "$tmp/$name-int.jsonl" >/dev/null 2>"$tmp/$name-int.err" &
  local pid=$!
  for _ in $(seq 300); do [ -s "$tmp/$name-int.jsonl" ] && [ "$(wc -l <"$tmp/$name-int.jsonl")" -ge 3 ] && break; sleep 0.1; done
  kill -INT $pid
  wait $pid
  local rc=$?
  if [ $rc -eq 130 ] && "$bin" generate --resume "$tmp/$name-int.json" >/dev/null 2>"$tmp/err"; then
    "$bin" generate "$@" -o "$tmp/$name-full.png" >/dev/null 2>&1
    cmp -s <(pixels "$tmp/$name-int.png") <(pixels "$tmp/$name-full.png") && ok || bad "resumed $name sample differs"
  else bad "$name sigint/resume: rc=$rc $(cat "$tmp/$name-int.err" "$tmp/err")"; fi
}

# Diffusion: every sampler runs; replay is bit-identical; SIGINT + --resume gives the uninterrupted sample.
read -r unet_pt unet_flags < <(python3 -c "
import json,sys
m=list(json.load(open(sys.argv[1]))['models'].values())[0]
print(m['pt'], m['flags'])" "$fx/diffusion/diffusion-manifest.json")
diff_args=(-p "a red circle" "${guide[@]}" --generator diffusion --diffusion-checkpoint "$fx/diffusion/$unet_pt"
           --diffusion-flags "$fx/diffusion/$unet_flags" --tv-scale 0 --range-scale 0 --clip-guidance-scale 100 --seed 6)
for sampler in ddpm ddim euler_a; do
  "$bin" generate "${diff_args[@]}" --sampler $sampler --timestep-respacing 10 -o "$tmp/d-$sampler.png" >/dev/null 2>"$tmp/err" \
    && python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['steps_done']==10 and any(m['role']=='diffusion' for m in d['models'])" \
       "$tmp/d-$sampler.json" && ok || bad "diffusion $sampler: $(cat "$tmp/err")"
done
"$bin" generate "${diff_args[@]}" --timestep-respacing 10 --skip-timesteps 6 --init-image "$fx/vqgan/$init" --size 32x32 \
  -o "$tmp/d-init.png" >/dev/null 2>"$tmp/err" \
  && python3 -c "import json,sys; assert json.load(open(sys.argv[1]))['steps_done']==4" "$tmp/d-init.json" && ok \
  || bad "diffusion from an init image: $(cat "$tmp/err")"
"$bin" generate --replay "$tmp/d-ddim.json" -o "$tmp/d-replay.png" >/dev/null 2>"$tmp/err" \
  && cmp -s <(pixels "$tmp/d-ddim.png") <(pixels "$tmp/d-replay.png") && ok || bad "diffusion replay: $(cat "$tmp/err")"
resumes_as_uninterrupted diffusion "${diff_args[@]}" --timestep-respacing 100

# Stable Diffusion (tests/data/sd): a diffusers folder, and a single file with its yaml and a vocabulary; CLIP
# guidance with best-of-2; replay bit-identical; SIGINT + --resume (a multistep scheduler) gives the uninterrupted
# image.
sdfx=${CLIPGUIDE_SD_FIXTURES:-$(dirname "$0")/data/sd}
read -r sd1 sd2_file sd2_yaml sd2 side < <(python3 -c "
import json,sys; m=json.load(open(sys.argv[1]))['pipelines']
print(m['sd1']['folder'], m['sd2']['single_file'], m['sd2']['original_config'], m['sd2']['folder'], m['sd1']['image_size'])" \
  "$sdfx/sd-manifest.json")
sd_args=(-p "a red cube" --negative "blurry" --sd-model "$sdfx/$sd1" --size "${side}x${side}" --steps 4 --seed 2 --threads 2)
"$bin" generate "${sd_args[@]}" -o "$tmp/sd.png" >"$tmp/out" 2>"$tmp/err" \
  && python3 -c "
import json,sys; d=json.load(open(sys.argv[1]))
assert d['request']['generator']=='sd' and d['steps_done']==5 and d['size']==[int(sys.argv[2])]*2  # PNDM: 4 steps, 5 calls
assert {m['role'] for m in d['models']}=={'sd'} and len(d['models'])==3" "$tmp/sd.json" "$side" \
  && [ "$(cat "$tmp/out")" = "$tmp/sd.png" ] && ok || bad "sd folder: $(cat "$tmp/err")"
"$bin" generate -p "a red cube" --sd-model "$sdfx/$sd2_file" --sd-config "$sdfx/$sd2_yaml" --sd-tokenizer "$sdfx/$sd2/tokenizer" \
  --scheduler ddim --size "${side}x${side}" --steps 3 --seed 2 -o "$tmp/sd2.png" >/dev/null 2>"$tmp/err" && [ -s "$tmp/sd2.png" ] \
  && ok || bad "sd single file: $(cat "$tmp/err")"
# A story prompt: its second segment conditions the later steps, so the image is not the first prompt's.
"$bin" generate -p "a red cube ^ a blue sphere" --prompt-every 2 "${sd_args[@]:2}" -o "$tmp/sd-story.png" >/dev/null \
  2>"$tmp/err" && [ -s "$tmp/sd-story.png" ] && ! cmp -s <(pixels "$tmp/sd.png") <(pixels "$tmp/sd-story.png") \
  && ok || bad "sd story prompt: $(cat "$tmp/err")"
sd_guided=("${sd_args[@]}" "${guide[@]}" --scheduler dpmpp_2m --clip-guidance-scale 50)
"$bin" generate "${sd_guided[@]}" -n 2 --init-image "$fx/vqgan/$init" --strength 0.75 -o "$tmp/sdg.png" >"$tmp/out" 2>"$tmp/err" \
  && python3 -c "
import json,sys; d=json.load(open(sys.argv[1]))
assert d['steps_done']==3 and d['candidate']['of']==2 and 'CLIP guidance 50' in d['generator'] and 'clip' in {m['role'] for m in d['models']}" \
  "$tmp/sdg.json" && [ "$(cut -f1 "$tmp/out")" = "$tmp/sdg.png" ] && ok || bad "sd guided: $(cat "$tmp/err")"
"$bin" generate --replay "$tmp/sdg.json" -o "$tmp/sdg-replay.png" >/dev/null 2>"$tmp/err" \
  && cmp -s <(pixels "$tmp/sdg.png") <(pixels "$tmp/sdg-replay.png") && ok || bad "sd replay: $(cat "$tmp/err")"
resumes_as_uninterrupted sd "${sd_guided[@]}" --steps 60 --guide-every 2

# Bad input: one line, exit 1, no output file.
expect_fail() {
  local name=$1; shift
  rm -f "$tmp/bad.png"
  "$@" -o "$tmp/bad.png" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  if [ $rc -ne 0 ] && [ $rc -lt 128 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && [ ! -e "$tmp/bad.png" ]; then ok; else
    bad "$name: rc=$rc $(head -c 300 "$tmp/err")"; fi
}
head -c 100000 "$fx/vqgan/$ckpt" >"$tmp/trunc.ckpt"
expect_fail "truncated ckpt" "$bin" generate -p x "${guide[@]}" --vqgan-checkpoint "$tmp/trunc.ckpt" --steps 2
expect_fail "clip as vqgan" "$bin" generate -p x "${guide[@]}" --vqgan-checkpoint "$fx/clip/$clip" --steps 2
# Without --clip-model or the generator's weights the bundled models are used (tests/toyworld_test.sh); where they
# are missing, that is the one-line error.
expect_fail "no vqgan, none bundled" env CLIPGUIDE_MODELS="$tmp/nowhere" "$bin" generate -p x "${guide[@]}" --generator vqgan --steps 2
expect_fail "no generator, none bundled" env CLIPGUIDE_MODELS="$tmp/nowhere" "$bin" generate -p x "${guide[@]}" --steps 2
expect_fail "no clip, none bundled" env CLIPGUIDE_MODELS="$tmp/nowhere" "$bin" generate -p x --generator pixels --steps 2
expect_fail "empty prompt item" "$bin" generate -p "a || b" "${guide[@]}" --generator pixels --steps 2
expect_fail "bad size" "$bin" generate -p x "${guide[@]}" --generator pixels --size 0x5 --steps 2
expect_fail "bad augment" "$bin" generate -p x "${guide[@]}" --generator pixels --augments blur --steps 2
expect_fail "keep > n" "$bin" generate -p x "${guide[@]}" --generator pixels -n 2 --keep 3 --steps 2
expect_fail "missing image prompt" "$bin" generate --image-prompt "$tmp/none.png:1" "${guide[@]}" --generator pixels --steps 2
expect_fail "no diffusion weights, none bundled" env CLIPGUIDE_MODELS="$tmp/nowhere" "$bin" generate -p x "${guide[@]}" --generator diffusion
expect_fail "vqgan as unet" "$bin" generate -p x "${guide[@]}" --generator diffusion --diffusion-checkpoint "$fx/vqgan/$st"
expect_fail "bad sampler" "$bin" generate "${diff_args[@]}" --sampler plms
expect_fail "bad respacing" "$bin" generate "${diff_args[@]}" --timestep-respacing ddim999
expect_fail "skip without init" "$bin" generate "${diff_args[@]}" --skip-timesteps 5
expect_fail "sd: bad scheduler" "$bin" generate "${sd_args[@]}" --scheduler lms
expect_fail "sd: strength 0" "$bin" generate "${sd_args[@]}" --init-image "$fx/vqgan/$init" --strength 0
expect_fail "sd: too few steps for the strength" "$bin" generate "${sd_args[@]}" --init-image "$fx/vqgan/$init" --strength 0.1
expect_fail "sd: best-of-2 without a CLIP" "$bin" generate "${sd_args[@]}" -n 2
expect_fail "sd: no model" "$bin" generate -p x --generator sd
expect_fail "sd: a UNet folder alone" "$bin" generate -p x --sd-model "$sdfx/$sd1/unet"
expect_fail "sd: a CLIP as the model" "$bin" generate -p x --sd-model "$fx/clip/$clip"
expect_fail "sd: bad guide-grad" "$bin" generate "${sd_guided[@]}" --guide-grad half
expect_fail "bad init image" "$bin" generate -p x "${guide[@]}" --generator pixels --init-image "$tmp/trunc.ckpt" --steps 2

echo "generate_test: $pass passed, $failed failed"
[ "$failed" -eq 0 ]
