#!/usr/bin/env bash
# ctest: runs one fuzz harness over its kept findings (tests/fuzz/regressions/NAME) and its seed corpus made from
# the fixtures. Each must come back without a crash, a sanitizer report or a leak.
set -euo pipefail
bin=$1 name=$2
here=$(cd "$(dirname "$0")" && pwd)
fx=${CLIPGUIDE_FIXTURES:-$PWD/../shared/fixtures}
[ -d "$fx" ] || { echo "fixtures not found at $fx (set CLIPGUIDE_FIXTURES)"; exit 1; }
seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
python3 "$here/make_seeds.py" "$name" "$seeds" "$fx"
inputs=("$seeds"/*)
if [ -d "$here/regressions/$name" ] && [ -n "$(ls -A "$here/regressions/$name")" ]; then inputs+=("$here/regressions/$name"/*); fi
CLIPGUIDE_FIXTURES=$fx "$bin" "${inputs[@]}"
echo "fuzz_replay_$name: ${#inputs[@]} inputs, no crash"
