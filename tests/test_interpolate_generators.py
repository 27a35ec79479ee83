"""The weight-blend diagnostic mixes two generator files tensor by tensor and refuses mismatched ones."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tools.diagnostics.interpolate_generators import blend_generators


def _write(path: Path, value: float, shape: tuple[int, ...] = (2, 3)) -> Path:
    config = {"base_channels": 32, "extra": {"weights": "average"}}
    tensors = {"a.weight": torch.full(shape, value, dtype=torch.float16), "b.steps": torch.tensor([7])}
    save_file(tensors, str(path), metadata={"format": "fewshot-generator-v1", "fewshot_config": json.dumps(config)})
    return path


def test_blend_is_linear_and_keeps_integer_tensors(tmp_path: Path) -> None:
    tuned = _write(tmp_path / "tuned.safetensors", 1.0)
    base = _write(tmp_path / "base.safetensors", -3.0)
    tensors, metadata = blend_generators(tuned, base, alpha=0.25)
    assert tensors["a.weight"].dtype == torch.float16
    assert torch.allclose(tensors["a.weight"].float(), torch.full((2, 3), 0.25 * 1.0 + 0.75 * -3.0))
    assert tensors["b.steps"].tolist() == [7]
    note = json.loads(metadata["fewshot_config"])["extra"]["weights"]
    assert "0.25 x tuned.safetensors" in note and "0.75 x base.safetensors" in note


def test_blend_refuses_other_shapes_and_bad_alpha(tmp_path: Path) -> None:
    tuned = _write(tmp_path / "tuned.safetensors", 1.0)
    other = _write(tmp_path / "other.safetensors", 1.0, shape=(3, 3))
    with pytest.raises(ValueError, match="shape"):
        blend_generators(tuned, other, alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        blend_generators(tuned, tuned, alpha=1.5)
