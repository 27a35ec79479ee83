"""Head pose (yaw, pitch, roll) from 68 landmarks, for the swap's pose error.

Why: a swap must keep the source's head pose. We fit a generic 3D face to a
rigid subset of the 68 iBUG landmarks with a small perspective PnP written in
numpy (a scaled-orthographic linear start, then Levenberg-Marquardt on the
pixel reprojection error), so the pose needs no OpenCV.

Angles are degrees, measured in the image's frame:
* yaw > 0: the nose points to the image's right;
* pitch > 0: the nose points up in the image (chin raised);
* roll > 0: the face is turned clockwise in the image.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputShapeError

# A generic adult face in millimetres. In-plane (x, y): the mean frontal shape
# of dlib's 68 landmarks on 99 LFW training photos, scaled to 62 mm between
# the eye centres (dlib's points sit on its own annotation convention, which
# is what we fit). Depth (z): average anthropometric proportions (nose tip
# ~20 mm in front of the nasion, ~30-42 mm in front of the eye corners).
# Axes as the camera's for a frontal face: x to the image's right, y down,
# z away from the camera; origin at the nose tip. Only rigid points: the jaw
# outline slides along the silhouette when the head turns and the brows and
# lower lip move with expression, so they are left out.
MODEL_POINTS: dict[int, tuple[float, float, float]] = {
    27: (0.0, -35.5, 20.0),    # nose bridge, top (nasion)
    28: (0.0, -24.0, 13.0),
    29: (0.0, -12.0, 6.0),
    30: (0.0, 0.0, 0.0),       # nose tip
    31: (-14.3, 9.7, 18.0),    # nostril wing, image left
    33: (0.0, 14.5, 12.0),     # nose base (subnasale)
    35: (14.3, 9.7, 18.0),
    36: (-42.8, -32.0, 42.0),  # outer eye corner, image left
    39: (-18.6, -32.0, 30.0),  # inner eye corner, image left
    42: (18.6, -32.0, 30.0),
    45: (42.8, -32.0, 42.0),
    48: (-28.2, 35.5, 28.0),   # mouth corner, image left
    54: (28.2, 35.5, 28.0),
}
MODEL_INDEX = np.array(sorted(MODEL_POINTS))
MODEL_3D = np.array([MODEL_POINTS[i] for i in MODEL_INDEX], dtype=np.float64)


def _size_hw(image_size: int | tuple[int, int]) -> tuple[float, float]:
    if isinstance(image_size, (int, np.integer)):
        return float(image_size), float(image_size)
    h, w = image_size
    return float(h), float(w)


def _camera(image_size: int | tuple[int, int]) -> tuple[float, np.ndarray]:
    """A generic camera: focal length = the longer image side, centre in the middle."""
    h, w = _size_hw(image_size)
    return max(h, w), np.array([w / 2.0, h / 2.0])


def _rodrigues(w: np.ndarray) -> np.ndarray:
    theta = float(np.linalg.norm(w))
    if theta < 1e-12:
        return np.eye(3)
    k = w / theta
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * (kx @ kx)


def _project(R: np.ndarray, t: np.ndarray, f: float, c: np.ndarray) -> np.ndarray:
    cam = MODEL_3D @ R.T + t
    return f * cam[:, :2] / cam[:, 2:3] + c


def _initial_pose(pts: np.ndarray, f: float, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scaled-orthographic fit: a linear 2x3 map from the model to the image, made a rotation."""
    x = (pts - c) / f
    X0 = MODEL_3D - MODEL_3D.mean(0)
    x0 = x - x.mean(0)
    A = np.linalg.lstsq(X0, x0, rcond=None)[0].T  # [2, 3]
    s = (np.linalg.norm(A[0]) + np.linalg.norm(A[1])) / 2.0
    M = np.vstack([A / s, np.cross(A[0], A[1]) / s**2])
    U, _, Vt = np.linalg.svd(M)
    R = U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))]) @ Vt
    tz = 1.0 / s
    t_xy = x.mean(0) * tz - (R @ MODEL_3D.mean(0))[:2]
    return R, np.array([t_xy[0], t_xy[1], tz - (R @ MODEL_3D.mean(0))[2]])


def solve_pose(landmarks68: np.ndarray, image_size: int | tuple[int, int],
               iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Rotation [3, 3] and translation [3] (mm) of the generic face; image_size is (H, W) or one int."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    if lm.shape != (68, 2):
        raise InputShapeError(f"head_pose needs 68 landmarks as [68, 2] pixel (x, y); got {lm.shape}.")
    pts = lm[MODEL_INDEX]
    f, c = _camera(image_size)
    R, t = _initial_pose(pts, f, c)

    def residual(p: np.ndarray) -> np.ndarray:
        return (_project(_rodrigues(p[:3]) @ R, t + p[3:], f, c) - pts).ravel()

    p = np.zeros(6)
    lam = 1e-3
    r = residual(p)
    for _ in range(iterations):
        J = np.empty((r.size, 6))
        for k in range(6):
            step = 1e-6 if k < 3 else 1e-4
            d = np.zeros(6)
            d[k] = step
            J[:, k] = (residual(p + d) - residual(p - d)) / (2 * step)
        H = J.T @ J
        g = J.T @ r
        dp = np.linalg.solve(H + lam * np.diag(np.diag(H) + 1e-12), -g)
        r_new = residual(p + dp)
        if r_new @ r_new < r @ r:
            p, r, lam = p + dp, r_new, lam * 0.3
            if np.linalg.norm(dp) < 1e-10:
                break
        else:
            lam *= 10.0
    return _rodrigues(p[:3]) @ R, t + p[3:]


def rotation_to_angles(R: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees; R = Ry(b) Rx(a) Rz(roll) with yaw = -b, pitch = -a."""
    fwd = -R[:, 2]  # where the nose points, in camera axes
    b = np.arctan2(-fwd[0], -fwd[2])
    a = np.arcsin(np.clip(fwd[1], -1.0, 1.0))
    cb, sb, ca, sa = np.cos(b), np.sin(b), np.cos(a), np.sin(a)
    Ry = np.array([[cb, 0, sb], [0, 1, 0], [-sb, 0, cb]])
    Rx = np.array([[1, 0, 0], [0, ca, -sa], [0, sa, ca]])
    Rz = (Ry @ Rx).T @ R
    roll = np.arctan2(Rz[1, 0], Rz[0, 0])
    return float(np.degrees(-b)), float(np.degrees(-a)), float(np.degrees(roll))


def head_pose(landmarks68: np.ndarray, image_size: int | tuple[int, int]) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of the face with these 68 landmarks; image_size is (H, W)."""
    R, _ = solve_pose(landmarks68, image_size)
    return rotation_to_angles(R)


def pose_error(src_lm: np.ndarray, out_lm: np.ndarray, size: int | tuple[int, int]) -> float:
    """Mean absolute difference (degrees) of yaw, pitch and roll between source and output faces."""
    a = np.array(head_pose(src_lm, size))
    b = np.array(head_pose(out_lm, size))
    d = (a - b + 180.0) % 360.0 - 180.0
    return float(np.mean(np.abs(d)))
