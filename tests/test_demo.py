"""The README's demo: a real swap on public-domain photos from a registry package."""
from __future__ import annotations

import pytest
import torch

from fewshot_core.demo import both_ways_grid, demo_images
from fewshot_core.errors import FetchError
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
