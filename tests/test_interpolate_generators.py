"""The weight-blend diagnostic mixes two generator files tensor by tensor and refuses other architectures."""

from pathlib import Path

import pytest
import torch

from fewshot_core.generator.config import GeneratorConfig
from fewshot_core.generator.io import load_generator, save_generator
from fewshot_core.generator.network import FewShotGenerator
from tools.diagnostics.interpolate_generators import blend_generators

SMALL = dict(resolution=32, n_down=2, base_channels=8, max_channels=16)


def _write(path: Path, seed: int, **overrides) -> Path:
    torch.manual_seed(seed)
    cfg = GeneratorConfig(**{**SMALL, **overrides})
    return save_generator(FewShotGenerator(cfg), cfg, path)


def test_blend_is_linear_in_the_weights(tmp_path: Path) -> None:
    tuned_path = _write(tmp_path / "tuned.safetensors", seed=1)
    base_path = _write(tmp_path / "base.safetensors", seed=2)
    blended = blend_generators(tuned_path, base_path, alpha=0.25)
    out = save_generator(blended, blended.config, tmp_path / "blend.safetensors")
    tuned, base, reread = (load_generator(p).state_dict() for p in (tuned_path, base_path, out))
    key = next(k for k, v in tuned.items() if v.is_floating_point() and not torch.equal(v, base[k]))
    assert torch.allclose(reread[key], 0.25 * tuned[key] + 0.75 * base[key], atol=2e-3)
    note = load_generator(out).config.extra["weights"]
    assert "0.25 x tuned.safetensors" in note and "0.75 x base.safetensors" in note


def test_blend_refuses_other_architectures_and_bad_alpha(tmp_path: Path) -> None:
    tuned = _write(tmp_path / "tuned.safetensors", seed=1)
    wider = _write(tmp_path / "wider.safetensors", seed=1, base_channels=16)
    with pytest.raises(ValueError, match="different configs"):
        blend_generators(tuned, wider, alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        blend_generators(tuned, tuned, alpha=1.5)
