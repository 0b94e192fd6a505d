#!/usr/bin/env bash
# bench/gpu, the half that runs HERE, before a GPU machine is asked for: everything bench/gpu/run.sh needs that such
# a machine cannot fetch (it reaches no package registry), into bench/gpu/carry/ (git-ignored; name it in the
# device tool's `carry`):
#   debs/      Debian's packages of the headers and small libraries clipguide builds with (unpacked there, never
#              installed: the machine's own compiler, CUDA toolkit and PyTorch do the rest)
#   fixtures/  the reference fixtures the GPU tests read (a subset of ../shared/fixtures, which does not travel)
set -euo pipefail
cd "$(dirname "$0")/../.."
carry=bench/gpu/carry
fixtures=${CLIPGUIDE_FIXTURES:-$PWD/../shared/fixtures}
rm -rf "$carry"
mkdir -p "$carry/debs" "$carry/fixtures"
packages=(nlohmann-json3-dev libcxxopts-dev libstb-dev libstb0 libyaml-cpp-dev libyaml-cpp0.7 libutf8proc-dev libutf8proc2
          libgtest-dev libjpeg62-turbo-dev libjpeg62-turbo pkgconf pkgconf-bin libpkgconf3 pkg-config)
(cd "$carry/debs" && apt-get download -qq "${packages[@]}")
# What test_cuda.cpp and the benches read: the first ViT CLIP, the vocabulary, the diffusion and VQGAN fixtures.
(cd "$fixtures" && tar cf - clip/clip-manifest.json clip/vit-tiny.* tokenizer/bpe_simple_vocab_16e6.txt.gz tokenizer/hf-tokenizer diffusion vqgan) |
  tar xf - -C "$carry/fixtures"
rm -f "$carry"/fixtures/diffusion/*.pt "$carry"/fixtures/vqgan/*.ckpt "$carry"/fixtures/clip/vit-tiny.openai.jit.pt
rm -rf "$carry"/fixtures/clip/vit-tiny.hf
du -sh "$carry"
