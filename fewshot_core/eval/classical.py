"""The classical baseline swap: landmark warp, colour transfer, Poisson blend.

Why: the learned swapper must beat what needs no learning at all. This is the
textbook pipeline: a Delaunay triangulation of the source's 68 landmarks, a
piecewise-affine warp of the target's face onto the source's geometry,
Reinhard colour transfer in Lab so the skin matches the source's lighting,
and OpenCV's seamless (Poisson) clone inside the landmarks' convex hull. It
keeps the source's pose and expression by construction and carries the
target's identity only as far as texture inside the hull goes.

OpenCV and scipy are evaluation extras, imported lazily.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputShapeError
from .evaluator import require


def _check(image: np.ndarray, lm: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputShapeError(f"{name} must be an RGB uint8 image [H, W, 3]; got "
                              f"{getattr(image, 'shape', None)} {getattr(image, 'dtype', None)}.")
    pts = np.asarray(lm, dtype=np.float64)
    if pts.shape != (68, 2):
        raise InputShapeError(f"{name}'s landmarks must be [68, 2] pixel (x, y); got {pts.shape}.")
    return np.ascontiguousarray(image), pts


def triangulate(points: np.ndarray) -> np.ndarray:
    """[T, 3] vertex indices of the Delaunay triangulation of [N, 2] points."""
    spatial = require("scipy.spatial")
    return np.asarray(spatial.Delaunay(points).simplices, dtype=np.int64)


def warp_piecewise_affine(image: np.ndarray, from_pts: np.ndarray, to_pts: np.ndarray,
                          triangles: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """Warp `image` so that each triangle of `from_pts` lands on the same triangle of `to_pts`."""
    cv2 = require("cv2")
    h, w = out_hw
    out = np.zeros((h, w, 3), dtype=np.uint8)
    for tri in triangles:
        src = from_pts[tri].astype(np.float32)
        dst = to_pts[tri].astype(np.float32)
        x0, y0 = np.floor(dst.min(0)).astype(int)
        x1, y1 = np.ceil(dst.max(0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        M = cv2.getAffineTransform(src, dst - np.float32([x0, y0]))
        patch = cv2.warpAffine(image, M, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT_101)
        mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        cv2.fillConvexPoly(mask, np.round(dst - [x0, y0]).astype(np.int32), 1, lineType=cv2.LINE_8)
        region = out[y0:y1, x0:x1]
        region[mask > 0] = patch[mask > 0]
    return out


def reinhard_transfer(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Match `image`'s Lab mean and spread inside `mask` to `reference`'s (both RGB uint8, same size)."""
    cv2 = require("cv2")
    sel = mask > 0
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    ref = cv2.cvtColor(reference.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    mu_i, sd_i = lab[sel].mean(0), lab[sel].std(0) + 1e-6
    mu_r, sd_r = ref[sel].mean(0), ref[sel].std(0)
    lab = (lab - mu_i) * (sd_r / sd_i) + mu_r
    lab[..., 0] = np.clip(lab[..., 0], 0.0, 100.0)
    rgb = cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def hull_mask(points: np.ndarray, hw: tuple[int, int], erode: int = 2) -> np.ndarray:
    """uint8 {0, 255} mask of the convex hull of `points`, kept off the image border."""
    cv2 = require("cv2")
    h, w = hw
    mask = np.zeros((h, w), dtype=np.uint8)
    pts = np.round(points).astype(np.int32)
    cv2.fillConvexPoly(mask, cv2.convexHull(pts), 255)
    if erode > 0:
        mask = cv2.erode(mask, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8))
    border = max(erode, 1)
    mask[:border], mask[-border:], mask[:, :border], mask[:, -border:] = 0, 0, 0, 0
    return mask


def classical_swap(source_rgb: np.ndarray, target_rgb: np.ndarray,
                   src_lm68: np.ndarray, tgt_lm68: np.ndarray) -> np.ndarray:
    """The source image with the target's face warped onto it (RGB uint8, the source's size)."""
    cv2 = require("cv2")
    source, src = _check(source_rgb, src_lm68, "source_rgb")
    target, tgt = _check(target_rgb, tgt_lm68, "target_rgb")
    hw = source.shape[:2]
    triangles = triangulate(src)
    warped = warp_piecewise_affine(target, tgt, src, triangles, hw)
    mask = hull_mask(src, hw)
    if not mask.any():
        raise InputShapeError("The source landmarks enclose no pixels inside the image: nothing to swap.")
    warped = reinhard_transfer(warped, source, mask)
    x, y, bw, bh = cv2.boundingRect(mask)
    centre = (x + bw // 2, y + bh // 2)
    return cv2.seamlessClone(warped, source, mask, centre, cv2.NORMAL_CLONE)
