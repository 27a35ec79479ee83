"""`ParserStructureMapper`: the trained face parser as the generator's structure source.

It implements `fewshot_core.structure.StructureMapper`: aligned crops in, a soft
map of the 12 parsing classes out (softmax, so it sums to 1 at every pixel).
The 5 landmarks are not needed: the parser sees the pixels. Crops of another
side than the parser's training resolution are resized to it and the logits
resized back, because the parser learned the face at that scale.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputShapeError, WeightsMismatchError
from ..paths import weights_dir
from .classes import CLASS_INDEX, PARSE_CLASSES
from .network import FaceParser, fuse_batchnorm, iris_centres_from_probs, load_parser

DEFAULT_PARSER = "parser_128.safetensors"


def default_parser_path() -> Path:
    """The parser weights shipped in the repository's weights/ folder."""
    return weights_dir() / DEFAULT_PARSER


class ParserStructureMapper:
    """StructureMapper backed by `FaceParser`; `name` = "parser", channels = PARSE_CLASSES."""

    name = "parser"
    channels: Sequence[str] = tuple(PARSE_CLASSES)

    def __init__(self, parser: FaceParser) -> None:
        if tuple(parser.classes) != tuple(PARSE_CLASSES):
            raise WeightsMismatchError(
                f"the parser predicts classes {list(parser.classes)}, expected {PARSE_CLASSES}; "
                "load a parser trained on the current class list."
            )
        # BatchNorm folded and channels_last: together ~1.5x faster on CPU at batch 1.
        self.parser = fuse_batchnorm(parser.eval()).to(memory_format=torch.channels_last)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> "ParserStructureMapper":
        return cls(load_parser(path, device))

    @classmethod
    def from_default(cls, device: str | torch.device = "cpu") -> "ParserStructureMapper":
        """The shipped parser (weights/parser_128.safetensors)."""
        return cls.from_file(default_parser_path(), device)

    @property
    def device(self) -> torch.device:
        return next(self.parser.parameters()).device

    def logits(self, crops: Tensor) -> Tensor:
        """Class logits [B,12,R,R] for crops [B,3,R,R] in [0,1] (float32, on the crops' device)."""
        if crops.ndim != 4 or crops.shape[1] != 3 or crops.shape[2] != crops.shape[3]:
            raise InputShapeError(
                f"crops must have shape [B, 3, R, R], got {list(crops.shape)}; pass aligned square crops."
            )
        side = crops.shape[-1]
        train_side = self.parser.config.resolution
        x = crops.to(device=self.device, dtype=torch.float32)
        if side != train_side:
            x = F.interpolate(x, size=(train_side, train_side), mode="bilinear", align_corners=False,
                              antialias=side > train_side)
        # no_grad, not inference_mode: a trainer may feed these maps into layers that need their
        # inputs saved for backward, which inference tensors refuse.
        with torch.no_grad():
            out = self.parser(x.contiguous(memory_format=torch.channels_last))
            if self.parser.class_bias is not None:  # calibrated borders (`parsing/calibrate.py`)
                out = out + self.parser.class_bias.to(out)[None, :, None, None]
        if side != train_side:
            out = F.interpolate(out, size=(side, side), mode="bilinear", align_corners=False)
        return out.contiguous().to(crops.device)

    def __call__(self, crops: Tensor, landmarks_in_crop: Tensor | None = None) -> Tensor:
        """Soft class maps [B,12,R,R] summing to 1 per pixel; `landmarks_in_crop` is accepted and unused."""
        if landmarks_in_crop is not None and landmarks_in_crop.shape[0] != crops.shape[0]:
            raise InputShapeError(
                f"crops hold {crops.shape[0]} faces but landmarks_in_crop holds {landmarks_in_crop.shape[0]}; "
                "pass one set of 5 landmarks per crop."
            )
        probs = torch.softmax(self.logits(crops), dim=1)
        dtype = crops.dtype if crops.is_floating_point() else torch.float32
        return probs.to(dtype)

    def iris_centres(self, crops: Tensor) -> Tensor:
        """Iris centres [B,2,2] (x, y crop px; the iris on the image's left first), centroid of each iris class."""
        probs = torch.softmax(self.logits(crops).float(), dim=1)
        k = CLASS_INDEX
        return iris_centres_from_probs(probs, k["iris_l"], k["iris_r"], k["eye_l"], k["eye_r"])
