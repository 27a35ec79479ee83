"""Steadier face alignment across video frames: a One-Euro filter on each tracked face's landmarks.

Why: MTCNN's five points move by a few pixels from frame to frame even when the face does not
(on a still photo cropped one pixel differently, or mirrored, they shift by 2-5% of the eye
distance). The crop, and so the generated face, follows that jitter, and a swapped video wobbles.
The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) smooths hard while a face is slow and
lets fast movement through with little lag. Speeds are measured in eye distances per frame, so
one setting behaves the same at any resolution.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .errors import InputShapeError

# smoothing 0..1 -> the filter's cutoff at rest, in cycles per frame (1 = a light touch, 0.02 = heavy)
_REST_CUTOFF_LIGHT, _REST_CUTOFF_HEAVY = 1.0, 0.02
_SPEED_GAIN = 4.0         # cutoff added per eye distance per frame of movement (the filter's beta)
_DERIVATIVE_CUTOFF = 0.3  # cycles per frame, for the speed estimate itself
_MATCH_RADIUS = 0.5       # a face continues a track when its eye centre moved less than this x eye distance


def _alpha(cutoff: torch.Tensor | float) -> torch.Tensor | float:
    """Exponential smoothing factor for a cutoff in cycles per frame (frame interval 1)."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau)


def rest_cutoff(smoothing: float) -> float:
    """Cutoff at rest for a user-facing smoothing in 0..1 (log-spaced: equal steps feel equal)."""
    return _REST_CUTOFF_LIGHT * (_REST_CUTOFF_HEAVY / _REST_CUTOFF_LIGHT) ** smoothing


def _eye_distance(landmarks: torch.Tensor) -> torch.Tensor:
    """[N] distance between the eye landmarks of [N, 5, 2] faces (at least 1 px)."""
    return (landmarks[:, 1] - landmarks[:, 0]).norm(dim=-1).clamp(min=1.0)


@dataclass
class _Track:
    points: torch.Tensor    # [5, 2] filtered landmarks
    velocity: torch.Tensor  # [5, 2] filtered speed, px per frame
    memo: dict = field(default_factory=dict)  # what the swap keeps along this face's track (its refined code)


@dataclass
class LandmarkStabiliser:
    """Filters the landmarks of faces seen frame after frame; call it once per frame, in order.

    Faces are matched to the previous frame's by eye-centre distance; an unmatched face starts a
    fresh track (no smoothing across a cut or between unrelated images), and tracks not seen in a
    frame end. `smoothing` 0 returns the landmarks unchanged.
    """

    smoothing: float = 0.5
    _tracks: list[_Track] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.smoothing <= 1.0:
            raise InputShapeError(f"Temporal smoothing must be within 0..1, got {self.smoothing}.")

    def __call__(self, landmarks: torch.Tensor) -> torch.Tensor:
        """Filtered copy of one frame's landmarks [N, 5, 2] (pixel x, y)."""
        if landmarks.ndim != 3 or landmarks.shape[1:] != (5, 2):
            raise InputShapeError(f"landmarks must have shape [N, 5, 2], got {list(landmarks.shape)}.")
        points = landmarks.detach().float().cpu()
        matches = self._match(points)
        out, tracks = points.clone(), []
        for i, track in enumerate(matches):
            if track is None:
                track = _Track(points[i].clone(), torch.zeros(5, 2))
            elif self.smoothing == 0.0:
                track = _Track(points[i].clone(), torch.zeros(5, 2), track.memo)
            else:
                track = self._step(track, points[i])
            out[i] = track.points
            tracks.append(track)
        self._tracks = tracks
        return landmarks if self.smoothing == 0.0 else out.to(landmarks)

    def memos(self) -> list[dict]:
        """One dict per face of the last frame, in its order; a face that continues a track gets the same
        dict as in the frames before, a new face an empty one."""
        return [track.memo for track in self._tracks]

    def _match(self, points: torch.Tensor) -> list[_Track | None]:
        """For each face, the previous frame's track it continues (greedy, nearest first) or None."""
        if not self._tracks or points.shape[0] == 0:
            return [None] * points.shape[0]
        centres = points[:, :2].mean(dim=1)                                        # [N, 2]
        previous = torch.stack([t.points[:2].mean(dim=0) for t in self._tracks])  # [T, 2]
        dist = torch.cdist(centres, previous) / _eye_distance(points)[:, None]
        matches: list[_Track | None] = [None] * points.shape[0]
        taken: set[int] = set()
        for flat in torch.argsort(dist.flatten()).tolist():
            i, j = divmod(flat, len(self._tracks))
            if dist[i, j] > _MATCH_RADIUS:
                break
            if matches[i] is None and j not in taken:
                matches[i] = self._tracks[j]
                taken.add(j)
        return matches

    def _step(self, track: _Track, observed: torch.Tensor) -> _Track:
        """One One-Euro update: the speed sets the cutoff, the cutoff sets how far to follow."""
        velocity = observed - track.points
        a_d = _alpha(_DERIVATIVE_CUTOFF)
        velocity = a_d * velocity + (1 - a_d) * track.velocity
        speed = velocity.norm(dim=-1, keepdim=True) / _eye_distance(observed[None])[0]  # eye distances per frame
        a = _alpha(rest_cutoff(self.smoothing) + _SPEED_GAIN * speed)
        return _Track(a * observed + (1 - a) * track.points, velocity, track.memo)
