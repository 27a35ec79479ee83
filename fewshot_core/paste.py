"""Putting a generated face back into its frame: colour match, feathered mask, inverse warp, composite.

Guarantee shared by `paste_back` and `composite`: every pixel whose final mask
is 0 is returned bit-identical to the input frame. Feathering erodes before it
blurs, so the soft edge lies inside the given mask instead of spilling past it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from kornia.color import lab_to_rgb, rgb_to_lab
from kornia.filters import gaussian_blur2d
from kornia.geometry.transform import warp_affine
from torch import Tensor

from .errors import InputShapeError

# Colour transfer gains are clamped to this range so a flat (low-variance) region
# cannot blow the generated face's contrast up.
_MAX_STD_GAIN = 2.0


# ----------------------------------------------------------------------------- colour
def _check_image(t: Tensor, name: str, channels: int = 3) -> None:
    if not isinstance(t, Tensor) or t.ndim != 4 or t.shape[1] != channels or not t.is_floating_point():
        got = list(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise InputShapeError(f"{name} must be a float tensor of shape [B, {channels}, H, W], got {got}.")


def _lab_transfer(generated: Tensor, source: Tensor, mask: Tensor, mean_shift: Tensor | None = None,
                  std_ratio: Tensor | None = None) -> Tensor:
    """Per-channel mean/std transfer in CIE Lab with statistics weighted by `mask` (float32).

    `mean_shift` / `std_ratio` [B, 3] move the source's statistics before they are matched (`skin_tone.py`)."""
    g_lab = rgb_to_lab(generated.float().clamp(0, 1))
    s_lab = rgb_to_lab(source.float().clamp(0, 1))
    w = mask.float().clamp(0, 1)
    total = w.sum(dim=(2, 3), keepdim=True)
    wn = w / total.clamp_min(1e-6)

    def stats(x: Tensor) -> tuple[Tensor, Tensor]:
        mean = (x * wn).sum(dim=(2, 3), keepdim=True)
        var = (((x - mean) ** 2) * wn).sum(dim=(2, 3), keepdim=True)
        return mean, var.clamp_min(0).sqrt()

    g_mean, g_std = stats(g_lab)
    s_mean, s_std = stats(s_lab)
    if mean_shift is not None:
        s_mean = s_mean + mean_shift.float()[..., None, None]
    if std_ratio is not None:
        s_std = s_std * std_ratio.float()[..., None, None]
    gain = (s_std / g_std.clamp_min(1e-3)).clamp(1 / _MAX_STD_GAIN, _MAX_STD_GAIN)
    out = lab_to_rgb((g_lab - g_mean) * gain + s_mean, clip=True)
    # Under one pixel of mask there are no statistics to match: leave that sample alone.
    return torch.where(total >= 1.0, out, generated.float())


def color_match(generated: Tensor, source: Tensor, mask: Tensor, mean_shift: Tensor | None = None,
                std_ratio: Tensor | None = None) -> Tensor:
    """Match the generated face's per-channel mean/std to the source's inside `mask`.

    generated, source: [B,3,R,R] in [0,1]; mask [B,1,R,R] weights in [0,1].
    Works in CIE Lab so lightness and the two colour axes move independently;
    the whole image is shifted (the mask only chooses where the statistics
    come from). `mean_shift` (added) and `std_ratio` (multiplied), [B, 3] in Lab, move the source's
    statistics first: the skin-tone shift toward the target (`skin_tone.skin_tone_shift`).
    Returns [B,3,R,R] in [0,1] in `generated`'s dtype.
    """
    _check_image(generated, "generated")
    _check_image(source, "source")
    _check_image(mask, "mask", channels=1)
    if source.shape != generated.shape or mask.shape[-2:] != generated.shape[-2:] or mask.shape[0] != generated.shape[0]:
        raise InputShapeError(
            f"color_match needs generated, source [B,3,R,R] and mask [B,1,R,R] of the same B and size, got "
            f"{list(generated.shape)}, {list(source.shape)}, {list(mask.shape)}."
        )
    for name, value in (("mean_shift", mean_shift), ("std_ratio", std_ratio)):
        if value is not None and tuple(value.shape) != (generated.shape[0], 3):
            raise InputShapeError(f"color_match's {name} must be [B, 3] = [{generated.shape[0]}, 3], "
                                  f"got {list(value.shape)}.")
    return _lab_transfer(generated, source, mask, mean_shift, std_ratio).to(generated.dtype)


