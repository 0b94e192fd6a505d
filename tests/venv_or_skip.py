"""Shared by the Python tests that need the project's .venv/: re-runs the calling test under .venv/bin/python, or,
where there is no venv, says so and exits 77 (ctest: skipped)."""
import os
import sys

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rerun_in_venv(needs):
    """needs: what the test uses from the venv, for the SKIP line."""
    venv = os.path.join(root, ".venv")
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        return
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        print(f"SKIP: no .venv/ with {needs} (make it with scripts/venv)")
        sys.exit(77)
    os.execv(python, [python] + sys.argv)
