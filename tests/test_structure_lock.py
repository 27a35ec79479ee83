"""Structure lock: the fitted warp moves the output's parts onto the source's (`fewshot_core/structure_lock.py`)."""
from __future__ import annotations

import pytest
import torch

from fewshot_core.errors import InputShapeError
from fewshot_core.structure_lock import LOCK_DETAIL, apply_warp, fit_structure_warp, lock_detail_options

SIDE = 128


def parts(dx: float, dy: float) -> torch.Tensor:
    """Soft-ish class maps [1, 3, R, R]: background, an elliptic 'nose', a thin 'brow', moved by (dx, dy) px."""
    ys, xs = torch.meshgrid(torch.arange(SIDE).float(), torch.arange(SIDE).float(), indexing="ij")
    nose = ((xs - 64 - dx) ** 2 / 200 + (ys - 70 - dy) ** 2 / 100 < 1).float()
    brow = (((xs - 40 - dx).abs() < 10) & ((ys - 40 - dy).abs() < 2)).float() * (1 - nose)
    return torch.stack([1 - nose - brow, nose, brow])[None]


def test_fit_finds_the_shift_between_two_maps_and_the_warp_undoes_it():
    fixed, moving = parts(0, 0), parts(2.0, -1.5)
    displacement = fit_structure_warp(moving, fixed)
    assert displacement.shape == (1, SIDE, SIDE, 2)
    at_nose = displacement[0, 70, 64] * SIDE / 2  # grid units -> pixels
    assert torch.allclose(at_nose, torch.tensor([2.0, -1.5]), atol=0.5)
    before = (moving - fixed).abs().sum()
    after = (apply_warp(moving, displacement) - fixed).abs().sum()
    assert after < 0.4 * before


def test_strength_scales_the_move_and_zero_leaves_images_alone():
    fixed, moving = parts(0, 0), parts(3.0, 0.0)
    displacement = fit_structure_warp(moving, fixed)
    image = torch.rand(1, 3, SIDE, SIDE)
    assert torch.equal(apply_warp(image, displacement, 0.0), image)
    unmoved = apply_warp(image, torch.zeros_like(displacement))
    assert torch.allclose(unmoved, image, atol=1e-5)
    half = (apply_warp(moving, displacement, 0.5) - fixed).abs().sum()
    full = (apply_warp(moving, displacement, 1.0) - fixed).abs().sum()
    assert full < half < (moving - fixed).abs().sum()


def test_the_move_is_bounded():
    fixed, moving = parts(0, 0), parts(12.0, 0.0)  # far beyond the bound: the fit may not chase it
    displacement = fit_structure_warp(moving, fixed, max_shift_px=4.0)
    assert displacement.abs().max() * SIDE / 2 <= 4.0 + 1e-4


def test_runs_under_inference_mode_like_a_comfyui_node():
    with torch.inference_mode():
        fixed, moving = parts(0, 0), parts(2.0, 0.0)
        displacement = fit_structure_warp(moving, fixed)
    assert displacement.abs().max() > 0


def test_wrong_shapes_are_clear_errors():
    with pytest.raises(InputShapeError, match="same shape"):
        fit_structure_warp(parts(0, 0), parts(0, 0)[:, :2])
    with pytest.raises(InputShapeError, match="displacement"):
        apply_warp(torch.rand(1, 3, 64, 64), torch.zeros(1, 32, 32, 2))


def bars(shift: float) -> torch.Tensor:
    """Class maps [1, 3, R, R]: two thin horizontal bars 10 px apart, moved sideways in opposite directions."""
    ys, xs = torch.meshgrid(torch.arange(SIDE).float(), torch.arange(SIDE).float(), indexing="ij")
    upper = (((xs - 64 - shift).abs() < 12) & ((ys - 59).abs() < 2)).float()
    lower = (((xs - 64 + shift).abs() < 12) & ((ys - 69).abs() < 2)).float()
    return torch.stack([1 - upper - lower, upper, lower])[None]


def test_fine_detail_moves_neighbouring_parts_apart_where_coarse_cannot():
    """Why 'fine' exists: two parts a few pixels apart that moved differently (a nostril against the nose tip)
    need a denser field than the coarse 8x8 one, which moves them as one."""
    fixed, moving = bars(0.0), bars(3.0)
    residual = {}
    for detail in LOCK_DETAIL:
        displacement = fit_structure_warp(moving, fixed, **lock_detail_options(detail))
        residual[detail] = float((apply_warp(moving, displacement) - fixed).abs().sum())
    before = float((moving - fixed).abs().sum())
    assert residual["fine"] < 0.5 * before
    assert residual["fine"] < 0.6 * residual["coarse"]


def test_unknown_lock_detail_is_a_clear_error():
    with pytest.raises(InputShapeError, match="lock_detail must be one of"):
        lock_detail_options("ultra")
