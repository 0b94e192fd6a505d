#!/usr/bin/env python3
"""The library's layers, as docs/architecture.md draws them: each folder includes only its own headers and those of
the layers before it; the toy world and the programs sit on top, and nothing in the library includes them.

usage: layers_test.py   (run from the source tree's root)
"""
import os
import re
import sys

LAYERS = ["core", "io", "clip", "prompts", "guidance", "generators", "jobs"]
ABOVE = {"toyworld": LAYERS, "cli": LAYERS + ["toyworld", "cli"]}
INCLUDE = re.compile(r'^\s*#\s*include\s*[<"](?:clipguide/)?([a-z_]+)/[^">]+[">]', re.M)

failed = 0
checked = 0
for folder in LAYERS + list(ABOVE):
    allowed = set(LAYERS[: LAYERS.index(folder) + 1]) if folder in LAYERS else set(ABOVE[folder]) | {folder}
    for name in sorted(os.listdir(folder)):
        if not name.endswith((".h", ".cpp", ".c", ".inc")):
            continue
        path = os.path.join(folder, name)
        for used in INCLUDE.findall(open(path, encoding="utf-8").read()):
            if used not in LAYERS + list(ABOVE):
                continue  # a system or third-party header (torch/, nlohmann/, ...)
            checked += 1
            if used not in allowed:
                failed += 1
                print(f"FAIL: {path} includes {used}/, a layer above {folder}/")
print(f"layers: {checked} includes checked, {failed} across the layering")
sys.exit(1 if failed or not checked else 0)
