# Sourced by the bench/*/run.sh scripts: set up and build, make sure Debian's Python packages for the reference
# side are there ($@), and pin the thread count (THREADS, default every CPU) for both sides.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup
cmake --build build --target benches -j"$(scripts/cores)" >/dev/null
py=/usr/bin/python3
need=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "this benchmark needs: sudo apt-get install -y ${need[*]}" >&2; exit 1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
threads=${THREADS:-$(scripts/cores)}
export OMP_NUM_THREADS=$threads
# The precisions timed (PRECISIONS, words): bf16 too only where the CPU does bf16 in hardware; elsewhere libtorch
# emulates it, on both sides, at a fraction of the fp32 speed, and the rows would time the emulation.
if [ -z "${PRECISIONS:-}" ]; then
  if grep -qw avx512_bf16 /proc/cpuinfo; then
    PRECISIONS="fp32 bf16"
  else
    PRECISIONS=fp32
    echo "bench: bf16 rows left out, this CPU has no AVX512-BF16 (PRECISIONS='fp32 bf16' times them anyway)" >&2
  fi
fi
export PRECISIONS
# The torch.compile reference rows (COMPILE=0 leaves them out: compiling takes minutes on a small machine).
compile=(--compile)
[ "${COMPILE:-1}" = 0 ] && compile=()
precision_list=${PRECISIONS// /,}
fixtures=${CLIPGUIDE_FIXTURES:-$PWD/../shared/fixtures}
vocab=$fixtures/tokenizer/bpe_simple_vocab_16e6.txt.gz
# Today's libtorch: the PyPI wheel's 2.x build (build-torch2/) and the Python peers on the same torch (.venv/), both
# made by scripts/setup --torch pip. Sets vpy (the venv's python) and bin2 (that build's folder).
setup_torch2() {
  scripts/setup --torch pip >/dev/null
  cmake --build build-torch2 --target benches -j"$(scripts/cores)" >/dev/null
  vpy=$PWD/.venv/bin/python
  bin2=build-torch2
}
