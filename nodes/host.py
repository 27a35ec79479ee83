"""Everything that touches ComfyUI's own modules: model folders, devices, progress and interrupts.

Kept in one place so the node definitions stay thin and the core never imports ComfyUI.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import torch

from fewshot_core.models import PARTS
from fewshot_core.paths import set_model_dir, weights_dir

log = logging.getLogger("fewshot_swap")

MODEL_FOLDER = "fewshot"
IDENTITY_FOLDER = "fewshot_identities"


def register_folders() -> None:
    """Register our model folders, appending so that extra_model_paths.yaml entries keep precedence."""
    import folder_paths

    folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER))
    folder_paths.add_model_folder_path(MODEL_FOLDER, str(weights_dir()))
    folder_paths.add_model_folder_path(
        IDENTITY_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER, "identities"))
    set_model_dir(primary_model_dir())


def primary_model_dir() -> Path:
    """Where the converted pre-trained parts are looked for: the first `fewshot` folder that has them."""
    import folder_paths

    paths = [Path(p) for p in folder_paths.get_folder_paths(MODEL_FOLDER)]
    for path in paths:
        if all((path / part.filename).is_file() for part in PARTS.values()):
            return path
    return paths[0]


def generator_files() -> list[str]:
    """Generator weight files in the `fewshot` folders (the converted parts and identities excluded)."""
    import folder_paths

    parts = {part.filename for part in PARTS.values()}
    names = [n for n in folder_paths.get_filename_list(MODEL_FOLDER)
             if n.endswith(".safetensors") and os.path.basename(n) not in parts and not n.startswith("identities")]
    return sorted(names)


def generator_path(name: str) -> Path | None:
    import folder_paths

    path = folder_paths.get_full_path(MODEL_FOLDER, name)
    return Path(path) if path else None


def identity_files() -> list[str]:
    import folder_paths

    return sorted(n for n in folder_paths.get_filename_list(IDENTITY_FOLDER) if n.endswith(".safetensors"))


def identity_dir() -> Path:
    import folder_paths

    return Path(folder_paths.get_folder_paths(IDENTITY_FOLDER)[0])


def identity_path(name: str) -> Path | None:
    import folder_paths

    path = folder_paths.get_full_path(IDENTITY_FOLDER, name)
    return Path(path) if path else None


def pick_device(choice: str) -> torch.device:
    """'auto' follows ComfyUI's model_management (respects --cpu); otherwise the named device."""
    if choice == "auto":
        import comfy.model_management as mm

        return mm.get_torch_device()
    return torch.device(choice)


def pick_dtype(choice: str, device: torch.device) -> torch.dtype:
    """'auto': fp16 on CUDA, fp32 elsewhere (half precision is slow or unsupported on CPU)."""
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if choice == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return table[choice]


def progress_reporter(total: int) -> Callable[[int, int], None]:
    import comfy.utils

    bar = comfy.utils.ProgressBar(total)
    return lambda done, all_: bar.update_absolute(done, all_)


def interrupt_check() -> None:
    import comfy.model_management as mm

    mm.throw_exception_if_processing_interrupted()
