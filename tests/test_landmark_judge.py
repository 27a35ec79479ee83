"""The landmark judge (a training aid): its loss matches the expression figure, its file round-trips,
its augmentation moves points with the pixels, and the trainer uses it frozen."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fewshot_core.errors import ModelFileMissingError, WeightsMismatchError
from fewshot_core.eval.expression import landmark_errors
from fewshot_core.parsing.mapper import default_parser_path
from fewshot_core.train.judge_train import augment
from fewshot_core.train.landmark_judge import (FLIP_68, LandmarkJudge, load_judge, similarity_aligned_error,
                                               soft_argmax)


def _face_points(rng: np.random.Generator) -> np.ndarray:
    base = rng.uniform(20, 100, size=(68, 2))
    base[36], base[45] = (40, 50), (88, 50)  # outer eye corners well apart
    return base


def test_aligned_error_is_the_expression_formula_and_ignores_similarity_moves():
    rng = np.random.default_rng(0)
    src = _face_points(rng)
    out = src + rng.normal(0, 2.0, size=src.shape)
    expected = landmark_errors(src, out).mean()
    got = similarity_aligned_error(torch.tensor(out)[None].float(), torch.tensor(src)[None].float())
    assert got.shape == (1,) and abs(float(got) - expected) < 1e-4

    angle, scale = math.radians(20), 1.3
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    moved = scale * src @ rot.T + np.array([5.0, -7.0])
    same = similarity_aligned_error(torch.tensor(moved)[None].float(), torch.tensor(src)[None].float())
    assert float(same) < 1e-4


def test_aligned_error_has_gradients_towards_the_source():
    src = torch.tensor(_face_points(np.random.default_rng(1)))[None].float()
    out = (src + torch.randn_like(src) * 3).requires_grad_(True)
    err = similarity_aligned_error(out, src).sum()
    err.backward()
    with torch.no_grad():
        stepped = out - 5.0 * out.grad
    assert float(similarity_aligned_error(stepped, src)) < float(err.detach())


def test_flip_order_is_a_mirror_involution():
    assert sorted(FLIP_68) == list(range(68))
    assert [FLIP_68[i] for i in FLIP_68] == list(range(68))
    assert FLIP_68[36] == 45 and FLIP_68[17] == 26 and FLIP_68[48] == 54 and FLIP_68[30] == 30


def test_soft_argmax_finds_a_peak():
    logits = torch.full((1, 2, 32, 32), -20.0)
    logits[0, 0, 5, 21] = 20.0
    logits[0, 1, 30, 2] = 20.0
    pts = soft_argmax(logits)
    assert torch.allclose(pts, torch.tensor([[[21.0, 5.0], [2.0, 30.0]]]), atol=1e-3)


def test_augmentation_moves_points_with_the_pixels():
    crops = torch.zeros(6, 3, 64, 64)
    points = torch.zeros(6, 68, 2)
    for b in range(6):
        points[b] = torch.tensor([20.0 + b, 30.0])  # every point on one bright spot
        crops[b, :, 30, 20 + b] = 1.0
    out, moved = augment(crops.clone(), points.clone(), torch.Generator().manual_seed(3), strength=1.0)
    for b in range(6):
        brightness = out[b].mean(0)
        y, x = divmod(int(brightness.argmax()), 64)
        assert abs(moved[b, 0, 0] - x) <= 1.5 and abs(moved[b, 0, 1] - y) <= 1.5


def test_judge_starts_from_the_parser_round_trips_and_refuses_other_files(tmp_path):
    judge = LandmarkJudge.from_parser(default_parser_path()).eval()
    from fewshot_core.parsing.network import load_parser

    parser = load_parser(default_parser_path())
    assert torch.equal(judge.trunk.stem[0].weight, parser.stem[0].weight), "backbone copied from the parser"
    crops = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        pts = judge(crops)
    assert pts.shape == (2, 68, 2) and bool(((pts >= 0) & (pts <= 63)).all())
    path = judge.save(tmp_path / "judge.safetensors", {"note": "test"})
    loaded = load_judge(path)
    assert not any(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        assert torch.allclose(loaded(crops), pts, atol=0.5)  # fp16 file
    with pytest.raises(WeightsMismatchError, match="not a landmark judge"):
        load_judge(default_parser_path())
    with pytest.raises(ModelFileMissingError, match="judge_train"):
        load_judge(tmp_path / "missing.safetensors")
