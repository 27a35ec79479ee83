"""Greedy non-maximum suppression, batched over groups (images), in plain torch.

Why our own: torchvision is not a dependency. Instead of a Python loop over
boxes, greedy NMS is computed as the fixed point of
`keep[j] = not any(keep[i] and overlap[i, j] for i ranked above j)`, iterated
from "keep all"; after k rounds the k best-ranked decisions are final, and in
practice a handful of rounds (the length of the longest suppression chain)
settle all of them. Each round is one matrix-vector product, so it runs the
same on CPU and CUDA.
"""
from __future__ import annotations

from typing import Literal

import torch

OverlapMode = Literal["union", "min"]


def pairwise_overlap(a: torch.Tensor, b: torch.Tensor, mode: OverlapMode = "union") -> torch.Tensor:
    """Overlap of every box in `a` [N, 4] with every box in `b` [M, 4] (xyxy): IoU, or
    intersection over the smaller area (`min`, which MTCNN's last stage uses to drop boxes nested in others)."""
    x1 = torch.maximum(a[:, None, 0], b[None, :, 0])
    y1 = torch.maximum(a[:, None, 1], b[None, :, 1])
    x2 = torch.minimum(a[:, None, 2], b[None, :, 2])
    y2 = torch.minimum(a[:, None, 3], b[None, :, 3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])).clamp(min=0)
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])).clamp(min=0)
    if mode == "min":
        denom = torch.minimum(area_a[:, None], area_b[None, :])
    elif mode == "union":
        denom = area_a[:, None] + area_b[None, :] - inter
    else:
        raise ValueError(f"unknown overlap mode {mode!r}; use 'union' or 'min'")
    return inter / denom.clamp(min=1e-12)


def batched_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    groups: torch.Tensor | None,
    threshold: float,
    mode: OverlapMode = "union",
) -> torch.Tensor:
    """Indices of the boxes kept by greedy NMS run separately within each group, best score first.

    boxes [N, 4] xyxy, scores [N], groups [N] integer ids (None: one group).
    A box is dropped when a kept, better-scored box of its group overlaps it by more than `threshold`.
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True, stable=True)
    ranked = boxes[order]
    suppresses = pairwise_overlap(ranked, ranked, mode) > threshold
    if groups is not None:
        g = groups[order]
        suppresses &= g[:, None] == g[None, :]
    suppresses = suppresses.triu(diagonal=1).to(boxes.dtype)  # only better-ranked boxes suppress
    keep = torch.ones(n, dtype=torch.bool, device=boxes.device)
    while True:
        new_keep = (keep.to(boxes.dtype) @ suppresses) == 0
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return order[keep]
