"""Structure map of the source face: what the generator's SPADE layers follow.

The generator is told *where* each facial part is by a soft one-hot map with one
channel per class. The final source of that map is a face parser; until it
exists, `LandmarkStructureMapper` renders the same classes from the 5 landmarks
(ellipses placed and sized from the eye distance), so weights, configs and code
paths are already shaped for the parser. Every map is a partition of unity: the
channels are non-negative and sum to 1 at every pixel, as a parser's softmax does.

Whatever mapper is used, the generator's `struct_channels` and `structure_source`
come from it (`GeneratorConfig.for_mapper`; the config records the
mapper's `name` in its `structure` field), never from a constant.
"""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from .errors import InputShapeError

# The parser's classes (fewshot_core.parsing.classes.PARSE_CLASSES), in channel order; the
# landmark renderer draws the same ones. Left/right are the image's left/right.
# eye_l/eye_r are the eye opening without the iris.
STRUCTURE_CHANNELS: list[str] = [
    "background",
    "skin",
    "brow_l",
    "brow_r",
    "eye_l",
    "eye_r",
    "iris_l",
    "iris_r",
    "nose",
    "lip_upper",
    "lip_lower",
    "mouth_inner",
]


@runtime_checkable
class StructureMapper(Protocol):
    """Anything that turns aligned crops (+ their landmarks) into a structure map.

    `name` is stored in the generator config so a weights file is only ever fed
    maps of the kind it was trained on; `channels` gives N and the channel order.
    """

    name: str
    channels: Sequence[str]

    def __call__(self, crops: Tensor, landmarks_in_crop: Tensor) -> Tensor:
        """crops [B,3,R,R] in [0,1], landmarks_in_crop [B,5,2] crop px -> [B,N,R,R]."""
        ...


def _soft_ellipse(xx: Tensor, yy: Tensor, center: Tensor, u: Tensor, a: Tensor, b: Tensor,
                  edge_px: float) -> Tensor:
    """Soft inside-indicator of an ellipse with semi-axes a (along u) and b (across u).

    xx, yy: [S,S] pixel grids; center, u: [B,2]; a, b: [B]. Returns [B,S,S]. The edge
    is a sigmoid about `edge_px` wide so small features stay visible at 64 px.
    """
    dx = xx[None] - center[:, 0, None, None]
    dy = yy[None] - center[:, 1, None, None]
    along = dx * u[:, 0, None, None] + dy * u[:, 1, None, None]
    across = -dx * u[:, 1, None, None] + dy * u[:, 0, None, None]
    a = a.clamp_min(0.5)[:, None, None]
    b = b.clamp_min(0.5)[:, None, None]
    r = torch.sqrt((along / a) ** 2 + (across / b) ** 2 + 1e-12)
    # (1 - r) * min(a, b) approximates the signed distance to the edge in px.
    return torch.sigmoid((1.0 - r) * torch.minimum(a, b) / edge_px)


