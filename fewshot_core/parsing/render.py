"""Render a face-parsing class map from MediaPipe's 478 face-mesh landmarks.

These maps are the training targets of our own parser (MediaPipe is only a
labelling tool, see tools/labelling). Pure numpy with an exact pixel-centre
polygon test, because at 128 px an eye is ~12x5 px and integer-rounded
rasterisers (PIL's) would shift it by up to half a pixel.

Coordinates: pixel (x, y) with pixel centres at integer coordinates (kornia's
convention); pixel (i, j) of the map is row y=i, column x=j.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputShapeError
from . import classes as C

# The mesh's brow band is ~3 px at 128 px and its lower edge sits a little above the
# visible brow on LFW crops (checked on an overlay); 1.3x covers it without reaching the lid.
BROW_THICKEN = 1.3


def polygon_mask(poly: np.ndarray, size: int) -> np.ndarray:
    """bool [size,size]: pixel centres inside the closed polygon `poly` [K,2] (even-odd rule).

    Scanline form of the crossing-number test: for each pixel row, the x of every
    edge crossing; a pixel is inside when an odd number of crossings lie to its right.
    """
    poly = np.asarray(poly, dtype=np.float64)
    mask = np.zeros((size, size), dtype=bool)
    if len(poly) < 3 or not np.all(np.isfinite(poly)):
        return mask
    x0, y0 = np.maximum(np.floor(poly.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(poly.max(0)).astype(int), size - 1)
    if x1 < x0 or y1 < y0:
        return mask
    width = x1 - x0 + 1
    py = np.arange(y0, y1 + 1, dtype=np.float64)[:, None]            # [R,1]
    a, b = poly, np.roll(poly, -1, axis=0)
    ax, ay, bx, by = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
    straddles = (ay > py) != (by > py)                                # [R,K]
    dy = np.where(by == ay, 1.0, by - ay)
    x_cross = ax + (py - ay) * (bx - ax) / dy
    # Integer pixel x is left of crossing c iff x < ceil(c): count crossings per first
    # column they no longer cover, then a running sum gives #crossings at or left of x.
    first_out = np.clip(np.ceil(x_cross) - x0, 0, width).astype(np.int64)
    rows = np.broadcast_to(np.arange(len(py))[:, None], first_out.shape)
    hist = np.zeros((len(py), width + 1), dtype=np.int64)
    np.add.at(hist, (rows[straddles], first_out[straddles]), 1)
    right = straddles.sum(1, keepdims=True) - np.cumsum(hist, axis=1)[:, :width]
    mask[y0:y1 + 1, x0:x1 + 1] = (right % 2) == 1
    return mask


def disc_mask(centre: np.ndarray, radius: float, size: int) -> np.ndarray:
    """bool [size,size]: pixel centres within `radius` of `centre` (x, y)."""
    ys, xs = np.mgrid[0:size, 0:size]
    return (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 <= radius ** 2


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Convex hull [K,2] of points [M,2], counter-clockwise (Andrew's monotone chain)."""
    pts = np.unique(np.asarray(points, dtype=np.float64), axis=0)  # sorted by x, then y
    if len(pts) < 3:
        return pts

    def half(seq: np.ndarray) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for p in seq:
            while len(out) >= 2:
                o, a = out[-2], out[-1]
                if (a[0] - o[0]) * (p[1] - o[1]) - (a[1] - o[1]) * (p[0] - o[0]) > 0:
                    break
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


def _check(landmarks: np.ndarray) -> np.ndarray:
    lm = np.asarray(landmarks)
    if lm.ndim < 2 or lm.shape[-2] != C.N_MESH_LANDMARKS or lm.shape[-1] not in (2, 3):
        raise InputShapeError(
            f"expected MediaPipe face-mesh landmarks [..., {C.N_MESH_LANDMARKS}, 2 or 3], got shape {lm.shape}. "
            "Fix: run the mesh with refine_landmarks=True (478 points incl. irises)."
        )
    return lm[..., :2].astype(np.float64)


def iris_centres(landmarks: np.ndarray) -> np.ndarray:
    """Iris centres [..., 2, 2] (x, y): row 0 the iris on the image's left, row 1 on its right."""
    lm = _check(landmarks)
    return lm[..., [C.IRIS_L_CENTRE, C.IRIS_R_CENTRE], :]


