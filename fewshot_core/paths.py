"""Where model files live.

Inside ComfyUI the node pack calls `set_model_dir` with the `fewshot` folder
from `folder_paths` (which `extra_model_paths.yaml` may redirect). Outside it,
`FEWSHOT_MODEL_DIR` wins, else a per-user cache folder. Our own trained
weights ship in the repository's `weights/` folder.
"""
from __future__ import annotations

import os
from pathlib import Path

_model_dir_override: Path | None = None

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_WEIGHTS_DIR = PACKAGE_ROOT.parent / "weights"


def set_model_dir(path: str | os.PathLike[str] | None) -> None:
    """Point every model look-up at `path` (ComfyUI's model folder for the pack)."""
    global _model_dir_override
    _model_dir_override = Path(path) if path is not None else None


def cache_root() -> Path:
    """The per-user cache folder for downloads and derived data (never inside git)."""
    env = os.environ.get("FEWSHOT_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "fewshot-swap"


def model_dir() -> Path:
    """The folder holding converted pre-trained parts (detector, embedder, ...)."""
    if _model_dir_override is not None:
        return _model_dir_override
    env = os.environ.get("FEWSHOT_MODEL_DIR")
    if env:
        return Path(env)
    return cache_root() / "models"


def weights_dir() -> Path:
    """The folder holding our own trained weights shipped with the pack."""
    return REPO_WEIGHTS_DIR