def landmark_structure_map(landmarks_in_crop: Tensor, size: int, edge_px: float = 0.75) -> Tensor:
    """Render the `STRUCTURE_CHANNELS` map from 5 landmarks in crop px -> [B,12,size,size].

    Sizes are fractions of the inter-ocular distance d and the eye-to-mouth
    height h, oriented along the eye line, so the map follows scale and roll.
    Layers are stacked by priority (iris over eye white over brow ...), then skin
    inside a fitted face ellipse, then background, giving a partition of unity.
    """
    if landmarks_in_crop.ndim != 3 or landmarks_in_crop.shape[1:] != (5, 2):
        raise InputShapeError(
            f"landmarks_in_crop must have shape [B, 5, 2], got {list(landmarks_in_crop.shape)}; "
            "pass the 5 points (eyes, nose, mouth corners) in crop pixel coordinates."
        )
    if size < 8:
        raise InputShapeError(f"structure map size must be at least 8 px, got {size}.")
    dtype = landmarks_in_crop.dtype if landmarks_in_crop.dtype == torch.float64 else torch.float32
    lm = landmarks_in_crop.to(dtype)
    device = lm.device
    eye_l, eye_r, nose, mouth_l, mouth_r = lm.unbind(1)

    eye_vec = eye_r - eye_l
    d = eye_vec.norm(dim=-1).clamp_min(1.0)
    u = eye_vec / d[:, None]                       # along the eye line
    v = torch.stack([-u[:, 1], u[:, 0]], dim=-1)   # "down" the face
    eye_mid = (eye_l + eye_r) / 2
    mouth_mid = (mouth_l + mouth_r) / 2
    h = ((mouth_mid - eye_mid) * v).sum(-1).clamp_min(0.5 * d)

    mouth_vec = mouth_r - mouth_l
    w = mouth_vec.norm(dim=-1).clamp_min(0.2 * d)
    um = mouth_vec / mouth_vec.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    um = torch.where(mouth_vec.norm(dim=-1, keepdim=True) > 1e-3, um, u)
    vm = torch.stack([-um[:, 1], um[:, 0]], dim=-1)

    coords = torch.arange(size, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")

    def ell(center: Tensor, axis: Tensor, a: Tensor, b: Tensor) -> Tensor:
        return _soft_ellipse(xx, yy, center, axis, a, b, edge_px)

    nose_drop = ((nose - eye_mid) * v).sum(-1).clamp_min(0.3 * d)
    face_center = eye_mid + 0.3 * h[:, None] * v + 0.25 * ((nose - eye_mid) * u).sum(-1)[:, None] * u
    # Order = priority: earlier layers win where shapes overlap.
    layers = {
        "iris_l": ell(eye_l, u, 0.075 * d, 0.075 * d),
        "iris_r": ell(eye_r, u, 0.075 * d, 0.075 * d),
        "eye_l": ell(eye_l, u, 0.19 * d, 0.075 * d),
        "eye_r": ell(eye_r, u, 0.19 * d, 0.075 * d),
        "brow_l": ell(eye_l - 0.27 * d[:, None] * v, u, 0.25 * d, 0.055 * d),
        "brow_r": ell(eye_r - 0.27 * d[:, None] * v, u, 0.25 * d, 0.055 * d),
        "mouth_inner": ell(mouth_mid, um, 0.45 * w, 0.02 * d + 0.5),
        "lip_upper": ell(mouth_mid - 0.05 * d[:, None] * vm, um, 0.52 * w, 0.07 * d),
        "lip_lower": ell(mouth_mid + 0.07 * d[:, None] * vm, um, 0.47 * w, 0.085 * d),
        "nose": ell(0.35 * eye_mid + 0.65 * nose + 0.05 * d[:, None] * v, v,
                    0.5 * nose_drop + 0.08 * d, 0.17 * d),
    }
    face = ell(face_center, u, 1.0 * d, 1.5 * h)

    remaining = torch.ones(lm.shape[0], size, size, device=device, dtype=dtype)
    out: dict[str, Tensor] = {}
    for name, m in layers.items():
        part = m * face * remaining
        out[name] = part
        remaining = remaining - part
    out["skin"] = face * remaining
    out["background"] = remaining - out["skin"]
    stacked = torch.stack([out[c] for c in STRUCTURE_CHANNELS], dim=1).clamp_min(0.0)
    return stacked.to(landmarks_in_crop.dtype) if landmarks_in_crop.is_floating_point() else stacked


class LandmarkStructureMapper:
    """`StructureMapper` that renders the parser's classes from the 5 landmarks (stop-gap)."""

    name = "landmarks"
    channels: Sequence[str] = tuple(STRUCTURE_CHANNELS)

    def __init__(self, edge_px: float = 0.75) -> None:
        self.edge_px = edge_px

    def __call__(self, crops: Tensor, landmarks_in_crop: Tensor) -> Tensor:
        if crops.ndim != 4 or crops.shape[1] != 3 or crops.shape[2] != crops.shape[3]:
            raise InputShapeError(
                f"crops must have shape [B, 3, R, R], got {list(crops.shape)}; pass aligned square crops."
            )
        if landmarks_in_crop.shape[0] != crops.shape[0]:
            raise InputShapeError(
                f"crops hold {crops.shape[0]} faces but landmarks_in_crop holds "
                f"{landmarks_in_crop.shape[0]}; pass one set of 5 landmarks per crop."
            )
        lm = landmarks_in_crop.to(device=crops.device, dtype=torch.float32)
        dtype = crops.dtype if crops.is_floating_point() else torch.float32
        return landmark_structure_map(lm, crops.shape[-1], self.edge_px).to(dtype)
