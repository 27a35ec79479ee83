"""Expression error and gaze from 68 landmarks.

Why: a swap must keep the source's expression while changing who it is. After
a similarity alignment (Procrustes) removes position, size and in-plane
rotation, what is left of the 68-point difference is shape: expression plus
some identity (face proportions), which is why this error is compared
between swappers on the same sources, not read as an absolute.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputShapeError

LEFT_EYE = slice(36, 42)   # eye on the image's left (iBUG 300-W order)
RIGHT_EYE = slice(42, 48)
OUTER_CORNERS = (36, 45)   # 300-W inter-ocular normalisation
EYE_CORNERS = ((36, 39), (42, 45))  # (image-left corner, image-right corner) of each eye
# Landmark groups of the 68-point (iBUG 300-W) scheme. Jaw and nose carry mostly face shape (identity, which a
# swap should change); brows, eyes and mouth carry most of the expression.
LANDMARK_REGIONS: dict[str, slice] = {"jaw": slice(0, 17), "brows": slice(17, 27), "nose": slice(27, 36),
                                      "eyes": slice(36, 48), "mouth": slice(48, 68)}


def _lm68(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.shape != (68, 2):
        raise InputShapeError(f"{name} must be 68 landmarks [68, 2] pixel (x, y); got {a.shape}.")
    return a


def similarity_align(moving: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """`moving` points mapped by the least-squares rotation + uniform scale + shift onto `fixed` (no reflection)."""
    mu_m, mu_f = moving.mean(0), fixed.mean(0)
    m, f = moving - mu_m, fixed - mu_f
    U, S, Vt = np.linalg.svd(m.T @ f)
    d = np.sign(np.linalg.det(U @ Vt))
    D = np.diag([1.0, d])
    R = U @ D @ Vt            # m @ R best matches f
    denom = float((m ** 2).sum())
    scale = float((S * np.diag(D)).sum()) / denom if denom > 0 else 1.0
    return scale * m @ R + mu_f


def inter_ocular(landmarks68: np.ndarray) -> float:
    """Distance between the outer eye corners (points 36 and 45)."""
    lm = _lm68(landmarks68, "landmarks68")
    return float(np.linalg.norm(lm[OUTER_CORNERS[1]] - lm[OUTER_CORNERS[0]]))


def landmark_errors(src_lm: np.ndarray, out_lm: np.ndarray) -> np.ndarray:
    """[68] distance of each aligned output landmark to the source's, over the source's inter-ocular distance.

    The one alignment behind `expression_error` and `region_means`: callers that want both compute it once.
    """
    src = _lm68(src_lm, "src_lm")
    out = _lm68(out_lm, "out_lm")
    iod = inter_ocular(src)
    if iod <= 0:
        raise InputShapeError("src_lm has coincident outer eye corners (36, 45): not a face's landmarks.")
    aligned = similarity_align(out, src)
    return np.linalg.norm(aligned - src, axis=1) / iod


def expression_error(src_lm: np.ndarray, out_lm: np.ndarray) -> float:
    """Mean point distance of the aligned output landmarks to the source's, over the source's inter-ocular distance."""
    return float(landmark_errors(src_lm, out_lm).mean())


def region_means(errors: np.ndarray) -> dict[str, float]:
    """Mean of `landmark_errors` per `LANDMARK_REGIONS` group.

    Why: the single figure mixes expression with face shape; the split shows whether a swapper loses on
    the groups that move with expression (brows, eyes, mouth) or on those that mostly follow identity.
    """
    return {name: float(errors[part].mean()) for name, part in LANDMARK_REGIONS.items()}


def expression_error_by_region(src_lm: np.ndarray, out_lm: np.ndarray) -> dict[str, float]:
    """`expression_error` split by `LANDMARK_REGIONS` (one alignment over all 68 points, then a mean per group)."""
    return region_means(landmark_errors(src_lm, out_lm))


def gaze_offset(landmarks68: np.ndarray, iris_centres: np.ndarray) -> np.ndarray:
    """[2, 2] iris position in each eye's corner frame: eye on the image's left first.

    Per eye, x runs from -1 at the corner on the image's left to +1 at the
    corner on the image's right; y is perpendicular (down in the image
    positive) in the same unit (half the corner-to-corner distance).
    `iris_centres` is [2, 2] pixel (x, y), same eye order.
    """
    lm = _lm68(landmarks68, "landmarks68")
    iris = np.asarray(iris_centres, dtype=np.float64)
    if iris.shape != (2, 2):
        raise InputShapeError(f"iris_centres must be [2, 2] pixel (x, y), image-left eye first; got {iris.shape}.")
    out = np.empty((2, 2))
    for k, (a, b) in enumerate(EYE_CORNERS):
        axis = lm[b] - lm[a]
        half = np.linalg.norm(axis) / 2.0
        if half <= 0:
            raise InputShapeError(f"eye corners {a} and {b} coincide: not a face's landmarks.")
        ux = axis / (2.0 * half)
        uy = np.array([-ux[1], ux[0]])  # x rotated a quarter turn clockwise on screen: "down" for a level eye
        rel = iris[k] - (lm[a] + lm[b]) / 2.0
        out[k] = (rel @ ux / half, rel @ uy / half)
    return out


def gaze_error(src_lm: np.ndarray, src_iris: np.ndarray, out_lm: np.ndarray, out_iris: np.ndarray) -> float:
    """Mean distance between source and output gaze offsets (corner-frame units)."""
    d = gaze_offset(src_lm, src_iris) - gaze_offset(out_lm, out_iris)
    return float(np.linalg.norm(d, axis=1).mean())
