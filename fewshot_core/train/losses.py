"""Losses: identity cosine and perceptual features from FaceNet, hinge adversarial, feature matching, structure.

No VGG weights exist here, so perceptual features come from the recognition
network itself (its stem and first Inception-ResNet stages), on crops aligned
to FaceNet's own template.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..embed import FaceEmbedder
from ..embed.embedder import prewhiten
from ..parsing.classes import IGNORE_INDEX

# Class weights of the balanced structure loss are clipped to [1/_MAX_CLASS_WEIGHT, _MAX_CLASS_WEIGHT].
_MAX_CLASS_WEIGHT = 10.0


def facenet_features(embedder: FaceEmbedder, crops160: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Unit embeddings and three intermediate feature maps of aligned 160 px crops in [0, 1]."""
    raw, features = embedder.net.forward_features(prewhiten(crops160))
    return F.normalize(raw, dim=1), features


def identity_loss(embedding: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity, averaged."""
    return (1 - (F.normalize(embedding, dim=1) * F.normalize(target, dim=1)).sum(dim=1)).mean()


def perceptual_loss(features: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
    """Mean L1 between feature maps, each normalised by its own scale so no layer dominates."""
    total = torch.zeros((), device=features[0].device)
    for f, t in zip(features, targets):
        total = total + F.l1_loss(f, t) / (t.abs().mean().detach() + 1e-6)
    return total / len(features)


def _weighted_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return values.mean()
    weight = F.interpolate(weight, size=values.shape[-2:], mode="area")  # [B, 1, h, w] onto the logit grid
    return (values * weight).sum() / weight.expand_as(values).sum().clamp_min(1e-6)


def hinge_d_loss(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor],
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """Hinge loss of the patch logits; `weight` [B, 1, H, W] (e.g. the face region) weighs the patches."""
    return sum(_weighted_mean(F.relu(1 - r), weight) + _weighted_mean(F.relu(1 + f), weight)
               for r, f in zip(real_logits, fake_logits)) / len(real_logits)


def hinge_g_loss(fake_logits: list[torch.Tensor], weight: torch.Tensor | None = None) -> torch.Tensor:
    return sum(-_weighted_mean(f, weight) for f in fake_logits) / len(fake_logits)


def feature_matching_loss(fake_feats: list[list[torch.Tensor]], real_feats: list[list[torch.Tensor]]) -> torch.Tensor:
    total, count = 0.0, 0
    for fake_scale, real_scale in zip(fake_feats, real_feats):
        for f, r in zip(fake_scale, real_scale):
            total = total + F.l1_loss(f, r.detach())
            count += 1
    return total / max(count, 1)


def structure_loss(logits: torch.Tensor, class_maps: torch.Tensor, balance: float = 0.0) -> torch.Tensor:
    """Cross-entropy of the frozen parser's logits on an output against its source's class map.

    Why `balance`: unweighted, skin and background own almost every pixel, so a brow drawn a few pixels
    too high or a nose drawn too long costs nearly nothing, yet those are what landmark-based expression
    error sees. With balance p > 0 each class present in the batch is weighted (freq / median freq) ** -p,
    clipped to [0.1, 10], as in the parser's own training; 0 is plain cross-entropy.
    """
    weight = None
    if balance > 0:
        n = logits.shape[1]
        valid = class_maps != IGNORE_INDEX
        counts = torch.bincount(class_maps[valid].flatten(), minlength=n)[:n].float()
        present = counts > 0
        weight = torch.ones(n, device=logits.device)
        if bool(present.any()):
            freq = counts[present] / counts.sum()
            weight[present] = ((freq / freq.median()) ** (-balance)).clamp(1 / _MAX_CLASS_WEIGHT, _MAX_CLASS_WEIGHT)
    return F.cross_entropy(logits, class_maps, weight=weight, ignore_index=IGNORE_INDEX)
