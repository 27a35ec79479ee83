"""The face-parsing renderer on a hand-built 478-point landmark set (no MediaPipe needed).

The synthetic face: oval centred at (64, 64); eyes are ellipses at (44, 50) and
(84, 50); irises at the eye centres; brows are bands above the eyes; the nose a
triangle between and below the eyes; lips two arcs around y=90 with a gap between
them for the inner mouth.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from fewshot_core.errors import InputShapeError
from fewshot_core.parsing import classes as C
from fewshot_core.parsing.render import (
    convex_hull, iris_centres, iris_radii, polygon_mask, render_class_map, render_class_maps,
)

SIZE = 128
K = C.CLASS_INDEX


def _ellipse(n: int, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def _arc(n: int, x0: float, x1: float, y: float, bulge: float) -> np.ndarray:
    t = np.linspace(0, 1, n)
    return np.stack([x0 + (x1 - x0) * t, y + bulge * np.sin(np.pi * t)], 1)


def synthetic_face(iris_r_radius: float = 3.0) -> np.ndarray:
    lm = np.full((C.N_MESH_LANDMARKS, 2), 64.0)  # unused points: anywhere
    lm[C.FACE_OVAL] = _ellipse(len(C.FACE_OVAL), 64, 64, 40, 52)
    lm[C.EYE_L] = _ellipse(len(C.EYE_L), 44, 50, 9, 4)
    lm[C.EYE_R] = _ellipse(len(C.EYE_R), 84, 50, 9, 4)
    for centre, rim, (cx, cy), r in ((C.IRIS_L_CENTRE, C.IRIS_L_RIM, (44, 50), 3.0),
                                     (C.IRIS_R_CENTRE, C.IRIS_R_RIM, (84, 50), iris_r_radius)):
        lm[centre] = (cx, cy)
        lm[rim] = [(cx + r, cy), (cx, cy - r), (cx - r, cy), (cx, cy + r)]
    # Brows: upper edge y=38, lower edge y=40.5, outer end first (as in the mesh).
    lm[C.BROW_L_UPPER] = np.stack([np.linspace(34, 54, 5), np.full(5, 38.0)], 1)
    lm[C.BROW_L_LOWER] = np.stack([np.linspace(34, 54, 5), np.full(5, 40.5)], 1)
    lm[C.BROW_R_UPPER] = np.stack([np.linspace(94, 74, 5), np.full(5, 38.0)], 1)
    lm[C.BROW_R_LOWER] = np.stack([np.linspace(94, 74, 5), np.full(5, 40.5)], 1)
    # Nose: every hull point on the triangle (64,46)-(56,72)-(72,72).
    tri = np.array([(64, 46), (56, 72), (72, 72)], dtype=float)
    lm[C.NOSE_HULL_POINTS] = tri[np.arange(len(C.NOSE_HULL_POINTS)) % 3]
    # Lips, left corner to right corner; upper lip bulges up, lower lip down.
    lm[C.LIPS_OUTER_UPPER] = _arc(len(C.LIPS_OUTER_UPPER), 48, 80, 89, -5)
    lm[C.LIPS_INNER_UPPER] = _arc(len(C.LIPS_INNER_UPPER), 50, 78, 89, -1)
    lm[C.LIPS_INNER_LOWER] = _arc(len(C.LIPS_INNER_LOWER), 50, 78, 91, 1)
    lm[C.LIPS_OUTER_LOWER] = _arc(len(C.LIPS_OUTER_LOWER), 48, 80, 91, 5)
    return lm


def test_class_list():
    assert len(C.PARSE_CLASSES) == 12 == C.NUM_CLASSES
    assert C.PARSE_CLASSES[0] == "background"
    assert len(set(C.PARSE_CLASSES)) == 12


def test_flip_permutation_swaps_left_and_right_only():
    perm = C.FLIP_PERMUTATION
    assert sorted(perm) == list(range(C.NUM_CLASSES))
    assert [perm[p] for p in perm] == list(range(C.NUM_CLASSES))
    assert perm[K["brow_l"]] == K["brow_r"] and perm[K["iris_r"]] == K["iris_l"]
    assert perm[K["nose"]] == K["nose"] and perm[K["skin"]] == K["skin"]


def test_landmark_lists_are_valid_mesh_indices():
    lists = [C.FACE_OVAL, C.BROW_L, C.BROW_R, C.EYE_L, C.EYE_R, C.IRIS_L_RIM, C.IRIS_R_RIM,
             C.LIP_UPPER, C.LIP_LOWER, C.MOUTH_INNER, C.NOSE_HULL_POINTS]
    for idx in lists:
        assert all(0 <= i < C.N_MESH_LANDMARKS for i in idx)
        assert len(set(idx)) == len(idx)  # a polygon never visits a point twice
    assert not set(C.EYE_L) & set(C.EYE_R)
    assert not set(C.BROW_L) & set(C.BROW_R)


@pytest.mark.parametrize(
    "xy, name",
    [
        ((44, 50), "iris_l"),
        ((84, 50), "iris_r"),
        ((37, 50), "eye_l"),      # inside the eye opening, outside the iris disc
        ((91, 50), "eye_r"),
        ((44, 39), "brow_l"),
        ((84, 39), "brow_r"),
        ((64, 50), "nose"),       # between the eyes
        ((64, 65), "nose"),
        ((64, 78), "skin"),       # between nose and mouth
        ((30, 70), "skin"),
        ((64, 85), "lip_upper"),
        ((64, 95), "lip_lower"),
        ((64, 90), "mouth_inner"),
        ((5, 5), "background"),   # outside the oval
        ((64, 124), "background"),
        ((22, 64), "background"),
    ],
)
def test_render_probes(xy, name):
    cm = render_class_map(synthetic_face(), SIZE)
    assert cm.shape == (SIZE, SIZE) and cm.dtype == np.uint8
    x, y = xy
    assert C.PARSE_CLASSES[cm[y, x]] == name


def test_iris_is_clipped_to_the_eye_opening():
    cm = render_class_map(synthetic_face(iris_r_radius=6.0), SIZE)
    assert cm[50, 89] == K["iris_r"]       # 5 px right of centre: in disc and eye
    assert cm[45, 84] == K["skin"]         # 5 px above centre: in disc, above the lid
    assert cm[50, 92] == K["eye_r"]        # in the eye, outside the disc


def test_brow_thickening_moves_only_the_lower_edge():
    lm = synthetic_face()
    thick = render_class_map(lm, SIZE)              # lower edge at 38 + 1.3 * 2.5 = 41.25
    thin = render_class_map(lm, SIZE, brow_thicken=1.0)
    assert thick[41, 44] == K["brow_l"] and thin[41, 44] == K["skin"]
    assert thick[37, 44] == thin[37, 44] == K["skin"]


def test_iris_centres_and_radii():
    lm = synthetic_face(iris_r_radius=5.0)
    np.testing.assert_allclose(iris_centres(lm), [[44, 50], [84, 50]])
    np.testing.assert_allclose(iris_radii(lm), [3.0, 5.0])
    batch = np.stack([lm, lm + [10, -2]])
    lm3 = np.concatenate([batch, np.zeros((2, C.N_MESH_LANDMARKS, 1))], -1)  # z column is ignored
    np.testing.assert_allclose(iris_centres(lm3), [[[44, 50], [84, 50]], [[54, 48], [94, 48]]])


def test_shifted_landmarks_shift_the_map():
    lm = synthetic_face()
    a = render_class_map(lm, SIZE)
    b = render_class_map(lm + [5, 3], SIZE)
    np.testing.assert_array_equal(b[3:, 5:], a[:-3, :-5])


def test_mirrored_landmarks_mirror_the_map():
    lm = synthetic_face()
    lm[:, 0] += 0.25  # no vertical edge on a pixel centre, where inside/outside is a tie
    mirrored = lm.copy()
    mirrored[:, 0] = (SIZE - 1) - lm[:, 0]
    a = render_class_map(lm, SIZE)
    b = render_class_map(mirrored, SIZE)
    # The same point indices land mirrored, so the classes stay with their indices.
    np.testing.assert_array_equal(b[:, ::-1], a)


def test_polygon_mask_matches_area_and_concavity():
    square = np.array([(10.5, 10.5), (20.5, 10.5), (20.5, 20.5), (10.5, 20.5)])
    m = polygon_mask(square, 32)
    assert m.sum() == 100 and m[11:21, 11:21].all()
    # An L shape: the notch must stay empty.
    ell = np.array([(2.5, 2.5), (12.5, 2.5), (12.5, 6.5), (6.5, 6.5), (6.5, 12.5), (2.5, 12.5)])
    m = polygon_mask(ell, 16)
    assert m[4, 10] and m[10, 4] and not m[10, 10]
    assert m.sum() == 10 * 4 + 4 * 6
    # A large random-ish polygon: pixel count close to its shoelace area.
    poly = _ellipse(40, 60, 55, 41.3, 27.7) + np.random.default_rng(0).uniform(-2, 2, (40, 2))
    area = 0.5 * abs(np.dot(poly[:, 0], np.roll(poly[:, 1], -1)) - np.dot(poly[:, 1], np.roll(poly[:, 0], -1)))
    assert abs(polygon_mask(poly, 128).sum() - area) < 0.02 * area
    # Clipped at the image border without error.
    assert polygon_mask(square + 110, 128).sum() == 49


def test_convex_hull_drops_interior_points():
    pts = np.array([(0, 0), (4, 0), (4, 4), (0, 4), (2, 2), (1, 3), (2, 0)], dtype=float)
    hull = convex_hull(pts)
    assert {tuple(p) for p in hull} == {(0, 0), (4, 0), (4, 4), (0, 4)}


def test_missing_face_gives_ignore_map_and_bad_shapes_raise():
    lm = np.stack([synthetic_face(), np.full((C.N_MESH_LANDMARKS, 2), np.nan)])
    maps = render_class_maps(lm, SIZE)
    assert maps.shape == (2, SIZE, SIZE)
    assert (maps[1] == C.IGNORE_INDEX).all()
    assert (maps[0] == K["iris_l"]).any() and not (maps[0] == C.IGNORE_INDEX).any()
    with pytest.raises(InputShapeError):
        render_class_map(np.zeros((468, 2)), SIZE)
    with pytest.raises(InputShapeError):
        iris_centres(np.zeros((478, 4)))


def test_mediapipe_left_right_on_real_faces(tmp_path, data_root: Path):
    """Runs only where the MediaPipe venv already exists (never builds it in a test)."""
    from tools.labelling.label_crops import label
    from tools.labelling.mediapipe_env import venv_python

    if not venv_python().exists() or os.environ.get("FEWSHOT_SKIP_MEDIAPIPE"):
        pytest.skip("no MediaPipe venv (python -m tools.labelling.mediapipe_env)")
    from PIL import Image

    files = sorted((data_root / "lfw").glob("A*/*_0001.jpg"))[:6]
    crops = np.stack([np.asarray(Image.open(f).convert("RGB").crop((50, 55, 200, 205)).resize((128, 128)))
                      for f in files])
    np.savez(tmp_path / "crops.npz", crops=crops)
    label(tmp_path / "crops.npz", tmp_path / "labels.npz")
    z = np.load(tmp_path / "labels.npz")
    assert z["found"].all()
    iris = z["iris_centres"]
    assert (iris[:, 0, 0] < iris[:, 1, 0]).all()          # iris_l is on the image's left
    maps = z["class_maps"]
    for cm, (l, r) in zip(maps, iris):
        assert cm[int(round(l[1])), int(round(l[0]))] in (K["iris_l"], K["eye_l"])
        assert cm[int(round(r[1])), int(round(r[0]))] in (K["iris_r"], K["eye_r"])
        ys, xs = np.nonzero(cm == K["brow_l"])
        assert xs.mean() < 64 and ys.mean() < l[1]         # brow_l above the left eye