# ----------------------------------------------------------------------------- mask
def feather_mask(mask: Tensor, radius_px: float) -> Tensor:
    """Soften a mask [B,1,H,W] over `radius_px` pixels, inside its own support.

    Erodes by ceil(radius) (min filter) and then blurs with a Gaussian of
    sigma = radius / 3 truncated at ceil(radius), so the feathered mask is 0
    wherever the input was 0 and the transition is about `radius_px` wide.
    Frame borders do not erode (a face cut by the border stays opaque there).
    """
    _check_image(mask, "mask", channels=1)
    if radius_px <= 0:
        return mask
    half = int(math.ceil(radius_px))
    k = 2 * half + 1
    m = mask.float()
    eroded = -F.max_pool2d(-m, kernel_size=k, stride=1, padding=half)
    sigma = max(radius_px / 3.0, 1e-3)
    blurred = gaussian_blur2d(eroded, (k, k), (sigma, sigma), border_type="replicate")
    # Exact zeros outside the input's support (float blur can leave 1e-8 crumbs).
    return torch.where(m > 0, blurred.clamp(0, 1), torch.zeros_like(blurred)).to(mask.dtype)


# ----------------------------------------------------------------------------- warp
def invert_affine(M: Tensor) -> Tensor:
    """Exact inverse of affines [B,2,3] (computed in float64): crop px -> image px."""
    m = M.double()
    a, t = m[:, :, :2], m[:, :, 2:]
    a_inv = torch.linalg.inv(a)
    return torch.cat([a_inv, -a_inv @ t], dim=2).to(M.dtype)


def _crop_bbox(m_inv: Tensor, crop_hw: tuple[int, int], frame_hw: tuple[int, int],
               margin: int) -> tuple[int, int, int, int] | None:
    """Union over the batch of the frame rectangle the crops land in (+margin), clipped; None if empty."""
    h, w = crop_hw
    corners = torch.tensor([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], dtype=torch.float64,
                           device=m_inv.device)
    pts = corners @ m_inv[:, :, :2].double().transpose(1, 2) + m_inv[:, None, :, 2].double()
    x0 = int(math.floor(float(pts[..., 0].min()))) - margin
    y0 = int(math.floor(float(pts[..., 1].min()))) - margin
    x1 = int(math.ceil(float(pts[..., 0].max()))) + margin
    y1 = int(math.ceil(float(pts[..., 1].max()))) + margin
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, frame_hw[1] - 1), min(y1, frame_hw[0] - 1)
    if x1 < x0 or y1 < y0:
        return None
    return x0, y0, x1, y1


def _blend(frame: Tensor, content: Tensor, mask: Tensor) -> Tensor:
    """frame*(1-m) + content*m, but exactly `frame` where m == 0."""
    m = mask.to(torch.float32)
    mixed = frame.float() * (1 - m) + content.float() * m
    return torch.where(m > 0, mixed.to(frame.dtype), frame)


def paste_back(frames: Tensor, crops: Tensor, crop_masks: Tensor, M: Tensor,
               feather_px: float) -> tuple[Tensor, Tensor]:
    """Warp crops and their masks back into the frames and composite them.

    frames [B,3,H,W]; crops [B,3,R,R]; crop_masks [B,1,R,R] in [0,1]; M [B,2,3]
    the image->crop affines the crops were cut with (kornia `warp_affine`
    convention, align_corners=True). Only the frame window the crops cover is
    warped, so the cost does not grow with the frame size. Returns the new
    frames and the full-frame mask [B,1,H,W] of what was replaced (after
    feathering); where that mask is 0 the frames are bit-identical to the input.
    """
    _check_image(frames, "frames")
    _check_image(crops, "crops")
    _check_image(crop_masks, "crop_masks", channels=1)
    b = frames.shape[0]
    if crops.shape[0] != b or crop_masks.shape[0] != b or M.shape != (b, 2, 3):
        raise InputShapeError(
            f"paste_back needs one crop, mask and affine per frame: frames {list(frames.shape)}, crops "
            f"{list(crops.shape)}, crop_masks {list(crop_masks.shape)}, M {list(M.shape)} (expected [{b}, 2, 3])."
        )
    if crop_masks.shape[-2:] != crops.shape[-2:]:
        raise InputShapeError(
            f"crop_masks {list(crop_masks.shape)} must have the crops' size {list(crops.shape[-2:])}."
        )
    h, w = frames.shape[-2:]
    full_mask = torch.zeros(b, 1, h, w, dtype=frames.dtype, device=frames.device)
    m_inv = invert_affine(M.to(frames.device, torch.float64))
    # Margin: the bilinear fringe (one crop px, in frame px) plus the feather, so the window's
    # edge only ever cuts through pixels where the mask is 0.
    frame_px_per_crop_px = float(torch.linalg.det(m_inv[:, :, :2]).abs().sqrt().max())
    margin = int(math.ceil(max(feather_px, 0) + frame_px_per_crop_px)) + 2
    box = _crop_bbox(m_inv, (crops.shape[-2], crops.shape[-1]), (h, w), margin)
    if box is None:
        return frames.clone(), full_mask
    x0, y0, x1, y1 = box
    shift = torch.tensor([[1, 0, -x0], [0, 1, -y0]], dtype=torch.float64, device=frames.device)
    to_window = torch.cat([shift[None, :, :2].expand(b, 2, 2) @ m_inv[:, :, :2],
                           shift[None, :, :2].expand(b, 2, 2) @ m_inv[:, :, 2:] + shift[None, :, 2:]], dim=2)
    size = (y1 - y0 + 1, x1 - x0 + 1)
    mat = to_window.float()
    crops32, masks32 = crops.float(), crop_masks.float().clamp(0, 1)
    stacked = torch.cat([crops32, masks32, torch.ones_like(masks32)], dim=1)
    warped = warp_affine(stacked, mat, size, mode="bilinear", padding_mode="zeros", align_corners=True)
    rgb, mask, cover = warped[:, :3], warped[:, 3:4], warped[:, 4:5]
    # Undo the darkening bilinear sampling brings at the crop's edge (it mixes in zeros).
    rgb = torch.where(cover > 1e-4, rgb / cover.clamp_min(1e-4), rgb).clamp(0, 1)
    mask = feather_mask(mask.clamp(0, 1), feather_px) if feather_px > 0 else mask.clamp(0, 1)

    out = frames.clone()
    window = frames[:, :, y0:y1 + 1, x0:x1 + 1]
    out[:, :, y0:y1 + 1, x0:x1 + 1] = _blend(window, rgb, mask)
    full_mask[:, :, y0:y1 + 1, x0:x1 + 1] = mask.to(frames.dtype)
    return out, full_mask


