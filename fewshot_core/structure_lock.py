"""Structure lock: a small smooth warp that puts the generated face's parts where the source's are.

Why: the generator is told the source's structure map, but it renders the parts (nose tip, brows, jaw line)
a pixel or two off, and the landmark-based expression error notices. The face parser sees the generated
crop as well as the source crop, so the mismatch is measurable at run time: a coarse displacement field is
fitted (a few dozen gradient steps on a 64 px copy, no network in the loop) so that the parser's class maps of
the output, warped, match the source's; the same warp then moves the generated pixels and mask. `strength`
scales the fitted displacement (0 leaves the output as the generator made it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import InputShapeError


# Named warp resolutions for `fit_structure_warp` (the user-facing `lock_detail` setting). "coarse": an 8x8 field
# fitted on 64 px maps, which moves whole parts; "fine": 16x16 on the full 128 px maps, which also moves a part's
# own outline (nostrils against the nose tip, a brow's ends), so the output keeps more of the source's geometry
# and so less of the target's face shape. 16 rather than 24 knots: on the validation pairs 24 cost more identity
# for the same expression (figures: docs/EVALUATION.md, "Lock detail and source detail").
LOCK_DETAIL: dict[str, dict[str, float]] = {
    "coarse": {"grid": 8, "work_px": 64, "blur_px": 1.5},
    "fine": {"grid": 16, "work_px": 128, "blur_px": 1.5},
}


def lock_detail_options(detail: str) -> dict[str, float]:
    """`fit_structure_warp` keywords of a `LOCK_DETAIL` name; a clear error for an unknown one."""
    if detail not in LOCK_DETAIL:
        raise InputShapeError(f"lock_detail must be one of {sorted(LOCK_DETAIL)}, got {detail!r}.")
    return dict(LOCK_DETAIL[detail])


def _check_maps(moving: Tensor, fixed: Tensor) -> None:
    if moving.ndim != 4 or moving.shape != fixed.shape or moving.shape[-1] != moving.shape[-2]:
        raise InputShapeError(
            f"structure lock needs two class maps of the same shape [B, C, R, R], got {list(moving.shape)} "
            f"and {list(fixed.shape)}."
        )


def identity_grid(batch: int, side: int, device: torch.device) -> Tensor:
    """grid_sample coordinates [B, R, R, 2] (x, y in -1..1, pixel centres) that sample an image unchanged."""
    ticks = (torch.arange(side, device=device, dtype=torch.float32) + 0.5) * (2.0 / side) - 1.0
    ys, xs = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack([xs, ys], dim=-1)[None].expand(batch, -1, -1, -1)


def _dense(coarse: Tensor, side: int, max_shift: float) -> Tensor:
    """[B, 2, g, g] free parameters -> displacement [B, R, R, 2] in grid units, each bounded by max_shift."""
    shift = max_shift * torch.tanh(coarse)
    dense = F.interpolate(shift, size=(side, side), mode="bicubic", align_corners=True)
    return dense.clamp(-max_shift, max_shift).permute(0, 2, 3, 1)  # bicubic may overshoot its knots


def fit_structure_warp(moving: Tensor, fixed: Tensor, *, grid: int = 8, steps: int = 40, work_px: int = 64,
                       blur_px: float = 1.5, max_shift_px: float = 4.0, smoothness: float = 0.5,
                       lr: float = 0.15, balance: float = 0.75) -> Tensor:
    """Displacement [B, R, R, 2] (grid_sample units) such that `moving` sampled at identity + it ~ `fixed`.

    moving, fixed: soft class maps [B, C, R, R] (they sum to 1 over C). A class's error is weighted by its
    area ** -balance: at 1 every class counts the same whatever its size (the brows and irises pull as
    hard as the skin), at 0 every pixel counts the same; 0.75 kept expression as well as 1 with less identity
    cost on the validation pairs (`tools/diagnostics/structure_lock_sweep.py`). `max_shift_px` (at R px)
    bounds the move; `smoothness` penalises the coarse field's bending.
    """
    _check_maps(moving, fixed)
    b, c, side, _ = moving.shape
    device = moving.device
    work = min(work_px, side)

    def prepare(maps: Tensor) -> Tensor:
        maps = maps.float()
        if work != side:
            maps = F.interpolate(maps, size=(work, work), mode="bilinear", align_corners=False, antialias=True)
        if blur_px > 0:  # a wider basin: a part a few pixels off still overlaps its blurred twin
            radius = int(blur_px * 3 + 0.5)
            taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, device=device) / blur_px) ** 2)
            taps = (taps / taps.sum()).float()
            maps = F.conv2d(F.pad(maps, (radius, radius, 0, 0), mode="replicate"),
                            taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
            maps = F.conv2d(F.pad(maps, (0, 0, radius, radius), mode="replicate"),
                            taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
        return maps

    # Hosts may call this under no_grad or inference_mode (ComfyUI does); the fit needs autograd on fresh tensors.
    with torch.inference_mode(False), torch.enable_grad():
        src = prepare(moving.clone()).detach()
        dst = prepare(fixed.clone()).detach()
        area = dst.mean(dim=(2, 3), keepdim=True) + src.mean(dim=(2, 3), keepdim=True)
        weight = (area + 1e-3) ** -balance  # per class and face
        base = identity_grid(b, work, device)
        max_shift = max_shift_px * 2.0 / side
        coarse = torch.zeros(b, 2, grid, grid, device=device, requires_grad=True)
        # Adam written out: torch.optim's first step costs about a second of one-off imports on CPU.
        first, second = torch.zeros_like(coarse), torch.zeros_like(coarse)
        for step in range(1, steps + 1):
            warped = F.grid_sample(src, base + _dense(coarse, work, max_shift), mode="bilinear",
                                   padding_mode="border", align_corners=False)
            fit = (((warped - dst) ** 2).mean(dim=(2, 3), keepdim=True) * weight).sum(dim=1).mean()
            shift = torch.tanh(coarse)  # in units of the bound
            bend = (shift[..., 1:, :] - shift[..., :-1, :]).pow(2).mean() + \
                   (shift[..., :, 1:] - shift[..., :, :-1]).pow(2).mean()
            loss = fit + smoothness * bend
            (grad,) = torch.autograd.grad(loss, coarse)
            with torch.no_grad():
                first.mul_(0.9).add_(grad, alpha=0.1)
                second.mul_(0.999).addcmul_(grad, grad, value=0.001)
                coarse -= lr * (first / (1 - 0.9 ** step)) / ((second / (1 - 0.999 ** step)).sqrt() + 1e-8)
    with torch.no_grad():
        return _dense(coarse.detach(), side, max_shift)


def apply_warp(images: Tensor, displacement: Tensor, strength: float = 1.0) -> Tensor:
    """Resample images [B, K, R, R] at identity + strength * displacement (border pixels repeat)."""
    if images.ndim != 4 or displacement.shape != (images.shape[0], images.shape[2], images.shape[3], 2):
        raise InputShapeError(
            f"apply_warp needs images [B, K, R, R] and a displacement [B, R, R, 2]; got {list(images.shape)} "
            f"and {list(displacement.shape)}."
        )
    if strength == 0:
        return images
    grid = identity_grid(images.shape[0], images.shape[-1], images.device) + strength * displacement.to(images.device)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.to(images.dtype)
