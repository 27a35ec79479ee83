"""Multi-scale patch discriminator with spectral norm; returns features for feature matching."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm


class PatchDiscriminator(nn.Module):
    """A PatchGAN: strided convs down to a grid of real/fake logits."""

    def __init__(self, in_channels: int = 3, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = in_channels
        for i in range(layers):
            out = channels * 2 ** min(i, 3)
            blocks.append(nn.Sequential(spectral_norm(nn.Conv2d(width, out, 4, 2, 1)), nn.LeakyReLU(0.2, True)))
            width = out
        blocks.append(nn.Sequential(spectral_norm(nn.Conv2d(width, width, 3, 1, 1)), nn.LeakyReLU(0.2, True)))
        self.blocks = nn.ModuleList(blocks)
        self.head = spectral_norm(nn.Conv2d(width, 1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return self.head(x), features


class MultiScaleDiscriminator(nn.Module):
    """The same patch discriminator at full and half resolution (fine texture and overall face)."""

    def __init__(self, scales: int = 2, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        self.scales = nn.ModuleList(PatchDiscriminator(3, channels, layers) for _ in range(scales))

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        outputs = []
        for i, disc in enumerate(self.scales):
            if i:
                x = F.avg_pool2d(x, 2)
            outputs.append(disc(x * 2 - 1))
        return outputs
