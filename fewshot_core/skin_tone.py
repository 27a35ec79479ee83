"""Skin tone: the colour statistics of a face's skin, and how far the swap moves toward the target's.

Why: the colour match (`paste.color_match`) gives the generated face the source's colour statistics, so the
lighting and white balance fit the photo, but it also keeps the source person's skin tone, which is part of
who someone looks like. The target photos' skin statistics, measured on the parser's skin class of their aligned
crops, let the swap shift the match part or all of the way toward the target's skin.

Statistics are CIE Lab per-channel means and standard deviations, measured on the same class (skin) of both
faces, so the shift compares like with like; the colour match then applies it on top of its own statistics.
"""
from __future__ import annotations

import torch
from kornia.color import rgb_to_lab
from torch import Tensor

from .errors import InputShapeError
from .structure import STRUCTURE_CHANNELS

SKIN_CHANNEL = STRUCTURE_CHANNELS.index("skin")
# Below this much skin (in crop pixels) a face has no usable statistics (hidden, or a failed parse).
MIN_SKIN_PIXELS = 64.0
# Below this mean chroma (Lab a-b distance from grey) the photo is black and white: it says nothing about skin
# tone, and a black-and-white source must not be coloured in. Real skin sits at about 15-30.
MIN_SKIN_CHROMA = 3.0
# The skin-tone shift moves these Lab channels. "colour": a and b only, the lightness stays the source's, since
# the photos' lightness is as much their lighting as the skin (a dark photo would darken the swap).
# "colour+lightness": all three, for a target whose skin is much lighter or darker than the source's.
SHIFT_CHANNELS = {"colour": (1, 2), "colour+lightness": (0, 1, 2)}


def skin_statistics(crops: Tensor, structure: Tensor) -> Tensor:
    """Lab mean and std of the skin of each aligned crop: [B, 2, 3] (row 0 mean, row 1 std).

    NaN for a face without enough skin, and for a black-and-white photo (no skin tone to take or to change).

    crops [B, 3, R, R] in [0, 1]; structure [B, N, R, R], the structure map of the same crops."""
    if crops.ndim != 4 or crops.shape[1] != 3 or structure.ndim != 4 or structure.shape[0] != crops.shape[0] \
            or structure.shape[-2:] != crops.shape[-2:] or structure.shape[1] <= SKIN_CHANNEL:
        raise InputShapeError(f"skin_statistics needs crops [B,3,R,R] and their structure map [B,N,R,R], got "
                              f"{list(crops.shape)} and {list(structure.shape)}.")
    lab = rgb_to_lab(crops.float().clamp(0, 1))
    weight = structure[:, SKIN_CHANNEL:SKIN_CHANNEL + 1].float().clamp(0, 1)
    total = weight.sum(dim=(2, 3))  # [B, 1]
    norm = weight / total[..., None, None].clamp_min(1e-6)
    mean = (lab * norm).sum(dim=(2, 3))
    var = (((lab - mean[..., None, None]) ** 2) * norm).sum(dim=(2, 3))
    stats = torch.stack([mean, var.clamp_min(0).sqrt()], dim=1)
    chroma = (lab[:, 1:].pow(2).sum(dim=1, keepdim=True).sqrt() * norm).sum(dim=(2, 3))  # [B, 1]
    usable = (total >= MIN_SKIN_PIXELS) & (chroma >= MIN_SKIN_CHROMA)
    return torch.where(usable[:, :, None], stats, torch.full_like(stats, float("nan")))


def mean_skin_statistics(per_photo: Tensor) -> Tensor | None:
    """One person's skin statistics [2, 3] from per-photo ones [K, 2, 3]; None when no photo had skin."""
    valid = ~torch.isnan(per_photo).any(dim=(1, 2))
    if not bool(valid.any()):
        return None
    return per_photo[valid].mean(dim=0)


def check_skin_tone(amount: float, channels: str) -> None:
    """A clear error for a `target_skin_tone` outside 0..1 or an unknown `skin_tone_channels` name."""
    if not 0.0 <= amount <= 1.0:
        raise InputShapeError(f"target_skin_tone must be between 0 and 1 (0 the source's skin tone, 1 the "
                              f"target's), got {amount}.")
    if channels not in SHIFT_CHANNELS:
        raise InputShapeError(f"skin_tone_channels must be one of {sorted(SHIFT_CHANNELS)}, got {channels!r}.")


def skin_tone_shift(source: Tensor, target: Tensor, amount: float,
                    channels: str = "colour") -> tuple[Tensor, Tensor]:
    """The colour match's change of mean (added) and std (multiplied), [B, 3] each, toward `target`'s skin.

    source [B, 2, 3] (NaN rows: no skin, no shift), target [2, 3]; amount 0 keeps the source's tone, 1 takes
    the target's. The std ratio is interpolated geometrically so amount 0 is exactly 1."""
    check_skin_tone(amount, channels)
    target = target.to(source)[None]
    mean_shift = amount * (target[:, 0] - source[:, 0])
    std_ratio = (target[:, 1].clamp_min(1e-3) / source[:, 1].clamp_min(1e-3)) ** amount
    keep = torch.zeros(3, dtype=torch.bool, device=source.device)
    keep[list(SHIFT_CHANNELS[channels])] = True
    valid = ~torch.isnan(source).any(dim=(1, 2))
    use = keep[None] & valid[:, None]
    return torch.where(use, mean_shift, torch.zeros_like(mean_shift)), \
        torch.where(use, std_ratio, torch.ones_like(std_ratio))
