"""Run by ComfyUI-Manager after install: fetch and convert the pre-trained parts into models/fewshot.

This is install time, not run time: the nodes themselves never download anything.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def comfy_models_dir() -> Path | None:
    """ComfyUI/models when the pack sits in ComfyUI/custom_nodes/<pack>."""
    candidate = HERE.parent.parent / "models"
    return candidate if candidate.is_dir() else None


def main() -> int:
    models = comfy_models_dir()
    cmd = [sys.executable, "-m", "fewshot_core.models", "fetch"]
    if models is not None:
        cmd += ["--dest", str(models / "fewshot")]
    return subprocess.call(cmd, cwd=HERE)


if __name__ == "__main__":
    sys.exit(main())
