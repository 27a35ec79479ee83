"""Normalisation layers that inject identity (AdaIN) and structure (SPADE).

Both sit on a parameter-free instance norm, so they work the same for a batch
of one at inference as for a training batch. Their modulations start at zero
(scale 1, shift 0) so a fresh network is a plain conv net until trained.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_SLOPE = 0.2


def _instance_norm(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Param-free instance norm, computed in float32 so bfloat16 stays accurate."""
    xf = x.float()
    mean = xf.mean(dim=(2, 3), keepdim=True)
    var = xf.var(dim=(2, 3), keepdim=True, unbiased=False)
    return ((xf - mean) * torch.rsqrt(var + eps)).to(x.dtype)


def resize_structure(structure: Tensor, size: tuple[int, int]) -> Tensor:
    """Structure map at a feature size: area average when shrinking (keeps it a partition of unity)."""
    if tuple(structure.shape[-2:]) == tuple(size):
        return structure
    if structure.shape[-2] >= size[0] and structure.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(structure, size)
    return F.interpolate(structure, size=size, mode="bilinear", align_corners=False)


class AdaIN(nn.Module):
    """Instance norm whose per-channel scale/shift come from a style vector (the identity code)."""

    def __init__(self, channels: int, style_dim: int) -> None:
        super().__init__()
        self.affine = nn.Linear(style_dim, 2 * channels)
        nn.init.zeros_(self.affine.weight)
        nn.init.zeros_(self.affine.bias)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        gamma, beta = self.affine(style).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return _instance_norm(x) * (1 + gamma) + beta


class SPADE(nn.Module):
    """Instance norm with per-pixel scale/shift predicted from the structure map.

    With `style_dim`, the identity code adds a per-channel scale/shift on top,
    so identity also reaches the decoder (AdaIN and SPADE in one layer).
    """

    def __init__(self, channels: int, struct_channels: int, hidden: int, style_dim: int | None = None) -> None:
        super().__init__()
        self.shared = nn.Sequential(nn.Conv2d(struct_channels, hidden, 3, padding=1), nn.ReLU())
        self.gamma_beta = nn.Conv2d(hidden, 2 * channels, 3, padding=1)
        nn.init.zeros_(self.gamma_beta.weight)
        nn.init.zeros_(self.gamma_beta.bias)
        self.style = None
        if style_dim is not None:
            self.style = nn.Linear(style_dim, 2 * channels)
            nn.init.zeros_(self.style.weight)
            nn.init.zeros_(self.style.bias)

    def modulation(self, structure: Tensor, size: tuple[int, int]) -> Tensor:
        """Per-pixel (gamma, beta) [B, 2C, h, w] from the structure map alone: no identity in it, so a
        caller that renders one source under several identity codes computes it once."""
        return self.gamma_beta(self.shared(resize_structure(structure, size)))

    def forward(self, x: Tensor, structure: Tensor | None, style: Tensor | None = None,
                modulation: Tensor | None = None) -> Tensor:
        """`modulation`, when given, is `self.modulation(structure, x's size)` computed earlier."""
        if modulation is None:
            modulation = self.modulation(structure, (x.shape[-2], x.shape[-1]))
        gamma, beta = modulation.chunk(2, dim=1)
        if self.style is not None and style is not None:
            g, b = self.style(style).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
            gamma, beta = gamma + g, beta + b
        return _instance_norm(x) * (1 + gamma) + beta


class AdaINResBlock(nn.Module):
    """Pre-activation residual block (AdaIN -> act -> conv, twice) for the bottleneck."""

    def __init__(self, channels: int, style_dim: int) -> None:
        super().__init__()
        self.norm1 = AdaIN(channels, style_dim)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = AdaIN(channels, style_dim)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        dx = self.conv1(F.leaky_relu(self.norm1(x, style), _SLOPE))
        dx = self.conv2(F.leaky_relu(self.norm2(dx, style), _SLOPE))
        return x + dx


class SPADEResBlock(nn.Module):
    """Pre-activation residual block with SPADE norms; a 1x1 shortcut when the width changes."""

    def __init__(self, in_channels: int, out_channels: int, struct_channels: int, hidden: int,
                 style_dim: int | None = None) -> None:
        super().__init__()
        mid = min(in_channels, out_channels)
        self.norm1 = SPADE(in_channels, struct_channels, min(hidden, in_channels), style_dim)
        self.conv1 = nn.Conv2d(in_channels, mid, 3, padding=1)
        self.norm2 = SPADE(mid, struct_channels, min(hidden, mid), style_dim)
        self.conv2 = nn.Conv2d(mid, out_channels, 3, padding=1)
        self.shortcut = (nn.Conv2d(in_channels, out_channels, 1, bias=False)
                         if in_channels != out_channels else nn.Identity())

    def modulations(self, structure: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Both norms' structure modulations at this block's size (see `SPADE.modulation`)."""
        return self.norm1.modulation(structure, size), self.norm2.modulation(structure, size)

    def forward(self, x: Tensor, structure: Tensor | None, style: Tensor | None = None,
                modulations: tuple[Tensor, Tensor] | None = None) -> Tensor:
        m1, m2 = modulations if modulations is not None else (None, None)
        dx = self.conv1(F.leaky_relu(self.norm1(x, structure, style, m1), _SLOPE))
        dx = self.conv2(F.leaky_relu(self.norm2(dx, structure, style, m2), _SLOPE))
        return self.shortcut(x) + dx