def iris_radii(landmarks: np.ndarray) -> np.ndarray:
    """Iris radii [..., 2]: mean distance of the four rim points to the centre."""
    lm = _check(landmarks)
    out = []
    for centre, rim in ((C.IRIS_L_CENTRE, C.IRIS_L_RIM), (C.IRIS_R_CENTRE, C.IRIS_R_RIM)):
        d = np.linalg.norm(lm[..., rim, :] - lm[..., centre:centre + 1, :], axis=-1)
        out.append(d.mean(-1))
    return np.stack(out, axis=-1)


def render_class_map(landmarks_xy: np.ndarray, size: int, brow_thicken: float = BROW_THICKEN) -> np.ndarray:
    """uint8 [size,size] class indices into PARSE_CLASSES from landmarks [478,2|3] in this map's pixels.

    Regions are painted in order: face oval as skin, nose (convex hull), brows,
    eye openings, iris discs clipped to the eye openings, upper lip, lower lip,
    inner mouth. Brows are the mesh's brow band with its lower edge moved down to
    `brow_thicken` times the band's width. Landmarks with NaN (face not found)
    give an all-IGNORE_INDEX map.
    """
    lm = _check(landmarks_xy)
    if lm.ndim != 2:
        raise InputShapeError(f"render_class_map takes one face [478,2]; got {lm.shape}. Fix: use render_class_maps.")
    out = np.zeros((size, size), dtype=np.uint8)
    if not np.all(np.isfinite(lm)):
        out[:] = C.IGNORE_INDEX
        return out
    k = C.CLASS_INDEX

    def paint(idx: list[int], name: str) -> np.ndarray:
        m = polygon_mask(lm[idx], size)
        out[m] = k[name]
        return m

    paint(C.FACE_OVAL, "skin")
    out[polygon_mask(convex_hull(lm[C.NOSE_HULL_POINTS]), size)] = k["nose"]
    for upper, lower, name in ((C.BROW_L_UPPER, C.BROW_L_LOWER, "brow_l"), (C.BROW_R_UPPER, C.BROW_R_LOWER, "brow_r")):
        top = lm[upper]
        bottom = top + brow_thicken * (lm[lower] - top)
        out[polygon_mask(np.concatenate([top, bottom[::-1]]), size)] = k[name]
    eye_l = paint(C.EYE_L, "eye_l")
    eye_r = paint(C.EYE_R, "eye_r")
    centres, radii = iris_centres(lm), iris_radii(lm)
    out[disc_mask(centres[0], radii[0], size) & eye_l] = k["iris_l"]
    out[disc_mask(centres[1], radii[1], size) & eye_r] = k["iris_r"]
    paint(C.LIP_UPPER, "lip_upper")
    paint(C.LIP_LOWER, "lip_lower")
    paint(C.MOUTH_INNER, "mouth_inner")
    return out


def render_class_maps(landmarks: np.ndarray, size: int, brow_thicken: float = BROW_THICKEN) -> np.ndarray:
    """uint8 [N,size,size] for landmarks [N,478,2|3]; faces with NaN landmarks get IGNORE_INDEX."""
    lm = _check(landmarks)
    if lm.ndim != 3:
        raise InputShapeError(f"render_class_maps takes [N,478,2]; got {lm.shape}.")
    return np.stack([render_class_map(x, size, brow_thicken) for x in lm]) if len(lm) else np.zeros((0, size, size), np.uint8)


# A fixed colour per class for previews (background black).
PALETTE = np.array([
    [0, 0, 0], [224, 172, 140], [110, 60, 20], [150, 90, 40], [240, 240, 240], [200, 200, 255],
    [0, 120, 255], [0, 200, 120], [255, 120, 0], [220, 30, 60], [160, 0, 120], [40, 0, 40],
], dtype=np.uint8)


def colourise(class_map: np.ndarray) -> np.ndarray:
    """uint8 [...,3] RGB preview of a class map; IGNORE_INDEX shows as grey."""
    cm = np.asarray(class_map)
    rgb = PALETTE[np.clip(cm, 0, len(PALETTE) - 1)]
    rgb[cm == C.IGNORE_INDEX] = 128
    return rgb
