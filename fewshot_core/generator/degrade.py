"""Source degradation: what the generator sees of the face it replaces.

The source crop is fed in at very low resolution so it can carry pose,
lighting and skin tone but not the source's identity; identity has to come
from the embedding. Inference uses one fixed degradation; training draws from
a wider family around it (the inference setting is one of its outcomes) so the
network does not over-fit a single blur.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d
from torch import Tensor

from ..errors import InputShapeError
from .config import GeneratorConfig


def _check_crops(crops: Tensor) -> None:
    if crops.ndim != 4 or crops.shape[1] != 3 or not crops.is_floating_point():
        raise InputShapeError(
            f"crops must be a float tensor of shape [B, 3, R, R] in [0, 1], got "
            f"{list(crops.shape)} {crops.dtype}."
        )


def _down_up(x: Tensor, px: int) -> Tensor:
    """Antialiased downsample to px x px, bilinear back to the input size."""
    size = (x.shape[-2], x.shape[-1])
    small = F.interpolate(x, size=(px, px), mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(small, size=size, mode="bilinear", align_corners=False)


def degrade_for_inference(crops: Tensor, cfg: GeneratorConfig | int) -> Tensor:
    """Deterministic degradation: down to `cfg.infer_degrade_px` (antialiased) and back up."""
    _check_crops(crops)
    px = cfg if isinstance(cfg, int) else cfg.infer_degrade_px
    out = _down_up(crops.float(), px).clamp(0.0, 1.0)
    return out.to(crops.dtype)


def random_degrade(crops: Tensor, generator: torch.Generator, *, min_px: int = 4, max_px: int = 16,
                   p_noise: float = 0.15, p_blur: float = 0.5, max_blur_lowres_px: float = 1.0) -> Tensor:
    """Training degradation, drawn per sample from `generator` (reproducible for a given seed).

    With probability 1 - p_noise: optional Gaussian blur (probability p_blur, sigma up to
    `max_blur_lowres_px` pixels of the target low resolution), then down to a size drawn
    uniformly from [min_px, max_px] and bilinear back up. Otherwise noise-masking:
    uniform noise blended over a 4 px version of the crop (weight 0.5..1), so the
    network learns to build the face from structure and identity alone while the
    coarse colour still hints at the lighting.
    """
    _check_crops(crops)
    if not 2 <= min_px <= max_px:
        raise InputShapeError(f"random_degrade needs 2 <= min_px <= max_px, got {min_px}, {max_px}.")
    b, _, h, w = crops.shape
    gdev = generator.device
    x = crops.float()
    u_noise = torch.rand(b, generator=generator, device=gdev).to(x.device)
    px = torch.randint(min_px, max_px + 1, (b,), generator=generator, device=gdev).to(x.device)
    use_blur = (torch.rand(b, generator=generator, device=gdev) < p_blur).to(x.device)
    sigma_lowres = torch.rand(b, generator=generator, device=gdev).to(x.device) * max_blur_lowres_px
    alpha = (0.5 + 0.5 * torch.rand(b, generator=generator, device=gdev)).to(x.device)
    noise = torch.rand(x.shape, generator=generator, device=gdev).to(x.device)

    # Blur in full-res pixels: sigma of up to max_blur_lowres_px low-res pixels.
    sigma = torch.where(use_blur, sigma_lowres * h / px.float(), torch.zeros_like(sigma_lowres))
    if bool((sigma > 0.3).any()):
        half = int(math.ceil(3.0 * float(sigma.max())))
        k = min(2 * half + 1, 2 * ((min(h, w) - 1) // 2) + 1)
        s = sigma.clamp_min(0.3)[:, None].expand(b, 2).contiguous()
        blurred = gaussian_blur2d(x, (k, k), s, border_type="reflect")
        x = torch.where((sigma > 0.3)[:, None, None, None], blurred, x)

    out = torch.empty_like(x)
    for size in torch.unique(px).tolist():
        idx = (px == size).nonzero(as_tuple=True)[0]
        out[idx] = _down_up(x[idx], int(size))

    coarse = _down_up(crops.float(), 4)
    masked = (1 - alpha[:, None, None, None]) * coarse + alpha[:, None, None, None] * noise
    out = torch.where((u_noise < p_noise)[:, None, None, None], masked, out)
    return out.clamp(0.0, 1.0).to(crops.dtype)
