"""Scores of one swap output (identity rank, distances, pose, expression, gaze) and a table row of many.

Why apart from the run: the scoring rules are what a reader checks when a number looks odd,
and the tests exercise them without rendering any swap.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .analysis import Analysis, Gallery, Reference, unit_vector
from .expression import LANDMARK_REGIONS, gaze_error, landmark_errors, region_means
from .frechet import frechet_distance


@dataclass(frozen=True)
class Score:
    """One output judged against its source and target (None where no face was found)."""

    detected: bool
    rank: int | None = None
    cos_tgt: float | None = None
    cos_src: float | None = None
    dist_tgt: float | None = None
    dist_src: float | None = None
    pose_deg: float | None = None
    expr: float | None = None
    gaze: float | None = None
    feature: np.ndarray | None = None
    failed: bool = False
    expr_regions: dict[str, float] | None = None


def pose_difference(a: Analysis, b: Analysis) -> float | None:
    """Mean |yaw, pitch, roll| difference in degrees (each face posed in its own image size)."""
    pa, pb = a.pose(), b.pose()
    if pa is None or pb is None:
        return None
    d = (np.array(pa) - np.array(pb) + 180.0) % 360.0 - 180.0
    return float(np.mean(np.abs(d)))


def score_output(out: Analysis, source: Analysis, gallery: Gallery, target: str,
                 source_ref: Reference, failed: bool = False) -> Score:
    """Identity (vs the gallery), attributes (vs the source face) and realism feature of one output."""
    if out.face is None:
        return Score(False, failed=failed)
    d = out.face.descriptor
    tgt = gallery[target]
    gaze = pose = expr = regions = None
    if source.face is not None:
        if out.iris is not None and source.iris is not None:
            gaze = gaze_error(source.face.landmarks, source.iris, out.face.landmarks, out.iris)
        pose = pose_difference(source, out)
        errors = landmark_errors(source.face.landmarks, out.face.landmarks)
        expr, regions = float(errors.mean()), region_means(errors)
    return Score(
        True, gallery.rank(d, target),
        float(unit_vector(d) @ tgt.unit), float(unit_vector(d) @ source_ref.unit),
        float(np.linalg.norm(d - tgt.mean)), float(np.linalg.norm(d - source_ref.mean)),
        pose, expr, gaze, out.feature, failed, regions)


def _mean(values: Sequence[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def summarise(method: str, k: int | None, scores: Sequence[Score], real_features: np.ndarray | None,
              **extra: object) -> dict:
    """One table row: rates over all outputs, means over the detected ones, realism over the set."""
    n = len(scores)
    ranks = [s.rank for s in scores]
    feats = [s.feature for s in scores if s.feature is not None]
    fd = None
    if real_features is not None and len(feats) >= 2 and len(real_features) >= 2:
        fd = frechet_distance(np.stack(feats), real_features)
    return {
        "method": method, "k": k, "n": n, **extra,
        "detected": sum(s.detected for s in scores) / n if n else None,
        "failed": sum(s.failed for s in scores),
        "top1": sum(r == 1 for r in ranks if r is not None) / n if n else None,
        "top5": sum(r <= 5 for r in ranks if r is not None) / n if n else None,
        **{key: _mean([getattr(s, key) for s in scores])
           for key in ("cos_tgt", "cos_src", "dist_tgt", "dist_src", "pose_deg", "expr", "gaze")},
        **{f"expr_{region}": _mean([s.expr_regions[region] if s.expr_regions else None for s in scores])
           for region in LANDMARK_REGIONS},
        "fd": fd,
    }
