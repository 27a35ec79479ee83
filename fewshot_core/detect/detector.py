"""MTCNN face detection on batches of [B, 3, H, W] images: boxes, scores, 5 landmarks.

Coordinates follow kornia's pixel convention (pixel centres at integers, the
image spans [-0.5, W - 0.5]); boxes are xyxy in the same coordinates, so
landmarks can go straight into `fewshot_core.align`.

The cascade is the published one (P-Net on an image pyramid, R-Net on 24x24
and O-Net on 48x48 crops, NMS between stages). Two choices differ from
facenet-pytorch: boxes reaching outside the image are zero-padded (as in the
original MTCNN) instead of being clipped and stretched, and all crops of a
stage are sampled by one grid_sample per level of a 2x image pyramid (an
area-like resampling) instead of one resize per box.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..state_check import state_dict_mismatch
from ..errors import InputShapeError, ModelFileMissingError, WeightsMismatchError
from ..models.fetch import FETCH_COMMAND
from .mtcnn import ONet, PNet, RNet
from .nms import batched_nms


@dataclass
class FaceDetections:
    """Faces found in one image: boxes [N, 4] xyxy, scores [N], landmarks [N, 5, 2] (pixel x, y),
    landmark order: eye on the image's left, eye on the image's right, nose, mouth left, mouth right."""

    boxes: torch.Tensor
    scores: torch.Tensor
    landmarks: torch.Tensor

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def select(self, index: torch.Tensor | slice | int) -> "FaceDetections":
        """The faces at `index` (a long tensor, bool mask, slice or int), keeping the dimensions."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return FaceDetections(self.boxes[index], self.scores[index], self.landmarks[index])

    def to(self, device: torch.device | str) -> "FaceDetections":
        return FaceDetections(self.boxes.to(device), self.scores.to(device), self.landmarks.to(device))


def order_faces(dets: FaceDetections, order: Literal["left_to_right", "largest_first"]) -> FaceDetections:
    """Faces re-ordered so that "face index k" means the same face to a user: by box centre from the
    image's left, or by box area, largest first (ties keep the detector's score order)."""
    if order == "left_to_right":
        key = (dets.boxes[:, 0] + dets.boxes[:, 2]) * 0.5
    elif order == "largest_first":
        key = -(dets.boxes[:, 2] - dets.boxes[:, 0]) * (dets.boxes[:, 3] - dets.boxes[:, 1])
    else:
        raise ValueError(f"unknown face order {order!r}; use 'left_to_right' or 'largest_first'")
    return dets.select(torch.argsort(key, stable=True))


def _normalise(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] RGB to the (255 x - 127.5) / 128 input the networks were trained on."""
    return (x * 255.0 - 127.5) * 0.0078125


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow each box to a square of side max(w, h) about the same centre."""
    centre = (boxes[:, :2] + boxes[:, 2:]) * 0.5
    half = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1, keepdim=True) * 0.5
    return torch.cat((centre - half, centre + half), dim=1)


def _regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Apply MTCNN's box offsets, given as fractions of the box's width and height."""
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    return boxes + offsets * size


def _pyramid_scales(h: int, w: int, min_face_size: int, factor: float) -> list[float]:
    """Scales at which P-Net's 12 px window sees faces from `min_face_size` up to the whole image."""
    scale = 12.0 / min_face_size
    side = min(h, w) * scale
    scales = []
    while side >= 12.0:
        scales.append(scale)
        scale *= factor
        side *= factor
    return scales


