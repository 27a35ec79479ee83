"""`torchvision.transforms.functional` stand-in: only the names ComfyUI 0.3.75 and spandrel import."""
from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

import torch


class InterpolationMode(Enum):
    """Same member names and values as torchvision's enum."""

    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


def normalize(tensor: torch.Tensor, mean: Sequence[float], std: Sequence[float], inplace: bool = False) -> torch.Tensor:
    """(x - mean) / std per channel of a [..., C, H, W] tensor (spandrel imports this name)."""
    m = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).reshape(-1, 1, 1)
    s = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).reshape(-1, 1, 1)
    return (tensor - m) / s


def _unavailable(name: str):
    def fn(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"torchvision.transforms.functional.{name}: the test host uses a torchvision stand-in")

    fn.__name__ = name
    return fn


# Imported at module level by ComfyUI (cosmos) and spandrel (LaMa), used only by those models.
resize = _unavailable("resize")
rotate = _unavailable("rotate")


def __getattr__(name: str):
    raise AttributeError(
        f"torchvision.transforms.functional.{name} is not available: the test host uses a torchvision stand-in"
    )
