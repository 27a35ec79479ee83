"""Which face is which: each detected face boxed and numbered as the swap's `faces` setting counts them.

Why: in a photo with several people, `faces` = "0,2" means the first and third face in the chosen order
(`detect.order_faces`), and a user should not have to guess which those are. The preview runs the same detector,
minimum size and ordering as the swap, so the numbers it draws are the ones the swap uses.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .detect import FaceDetections, order_faces

# A 3 x 5 pixel font for the digits 0-9 (rows top to bottom, "1" = ink), drawn on a plate one pixel wider all round.
GLYPH_ROWS = 5
_DIGIT_ROWS = {
    "0": ("111", "101", "101", "101", "111"),
    "1": ("010", "110", "010", "010", "111"),
    "2": ("111", "001", "111", "100", "111"),
    "3": ("111", "001", "111", "001", "111"),
    "4": ("101", "101", "111", "001", "001"),
    "5": ("111", "100", "111", "001", "111"),
    "6": ("111", "100", "111", "101", "111"),
    "7": ("111", "001", "001", "001", "001"),
    "8": ("111", "101", "111", "101", "111"),
    "9": ("111", "101", "111", "001", "111"),
}
# Box colours, one per face index in turn (RGB in [0, 1]): easy to tell apart on skin and on grey.
BOX_COLOURS = torch.tensor([[0.1, 0.9, 0.2], [1.0, 0.55, 0.0], [0.1, 0.7, 1.0], [1.0, 0.2, 0.7], [1.0, 0.95, 0.1],
                            [0.6, 0.3, 1.0]])


def digit_bitmap(text: str) -> torch.Tensor:
    """The ink [GLYPH_ROWS, 4 * len - 1] of a string of digits, one blank column between them."""
    columns = []
    for index, char in enumerate(text):
        if char not in _DIGIT_ROWS:
            raise ValueError(f"digit_bitmap draws digits only, got {text!r}")
        glyph = torch.tensor([[float(c) for c in row] for row in _DIGIT_ROWS[char]])
        if index:
            columns.append(torch.zeros(GLYPH_ROWS, 1))
        columns.append(glyph)
    return torch.cat(columns, dim=1)


def _fill(image: torch.Tensor, x0: int, y0: int, x1: int, y1: int, colour: torch.Tensor) -> None:
    """Paint the clipped rectangle [x0, x1) x [y0, y1) of image [3, H, W] in place."""
    h, w = image.shape[-2:]
    x0, x1, y0, y1 = max(0, x0), min(w, x1), max(0, y0), min(h, y1)
    if x0 < x1 and y0 < y1:
        image[:, y0:y1, x0:x1] = colour[:, None, None]


def _label(image: torch.Tensor, text: str, x: int, y: int, scale: int, colour: torch.Tensor) -> None:
    """The number `text` in `colour` on a black plate whose top-left corner is (x, y)."""
    ink = digit_bitmap(text)
    pad = scale
    plate_w, plate_h = ink.shape[1] * scale + 2 * pad, ink.shape[0] * scale + 2 * pad
    _fill(image, x, y, x + plate_w, y + plate_h, torch.zeros(3))
    for row, col in torch.nonzero(ink).tolist():
        _fill(image, x + pad + col * scale, y + pad + row * scale, x + pad + (col + 1) * scale,
              y + pad + (row + 1) * scale, colour)


def draw_face_indices(image: torch.Tensor, faces: FaceDetections) -> torch.Tensor:
    """A copy of image [3, H, W] with face k (in the given order) boxed, its landmarks dotted and numbered k."""
    out = image.detach().float().clone().cpu()
    h, w = out.shape[-2:]
    line = max(2, round(min(h, w) / 250))
    for index in range(len(faces)):
        colour = BOX_COLOURS[index % len(BOX_COLOURS)]
        x0, y0, x1, y1 = (round(v) for v in faces.boxes[index].tolist())
        for edge in ((x0, y0, x1, y0 + line), (x0, y1 - line, x1, y1), (x0, y0, x0 + line, y1),
                     (x1 - line, y0, x1, y1)):
            _fill(out, *edge, colour)
        for px, py in faces.landmarks[index].tolist():
            _fill(out, round(px) - line, round(py) - line, round(px) + line + 1, round(py) + line + 1, colour)
        scale = max(2, round((y1 - y0) / 40))
        plate_h = (GLYPH_ROWS + 2) * scale  # `_label`'s plate
        top = y0 - plate_h if y0 - plate_h >= 0 else y0 + line  # above the box, or inside it at the frame's top
        _label(out, str(index), max(0, x0), top, scale, colour)
    return out


def face_index_preview(images: torch.Tensor, detections: Sequence[FaceDetections], order: str
                       ) -> tuple[torch.Tensor, str]:
    """Each image [B, 3, H, W] with its faces numbered in `order`, and a report line per face."""
    panels, lines = [], []
    for frame, (image, dets) in enumerate(zip(images, detections)):
        ordered = order_faces(dets.to("cpu"), order)
        panels.append(draw_face_indices(image, ordered))
        if len(ordered) == 0:
            lines.append(f"image {frame}: no face found")
        for index in range(len(ordered)):
            x0, y0, x1, y1 = ordered.boxes[index].tolist()
            lines.append(f"image {frame}: face {index} at x {x0:.0f}-{x1:.0f}, y {y0:.0f}-{y1:.0f} "
                         f"({x1 - x0:.0f} px wide)")
    return torch.stack(panels), "\n".join(lines)
