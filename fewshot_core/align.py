"""5-point similarity alignment to canonical square crops, and the exact way back.

Matrices are [B, 2, 3] and map full-image pixel coordinates to crop pixel
coordinates, as kornia's `warp_affine` expects; pixel centres sit at integer
coordinates (align_corners=True). Templates are given normalised to [0, 1] of
the crop's extent, so a template means the same face framing at any crop size.
Generic: any K-point template works (the embedder keeps its own).
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from kornia.geometry.transform import warp_affine

from .errors import InputShapeError

ARCFACE_112 = torch.tensor(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)
"""The ArcFace/InsightFace 5-point template in pixels of a 112x112 crop."""

SWAP_TEMPLATE = (ARCFACE_112 / 112.0 - 0.5) * 0.75 + torch.tensor([0.5, 0.46])
"""Crop template of the swap generator: ArcFace's layout shrunk to 75% about the centre and raised a
little, so the crop holds the whole head outline (forehead, jaw, some hair) the generator redraws."""

CROP_PADDING = "reflection"
"""Border mode when a crop reaches outside the photo. Reflection continues real texture and keeps the
image statistics the networks saw in training; zeros would add black bars and replicate would smear
edge pixels into streaks, both of which the generator would try to reproduce. Pasting back only uses
pixels that came from inside the photo, so the mirrored fill never reaches the output."""


class AlignedFaces(NamedTuple):
    """Crops [F, 3, S, S], matrices [F, 2, 3] (image px -> crop px) and the image each face came from [F]."""

    crops: torch.Tensor
    matrices: torch.Tensor
    image_index: torch.Tensor


def template_pixels(template: torch.Tensor, size: int) -> torch.Tensor:
    """A [0, 1]-normalised template [K, 2] in pixel coordinates of a size x size crop
    (0 is the crop's left edge, 1 its right edge; pixel centres at integers)."""
    return template * size - 0.5


def estimate_similarity(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) taking
    src [B, K, 2] onto dst [K, 2] or [B, K, 2] (Umeyama 1991). Returns M [B, 2, 3], dst ~ M @ [src; 1].

    Solved in float64 (the 2x2 SVD is cheap) and returned in src's dtype."""
    if src.ndim != 3 or src.shape[-1] != 2 or src.shape[1] < 2:
        raise InputShapeError(f"estimate_similarity needs src points [B, K, 2] with K >= 2; got {tuple(src.shape)}.")
    if dst.ndim == 2:
        dst = dst.unsqueeze(0)
    if dst.ndim != 3 or dst.shape[1:] != src.shape[1:] or dst.shape[0] not in (1, src.shape[0]):
        raise InputShapeError(
            f"estimate_similarity needs dst [K, 2] or [B, K, 2] matching src {tuple(src.shape)}; got {tuple(dst.shape)}."
        )
    s = src.to(torch.float64)
    d = dst.to(device=src.device, dtype=torch.float64).expand_as(s)
    mu_s, mu_d = s.mean(dim=1), d.mean(dim=1)
    sc, dc = s - mu_s[:, None], d - mu_d[:, None]
    var_s = (sc**2).sum(dim=(1, 2)) / s.shape[1]
    if bool((var_s < 1e-12).any()):
        raise InputShapeError("estimate_similarity got source points that all coincide; pass real landmarks.")
    cov = dc.transpose(1, 2) @ sc / s.shape[1]  # [B, 2, 2]
    u, sv, vh = torch.linalg.svd(cov)
    sign = torch.ones_like(sv)
    sign[:, 1] = torch.sign(torch.linalg.det(u) * torch.linalg.det(vh))  # forbid reflections
    rot = u @ torch.diag_embed(sign) @ vh
    scale = (sv * sign).sum(dim=1) / var_s
    lin = scale[:, None, None] * rot
    trans = mu_d - (lin @ mu_s[:, :, None]).squeeze(-1)
    return torch.cat((lin, trans[:, :, None]), dim=2).to(src.dtype)


def transform_points(points: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Apply affines M [B, 2, 3] to points [B, K, 2]."""
    return points @ M[:, :, :2].transpose(1, 2) + M[:, None, :, 2]


def invert_affine(M: torch.Tensor) -> torch.Tensor:
    """The exact inverse of affines [B, 2, 3] (crop px -> image px for an alignment matrix)."""
    if M.ndim != 3 or M.shape[1:] != (2, 3):
        raise InputShapeError(f"invert_affine needs matrices [B, 2, 3]; got {tuple(M.shape)}.")
    lin = M[:, :, :2]
    a, b, c, d = lin[:, 0, 0], lin[:, 0, 1], lin[:, 1, 0], lin[:, 1, 1]
    det = a * d - b * c
    inv = torch.stack((torch.stack((d, -b), dim=1), torch.stack((-c, a), dim=1)), dim=1) / det[:, None, None]
    trans = -(inv @ M[:, :, 2:])
    return torch.cat((inv, trans), dim=2)


def _check_warp(images: torch.Tensor, M: torch.Tensor, what: str) -> None:
    if images.ndim != 4 or not images.is_floating_point():
        raise InputShapeError(f"{what} needs float images [B, C, H, W]; got {tuple(images.shape)} {images.dtype}.")
    if M.ndim != 3 or M.shape[1:] != (2, 3) or M.shape[0] != images.shape[0]:
        raise InputShapeError(
            f"{what} needs one [2, 3] matrix per image: M {tuple(M.shape)} for {images.shape[0]} images."
        )


def _shrink_first(images: torch.Tensor, M: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Box-filter images by an integer factor and fold the shrink into M (pixel k of the small image
    is centred on pixel factor * k + (factor - 1) / 2 of the original)."""
    small = F.avg_pool2d(images, factor, ceil_mode=True, count_include_pad=False)
    offset = torch.full((2, 1), (factor - 1) / 2, dtype=M.dtype, device=M.device)
    return small, torch.cat((M[:, :, :2] * factor, M[:, :, 2:] + M[:, :, :2] @ offset), dim=2)


def warp_to_crop(
    images: torch.Tensor, M: torch.Tensor, size: int, padding_mode: str = CROP_PADDING, antialias: bool = True
) -> torch.Tensor:
    """Crops [B, C, size, size] of images [B, C, H, W] through M [B, 2, 3] (image px -> crop px), bilinear.

    antialias: a face shrunk by 2x or more (a big face in a large photo) is first box-filtered by the
    integer part of the shrink, so bilinear sampling never skips pixels and the crop does not alias."""
    _check_warp(images, M, "warp_to_crop")
    M = M.to(images)

    def warp(src: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return warp_affine(src, m, (size, size), mode="bilinear", padding_mode=padding_mode, align_corners=True)

    if not antialias or images.shape[0] == 0:
        return warp(images, M)
    scale = torch.linalg.det(M[:, :, :2].double()).abs().sqrt()  # crop px per image px
    factor = torch.floor(1.0 / scale.clamp(min=1e-6)).clamp(1, 64).long()
    if bool((factor == 1).all()):
        return warp(images, M)
    out = images.new_empty((images.shape[0], images.shape[1], size, size))
    for k in factor.unique().tolist():
        sel = torch.nonzero(factor == k).squeeze(1)
        src, m = (images[sel], M[sel]) if k == 1 else _shrink_first(images[sel], M[sel], k)
        out[sel] = warp(src, m)
    return out


def warp_from_crop(crops: torch.Tensor, M: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Crops [B, C, S, S] put back into image frames [B, C, H, W] by the inverse of M; zero where the
    crop does not reach (warp a ones-image the same way to get the coverage mask)."""
    _check_warp(crops, M, "warp_from_crop")
    return warp_affine(
        crops, invert_affine(M.to(crops)), (int(out_hw[0]), int(out_hw[1])),
        mode="bilinear", padding_mode="zeros", align_corners=True,
    )


def align_faces(
    images: torch.Tensor,
    landmarks_per_image: Sequence[torch.Tensor] | torch.Tensor,
    template: torch.Tensor,
    size: int,
    padding_mode: str = CROP_PADDING,
) -> AlignedFaces:
    """Align every face of every image to `template` ([K, 2], normalised) in size x size crops.

    landmarks_per_image: one [N_i, K, 2] tensor per image (N_i may be 0), or one [B, K, 2] tensor
    meaning one face per image. Faces come out image by image, in the given order."""
    if images.ndim != 4:
        raise InputShapeError(f"align_faces needs images [B, C, H, W]; got {tuple(images.shape)}.")
    if isinstance(landmarks_per_image, torch.Tensor) and landmarks_per_image.ndim == 3:
        landmarks_per_image = list(landmarks_per_image.unsqueeze(1))
    if len(landmarks_per_image) != images.shape[0]:
        raise InputShapeError(
            f"align_faces needs one landmark tensor per image: {len(landmarks_per_image)} for {images.shape[0]} images."
        )
    points = torch.cat([lm.reshape(-1, *template.shape).to(images.device, torch.float32) for lm in landmarks_per_image])
    counts = torch.tensor([lm.reshape(-1, *template.shape).shape[0] for lm in landmarks_per_image])
    image_index = torch.repeat_interleave(torch.arange(images.shape[0]), counts).to(images.device)
    if points.shape[0] == 0:
        empty = images.new_zeros((0, images.shape[1], size, size))
        return AlignedFaces(empty, images.new_zeros((0, 2, 3)), image_index)
    dst = template_pixels(template.to(images.device, torch.float32), size)
    matrices = estimate_similarity(points, dst).to(images.dtype)
    one_each = points.shape[0] == images.shape[0] and bool((counts == 1).all())
    sources = images if one_each else images[image_index]  # copy an image only when it holds several faces
    crops = warp_to_crop(sources, matrices, size, padding_mode)
    return AlignedFaces(crops, matrices, image_index)
