"""Reading and writing images as core tensors, with errors that name the file."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import FewShotError


def load_image(path: str | Path) -> torch.Tensor:
    """An image file as [1, 3, H, W] float in [0, 1] (EXIF orientation applied, alpha dropped)."""
    path = Path(path)
    if not path.is_file():
        raise FewShotError(f"Image file {path} does not exist.")
    try:
        with Image.open(path) as image:
            rgb = ImageOps.exif_transpose(image).convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise FewShotError(f"Cannot read {path} as an image ({exc}). Use a JPEG, PNG or WebP file.") from exc
    array = np.asarray(rgb, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()


def save_image(image: torch.Tensor, path: str | Path) -> Path:
    """Write [1, 3, H, W] or [3, H, W] in [0, 1] to `path` (format from the suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 4:
        image = image[0]
    array = (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(array).save(path)
    return path


def fit_height(image: torch.Tensor, height: int) -> torch.Tensor:
    """Resize [1, 3, H, W] to the given height, keeping the aspect ratio."""
    width = max(1, round(image.shape[-1] * height / image.shape[-2]))
    return F.interpolate(image, size=(height, width), mode="bilinear", antialias=True, align_corners=False)


def make_row(images: Sequence[torch.Tensor], height: int = 384, gap: int = 8) -> torch.Tensor:
    """Images side by side at one height, on a white background: a before/after grid row."""
    resized = [fit_height(image, height) for image in images]
    width = sum(r.shape[-1] for r in resized) + gap * (len(resized) - 1)
    canvas = torch.ones(1, 3, height, width)
    x = 0
    for r in resized:
        canvas[..., x:x + r.shape[-1]] = r
        x += r.shape[-1] + gap
    return canvas


def stack_rows(rows: Sequence[torch.Tensor], gap: int = 8) -> torch.Tensor:
    """Rows of possibly different widths stacked vertically, left-aligned, white background."""
    width = max(r.shape[-1] for r in rows)
    height = sum(r.shape[-2] for r in rows) + gap * (len(rows) - 1)
    canvas = torch.ones(1, 3, height, width)
    y = 0
    for r in rows:
        canvas[..., y:y + r.shape[-2], : r.shape[-1]] = r
        y += r.shape[-2] + gap
    return canvas
