"""The generator weights shipped in `weights/` and how to find them."""
from __future__ import annotations

from pathlib import Path

from .paths import weights_dir

DEFAULT_GENERATOR = "fewshot_generator_128.safetensors"


def default_generator_path() -> Path:
    """The shipped generator (it may not exist yet: callers say so clearly)."""
    return weights_dir() / DEFAULT_GENERATOR