def photo_detail(frames: Tensor, crops: Tensor, crop_masks: Tensor, M: Tensor, feather_px: float) -> Tensor:
    """The frames' fine detail [B,3,H,W] that their crops cannot hold, inside the pasted mask.

    Why: the generator draws at the crop's resolution, so a face larger than that in the photo comes back
    softer than the photo around it (and its edges, brows and lids, blur). Pasting the unchanged crops
    back through the same warp and mask gives exactly what the crop keeps of the photo; the difference
    is the detail it lost (grain, sharp edges), zero where the mask is 0 and for faces smaller than the crop.
    """
    smooth, _ = paste_back(frames, crops, crop_masks, M, feather_px)
    return frames - smooth


# ----------------------------------------------------------------------------- composite
def _to_batch(t: Tensor, b: int, name: str) -> Tensor:
    if t.shape[0] == b:
        return t
    if t.shape[0] == 1:
        return t.expand(b, *t.shape[1:])
    raise InputShapeError(f"{name} has batch size {t.shape[0]}; expected 1 or {b} to match the original images.")


def composite(original: Tensor, processed: Tensor, mask: Tensor, feather_px: float,
              color_match: bool) -> tuple[Tensor, Tensor]:
    """Blend `processed` into `original` through a feathered `mask` (the FaceMaskComposite node).

    original [B,3,H,W]; processed [B or 1,3,h,w] is resized to H x W with
    bicubic (antialiased when shrinking, clamped to [0,1]) when its size differs; mask
    [B or 1,1,h',w'] or [B or 1,h',w'] is resized bilinearly. With
    `color_match`, processed is first matched to original inside the mask.
    Returns (images [B,3,H,W], the feathered mask [B,1,H,W] that was used).
    """
    _check_image(original, "original")
    _check_image(processed, "processed")
    if mask.ndim == 3:
        mask = mask[:, None]
    _check_image(mask, "mask", channels=1)
    b, _, h, w = original.shape
    processed = _to_batch(processed, b, "processed").float()
    mask = _to_batch(mask, b, "mask").float()
    if processed.shape[-2:] != (h, w):
        shrink = processed.shape[-2] > h or processed.shape[-1] > w
        processed = F.interpolate(processed, size=(h, w), mode="bicubic", align_corners=False,
                                  antialias=shrink).clamp(0, 1)
    if mask.shape[-2:] != (h, w):
        shrink = mask.shape[-2] > h or mask.shape[-1] > w
        mask = F.interpolate(mask, size=(h, w), mode="bilinear", align_corners=False, antialias=shrink)
    mask = mask.clamp(0, 1)
    if color_match:
        processed = _lab_transfer(processed, original, mask)
    mask = feather_mask(mask, feather_px)
    return _blend(original, processed, mask), mask.to(original.dtype)