def _halving_pyramid(images: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """images, then 2x, 4x, ... box-filtered copies; level l pixel k covers level-0 pixels [2^l k, 2^l (k+1))."""
    out = [images]
    for _ in range(levels - 1):
        x = out[-1]
        h, w = x.shape[-2:]
        if min(h, w) < 2:
            break
        x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate") if (h % 2 or w % 2) else x
        out.append(F.avg_pool2d(x, 2))
    return out


def _bilinear_boxes(image: torch.Tensor, index: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear `size` x `size` crops of boxes [n, 4] (corner coordinates) of image[index], zero outside
    the image. One grid_sample for all boxes: the boxes of each image are stacked as rows of its grid,
    so the image is never copied per box."""
    b, c, h, w = image.shape
    n = boxes.shape[0]
    counts = torch.bincount(index, minlength=b)
    order = torch.argsort(index, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(index)
    rank[order] = torch.arange(n, device=index.device) - starts[index[order]]
    rows = int(counts.max())
    t = (torch.arange(size, device=image.device, dtype=image.dtype) + 0.5) / size
    xs = (boxes[:, 0:1] + t * (boxes[:, 2:3] - boxes[:, 0:1])) * (2.0 / w) - 1.0  # align_corners=False units
    ys = (boxes[:, 1:2] + t * (boxes[:, 3:4] - boxes[:, 1:2])) * (2.0 / h) - 1.0
    grid = image.new_zeros((b, rows, size, size, 2))
    grid[index, rank] = torch.stack(torch.broadcast_tensors(xs[:, None, :], ys[:, :, None]), dim=-1)
    out = F.grid_sample(image, grid.view(b, rows * size, size, 2), align_corners=False, padding_mode="zeros")
    return out.view(b, c, rows, size, size).transpose(1, 2)[index, rank]


def _crop_boxes(pyramid: list[torch.Tensor], index: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Resample boxes [n, 4] of images `index` to [n, 3, size, size], area-like: each box is read from the
    pyramid level where it spans size..2*size pixels, at 2x supersampling, then 2x2-averaged."""
    n = boxes.shape[0]
    out = boxes.new_zeros((n, 3, size, size))
    side = (boxes[:, 2:] - boxes[:, :2]).amax(dim=1).clamp(min=1e-6)
    level = torch.log2(side / size).floor().clamp(0, len(pyramid) - 1).long()
    for lv in level.unique().tolist():
        sel = torch.nonzero(level == lv).squeeze(1)
        crops = _bilinear_boxes(pyramid[lv], index[sel], boxes[sel] / 2**lv, 2 * size)
        out[sel] = F.avg_pool2d(crops, 2)
    return out.contiguous(memory_format=torch.channels_last)


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputShapeError(
            f"Face detection needs images as a float tensor [B, 3, H, W] (RGB); got {shape}. "
            "A ComfyUI IMAGE [B, H, W, 3] becomes one with image.permute(0, 3, 1, 2)."
        )
    if not images.is_floating_point():
        raise InputShapeError(
            f"Face detection needs float images in [0, 1]; got dtype {images.dtype}. Divide 8-bit images by 255."
        )
    if images.numel() and (images.amin() < -1e-3 or images.amax() > 1 + 1e-3):
        raise InputShapeError(
            f"Face detection needs images with values in [0, 1]; got [{images.amin().item():.3g}, "
            f"{images.amax().item():.3g}]. Divide 8-bit images by 255, or undo a [-1, 1] normalisation."
        )


class FaceDetector(nn.Module):
    """MTCNN (P-, R-, O-Net) with batched pyramid and our own NMS; weights from `mtcnn.safetensors`."""

    def __init__(self) -> None:
        super().__init__()
        self.pnet = PNet()
        self.rnet = RNet()
        self.onet = ONet()
        self.eval()

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu") -> "FaceDetector":
        """Load converted weights, failing with a message that says how to get or repair the file."""
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise ModelFileMissingError(
                f"Missing MTCNN face detector weights at {path}. "
                f"Create them with: {FETCH_COMMAND} --dest {path.parent}"
            )
        try:
            state = load_file(str(path))
        except Exception as exc:  # any parse failure means a broken or foreign file
            raise WeightsMismatchError(
                f"Cannot read {path} as a safetensors file ({exc}). "
                f"Delete it and run: {FETCH_COMMAND} --force --dest {path.parent}"
            ) from exc
        model = cls()
        problem = state_dict_mismatch(model, state)
        if problem:
            raise WeightsMismatchError(
                f"{path} does not fit the MTCNN detector: {problem}. "
                f"Convert it again with: {FETCH_COMMAND} --force --dest {path.parent}"
            )
        model.load_state_dict({k: v.float() for k, v in state.items()})
        return model.to(device)

    @property
    def device(self) -> torch.device:
        return self.pnet.conv1.weight.device

    @torch.no_grad()  # not inference_mode: callers may use the landmarks inside autograd graphs
    def detect(
        self,
        images: torch.Tensor,
        min_face_size: int = 20,
        thresholds: Sequence[float] = (0.6, 0.7, 0.7),
        scale_factor: float = 0.709,
    ) -> list[FaceDetections]:
        """Faces in each image of [B, 3, H, W] RGB in [0, 1], best score first; results on the images' device.

        min_face_size: smallest face side in pixels searched for (smaller is slower).
        thresholds: minimum face probability after P-, R- and O-Net.
        scale_factor: ratio between pyramid levels.
        """
        _check_images(images)
        if min_face_size < 1 or len(thresholds) != 3 or not 0 < scale_factor < 1:
            raise InputShapeError(
                f"Face detection settings out of range: min_face_size={min_face_size} (>= 1), "
                f"thresholds={tuple(thresholds)} (three numbers), scale_factor={scale_factor} (between 0 and 1)."
            )
        x = images.to(self.device, torch.float32)
        b, _, h, w = x.shape
        # halvings down to about 12 px: P-Net's pyramid and the stage-2/3 crops both read from these
        pyramid = _halving_pyramid(x, 1 + max(0, math.ceil(math.log2(max(h, w) / 12))))
        boxes, scores, index = self._propose(pyramid, min_face_size, thresholds[0], scale_factor)
        landmarks = boxes.new_zeros((0, 5, 2))
        if boxes.shape[0]:
            boxes, scores, index = self._refine(pyramid, boxes, index, thresholds[1])
        if boxes.shape[0]:
            boxes, scores, index, landmarks = self._output(pyramid, boxes, index, thresholds[2])
        boxes, landmarks = boxes - 0.5, landmarks - 0.5  # corner to pixel-centre coordinates
        out = []
        for i in range(b):
            sel = torch.nonzero(index == i).squeeze(1)
            sel = sel[torch.argsort(scores[sel], descending=True, stable=True)]
            out.append(FaceDetections(boxes[sel], scores[sel], landmarks[sel]).to(images.device))
        return out

    def _propose(
        self, pyramid: list[torch.Tensor], min_face_size: int, threshold: float, factor: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage 1: P-Net over the scale pyramid; per-scale NMS 0.5, cross-scale NMS 0.7, regress, square.

        Each scale is area-resized from the smallest halving level at least as large, which is the
        same box filter at a fraction of the cost of resizing the full image every time."""
        x = pyramid[0]
        _, _, h, w = x.shape
        all_boxes, all_scores, all_offsets, all_index = [], [], [], []
        for scale in _pyramid_scales(h, w, min_face_size, factor):
            lv = min(len(pyramid) - 1, max(0, math.floor(math.log2(1.0 / scale))))
            source = pyramid[lv]
            hs, ws = math.ceil(source.shape[2] * scale * 2**lv), math.ceil(source.shape[3] * scale * 2**lv)
            if scale < 1:
                resized = F.interpolate(source, size=(hs, ws), mode="area")
            else:
                resized = F.interpolate(source, size=(hs, ws), mode="bilinear", align_corners=False)
            # original-image pixels per resized pixel (a level may be padded by one pixel, hence exact ratios)
            sx, sy = ws / (source.shape[3] * 2**lv), hs / (source.shape[2] * 2**lv)
            prob, offsets = self.pnet(_normalise(resized).contiguous(memory_format=torch.channels_last))
            hit = torch.nonzero(prob >= threshold)  # [n, 3]: image, row, column
            if hit.shape[0] == 0:
                continue
            index, row, col = hit.unbind(1)
            rowf, colf = row.to(x.dtype), col.to(x.dtype)
            boxes = torch.stack((2 * colf / sx, 2 * rowf / sy, (2 * colf + 12) / sx, (2 * rowf + 12) / sy), dim=1)
            score = prob[index, row, col]
            offset = offsets.permute(0, 2, 3, 1)[index, row, col]
            keep = batched_nms(boxes, score, index, 0.5)
            all_boxes.append(boxes[keep])
            all_scores.append(score[keep])
            all_offsets.append(offset[keep])
            all_index.append(index[keep])
        if not all_boxes:
            empty = x.new_zeros((0, 4))
            return empty, x.new_zeros(0), torch.zeros(0, dtype=torch.long, device=x.device)
        boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
        offsets, index = torch.cat(all_offsets), torch.cat(all_index)
        keep = batched_nms(boxes, scores, index, 0.7)
        return _square(_regress(boxes[keep], offsets[keep])), scores[keep], index[keep]

    def _refine(
        self, pyramid: list[torch.Tensor], boxes: torch.Tensor, index: torch.Tensor, threshold: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage 2: R-Net on 24x24 crops; threshold, NMS 0.7, regress, square."""
        prob, offsets = self.rnet(_normalise(_crop_boxes(pyramid, index, boxes, 24)))
        passed = prob > threshold
        boxes, prob, offsets, index = boxes[passed], prob[passed], offsets[passed], index[passed]
        keep = batched_nms(boxes, prob, index, 0.7)
        return _square(_regress(boxes[keep], offsets[keep])), prob[keep], index[keep]

    def _output(
        self, pyramid: list[torch.Tensor], boxes: torch.Tensor, index: torch.Tensor, threshold: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage 3: O-Net on 48x48 crops; threshold, landmarks, regress, NMS 0.7 on intersection-over-min."""
        prob, offsets, points = self.onet(_normalise(_crop_boxes(pyramid, index, boxes, 48)))
        passed = prob > threshold
        boxes, prob, offsets, points, index = boxes[passed], prob[passed], offsets[passed], points[passed], index[passed]
        size = (boxes[:, 2:] - boxes[:, :2])[:, None, :]
        landmarks = boxes[:, None, :2] + points * size
        boxes = _regress(boxes, offsets)
        keep = batched_nms(boxes, prob, index, 0.7, mode="min")
        return boxes[keep], prob[keep], index[keep], landmarks[keep]
