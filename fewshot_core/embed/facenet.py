"""Inception-ResNet-v1 as in David Sandberg's FaceNet (20170512-110547), in plain PyTorch.

The same trunk serves the 512-D 2018 model (`convert512.py`, evaluation only):
only the bottleneck width (`embedding_dim`) differs.

Inference-only layout: every conv's BatchNorm (scale-less, eps 1e-3) is folded
into the conv's weight and bias by `convert.py`, and the bottleneck BatchNorm is
folded into `last_linear`, so the module holds exactly the arithmetic the Keras
graph does in inference mode. Dropout (identity at inference) is left out.
Every branch is an `nn.Sequential` so that weight names follow one rule
(`<block>.branch<N>.<rank of the Keras sub-layer tag>`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..state_check import state_dict_mismatch
from ..errors import WeightsMismatchError

EMBEDDING_DIM = 128  # the generator's identity model
EMBEDDING_DIM_512 = 512  # the evaluation's FaceNet-512 (same trunk, wider bottleneck)
INPUT_SIZE = 160


class ConvReLU(nn.Conv2d):
    """Conv with its BatchNorm folded into weight and bias, then ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1, same: bool = False):
        k = (kernel, kernel) if isinstance(kernel, int) else kernel
        # TF 'same' with stride 1 and odd kernels is symmetric; every strided conv here is 'valid'.
        padding = (k[0] // 2, k[1] // 2) if same else (0, 0)
        super().__init__(cin, cout, k, stride=stride, padding=padding, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(super().forward(x))


class Block35(nn.Module):
    """Inception-ResNet-A at 17x17 (256 channels), residual scale 0.17."""

    def __init__(self, scale: float = 0.17):
        super().__init__()
        self.scale = scale
        self.branch0 = nn.Sequential(ConvReLU(256, 32, 1))
        self.branch1 = nn.Sequential(ConvReLU(256, 32, 1), ConvReLU(32, 32, 3, same=True))
        self.branch2 = nn.Sequential(
            ConvReLU(256, 32, 1), ConvReLU(32, 32, 3, same=True), ConvReLU(32, 32, 3, same=True)
        )
        self.conv2d = nn.Conv2d(96, 256, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([self.branch0(x), self.branch1(x), self.branch2(x)], dim=1)
        return F.relu(x + self.scale * self.conv2d(mixed))


class Block17(nn.Module):
    """Inception-ResNet-B at 8x8 (896 channels), residual scale 0.1."""

    def __init__(self, scale: float = 0.1):
        super().__init__()
        self.scale = scale
        self.branch0 = nn.Sequential(ConvReLU(896, 128, 1))
        self.branch1 = nn.Sequential(
            ConvReLU(896, 128, 1), ConvReLU(128, 128, (1, 7), same=True), ConvReLU(128, 128, (7, 1), same=True)
        )
        self.conv2d = nn.Conv2d(256, 896, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([self.branch0(x), self.branch1(x)], dim=1)
        return F.relu(x + self.scale * self.conv2d(mixed))


class Block8(nn.Module):
    """Inception-ResNet-C at 3x3 (1792 channels); the last one has scale 1 and no ReLU."""

    def __init__(self, scale: float = 0.2, relu: bool = True):
        super().__init__()
        self.scale = scale
        self.relu = relu
        self.branch0 = nn.Sequential(ConvReLU(1792, 192, 1))
        self.branch1 = nn.Sequential(
            ConvReLU(1792, 192, 1), ConvReLU(192, 192, (1, 3), same=True), ConvReLU(192, 192, (3, 1), same=True)
        )
        self.conv2d = nn.Conv2d(384, 1792, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([self.branch0(x), self.branch1(x)], dim=1)
        out = x + self.scale * self.conv2d(mixed)
        return F.relu(out) if self.relu else out


class Mixed6a(nn.Module):
    """Reduction-A: 17x17x256 -> 8x8x896."""

    def __init__(self):
        super().__init__()
        self.branch0 = nn.Sequential(ConvReLU(256, 384, 3, stride=2))
        self.branch1 = nn.Sequential(
            ConvReLU(256, 192, 1), ConvReLU(192, 192, 3, same=True), ConvReLU(192, 256, 3, stride=2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), F.max_pool2d(x, 3, 2)], dim=1)


class Mixed7a(nn.Module):
    """Reduction-B: 8x8x896 -> 3x3x1792."""

    def __init__(self):
        super().__init__()
        self.branch0 = nn.Sequential(ConvReLU(896, 256, 1), ConvReLU(256, 384, 3, stride=2))
        self.branch1 = nn.Sequential(ConvReLU(896, 256, 1), ConvReLU(256, 256, 3, stride=2))
        self.branch2 = nn.Sequential(
            ConvReLU(896, 256, 1), ConvReLU(256, 256, 3, same=True), ConvReLU(256, 256, 3, stride=2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), F.max_pool2d(x, 3, 2)], dim=1)


class InceptionResnetV1(nn.Module):
    """FaceNet trunk: standardised [B,3,160,160] RGB -> raw (not normalised) [B,embedding_dim] embedding."""

    def __init__(self, embedding_dim: int = EMBEDDING_DIM):
        super().__init__()
        self.conv2d_1a = ConvReLU(3, 32, 3, stride=2)
        self.conv2d_2a = ConvReLU(32, 32, 3)
        self.conv2d_2b = ConvReLU(32, 64, 3, same=True)
        self.conv2d_3b = ConvReLU(64, 80, 1)
        self.conv2d_4a = ConvReLU(80, 192, 3)
        self.conv2d_4b = ConvReLU(192, 256, 3, stride=2)
        self.repeat_1 = nn.Sequential(*[Block35() for _ in range(5)])
        self.mixed_6a = Mixed6a()
        self.repeat_2 = nn.Sequential(*[Block17() for _ in range(10)])
        self.mixed_7a = Mixed7a()
        self.repeat_3 = nn.Sequential(*[Block8() for _ in range(5)])
        self.block8 = Block8(scale=1.0, relu=False)
        self.last_linear = nn.Linear(1792, embedding_dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The raw (unnormalised) embedding and three early feature maps (stem, after 4b, after the
        Inception-ResNet-A stage): the trainer's perceptual features, since no VGG weights exist here."""
        x = self.conv2d_2b(self.conv2d_2a(self.conv2d_1a(x)))
        f1 = x
        x = F.max_pool2d(x, 3, 2)
        x = self.conv2d_4b(self.conv2d_4a(self.conv2d_3b(x)))
        f2 = x
        x = self.repeat_1(x)
        f3 = x
        x = self.mixed_6a(x)
        x = self.repeat_2(x)
        x = self.mixed_7a(x)
        x = self.block8(self.repeat_3(x))
        return self.last_linear(x.mean(dim=(2, 3))), [f1, f2, f3]


def check_state_dict(state: dict[str, torch.Tensor], source: str, embedding_dim: int = EMBEDDING_DIM) -> None:
    """Raise WeightsMismatchError unless `state` has exactly the module's keys and shapes."""
    problem = state_dict_mismatch(InceptionResnetV1(embedding_dim), state)
    if problem:
        raise WeightsMismatchError(
            f"{source} does not fit FaceNet Inception-ResNet-v1: {problem}. "
            "Re-create it with: python -m fewshot_core.models fetch --force"
        )
