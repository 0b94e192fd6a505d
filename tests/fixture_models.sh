# Sourced by the shell tests and benches that run the CLI on fixture models; reads $fx (the fixtures folder).
# fixture_vit_clip: "FILE TEXT_HEADS" of the first ViT CLIP in the manifest (FILE relative to $fx/clip).
fixture_vit_clip() {
  python3 -c "
import json,sys
m=json.load(open(sys.argv[1]))['models']
for n in m:
    if not isinstance(m[n]['config']['vision_layers'], list):
        f=[f for f in m[n]['files'] if '.reference.' not in f][0]
        print(f, m[n]['config']['transformer_heads']); break" "$fx/clip/clip-manifest.json"
}
# fixture_vqgan: "CKPT SAFETENSORS YAML INIT_IMAGE" of the first VQGAN in the manifest (relative to $fx/vqgan).
fixture_vqgan() {
  python3 -c "
import json,sys
m=list(json.load(open(sys.argv[1]))['models'].values())[0]
print(m['ckpt'], m['safetensors'], m['yaml'], m['init_images'][0])" "$fx/vqgan/vqgan-manifest.json"
}
