"""Fréchet distance between two sets of feature vectors (FID-style).

Why: besides per-pair identity and pose, a swapper is judged on how real its
outputs look as a set; the Fréchet distance between Gaussians fitted to real
and swapped features is the field's measure. We compute the matrix square
root term through symmetric eigen-decompositions only, which is stable where
`sqrtm` of a non-symmetric product can return complex noise, and a small
ridge keeps the covariances well-conditioned when there are fewer samples
than dimensions.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputShapeError


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _frechet(mu1: np.ndarray, sqrt1: np.ndarray, trace1: float, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """The distance with the first Gaussian given by its mean, covariance square root and trace."""
    middle = sqrt1 @ cov2 @ sqrt1
    w = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    cross = float(np.sqrt(np.clip(w, 0.0, None)).sum())
    d = float(((mu1 - mu2) ** 2).sum() + trace1 + np.trace(cov2) - 2.0 * cross)
    return max(d, 0.0)


def frechet_from_stats(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2) for Gaussians N(mu1, C1), N(mu2, C2)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    return _frechet(mu1, _psd_sqrt(cov1), float(np.trace(cov1)), mu2, cov2)


def feature_stats(feats: np.ndarray, ridge: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, plus `ridge` on the diagonal) of [N, D] features."""
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise InputShapeError(f"Fréchet distance needs features [N, D] with N >= 2; got {x.shape}.")
    mu = x.mean(0)
    c = x - mu
    cov = c.T @ c / (x.shape[0] - 1) + ridge * np.eye(x.shape[1])
    return mu, cov


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, ridge: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, D] and [M, D]."""
    a, b = np.asarray(feats_a), np.asarray(feats_b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise InputShapeError(f"Feature sets must be [N, D] and [M, D] with the same D; got {a.shape} and {b.shape}.")
    return frechet_from_stats(*feature_stats(a, ridge), *feature_stats(b, ridge))


class FrechetReference:
    """Fréchet distances from many feature sets to one fixed set (the real photos), whose statistics and
    covariance square root are computed once: a bootstrap takes thousands of distances to the same set."""

    def __init__(self, feats: np.ndarray, ridge: float = 1e-6) -> None:
        self.ridge = ridge
        self.mu, cov = feature_stats(feats, ridge)
        self.sqrt, self.trace = _psd_sqrt(cov), float(np.trace(cov))

    def __call__(self, feats: np.ndarray) -> float:
        return _frechet(self.mu, self.sqrt, self.trace, *feature_stats(feats, self.ridge))
