#!/usr/bin/env bash
# The C++ sources as .clang-format lays them out (110 columns; Debian bookworm's clang-format 14, as scripts/setup
# installs it). Fix with: clang-format -i FILE...
set -euo pipefail
cd "$(dirname "$0")/.."
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files --cached --others --exclude-standard '*.cpp' '*.h' '*.c')
else
  mapfile -t files < <(find core io clip prompts guidance generators jobs toyworld cli examples tests bench tools \
                         \( -name '*.cpp' -o -name '*.h' -o -name '*.c' \) 2>/dev/null)
fi
existing=()
for f in "${files[@]}"; do [ -f "$f" ] && existing+=("$f"); done
clang-format --dry-run -Werror "${existing[@]}"
echo "format: ${#existing[@]} files as .clang-format lays them out"
