"""`torchvision.transforms` stand-in: the names ComfyUI 0.3.75 references.

`Compose` and `Normalize` are real (tiny) so ComfyUI code that builds a
transform pipeline at construction time still works; the rest raises.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from . import functional
from .functional import InterpolationMode


class Compose:
    """Apply callables in order."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]):
        self.transforms = list(transforms)

    def __call__(self, x: Any) -> Any:
        for t in self.transforms:
            x = t(x)
        return x


class Normalize:
    """(x - mean) / std over the channel dimension (dim -3), like torchvision."""

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float], inplace: bool = False):
        self.mean = mean
        self.std = std

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.as_tensor(self.mean, dtype=x.dtype, device=x.device)
        std = torch.as_tensor(self.std, dtype=x.dtype, device=x.device)
        if mean.ndim == 1:
            mean = mean[:, None, None]
        if std.ndim == 1:
            std = std[:, None, None]
        return (x - mean) / std


def __getattr__(name: str):
    raise AttributeError(
        f"torchvision.transforms.{name} is not available: the test host uses a torchvision stand-in"
    )


__all__ = ["Compose", "Normalize", "InterpolationMode", "functional"]
