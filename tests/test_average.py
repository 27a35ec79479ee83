"""`train.average`: a weighted average of two or more generators, recorded in the output's metadata."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from fewshot_core.generator import GeneratorConfig, load_generator, random_generator, save_generator
from fewshot_core.train.average import main

SMALL = dict(resolution=64, n_down=3, base_channels=8, max_channels=32, mlp_hidden=32, spade_hidden=16)


def _file(tmp_path, name: str, seed: int, **changes) -> tuple:
    cfg = GeneratorConfig(**{**SMALL, **changes, "extra": {"run": name}})
    path = save_generator(random_generator(cfg, seed=seed), cfg, tmp_path / f"{name}.safetensors")
    return path, load_generator(path).state_dict()


def test_the_average_is_the_weighted_mean_and_names_its_inputs(tmp_path, capsys):
    (a, sa), (b, sb) = _file(tmp_path, "a", 0), _file(tmp_path, "b", 1)
    out = tmp_path / "soup.safetensors"
    assert main([str(a), str(b), "--weight", "0.25", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["shares"] == [0.75, 0.25]
    soup = load_generator(out)
    moved = 0
    for key, value in soup.state_dict().items():
        if value.is_floating_point():
            expected = (0.75 * sa[key] + 0.25 * sb[key]).half().float()
            assert torch.equal(value, expected), key
            moved += int(not torch.equal(sa[key], sb[key]))
    assert moved > 10  # the two inputs really differ, so the test would see a copy of either
    extra = soup.config.extra
    assert extra["A"]["sha256"] == hashlib.sha256(a.read_bytes()).hexdigest() and extra["B"]["run"] == {"run": "b"}
    assert "0.75 x A + 0.25 x B" in extra["weights"] and extra["B"]["share"] == 0.25


def test_three_seeds_average_uniformly_or_by_given_shares(tmp_path, capsys):
    files = [_file(tmp_path, name, seed) for seed, name in enumerate("abc")]
    out = tmp_path / "soup3.safetensors"
    assert main([*(str(path) for path, _ in files), "--out", str(out)]) == 0
    soup = load_generator(out).state_dict()
    key = next(k for k, v in soup.items() if v.is_floating_point() and v.numel() > 16)
    expected = sum(state[key] for _, state in files) / 3
    assert torch.allclose(soup[key], expected.half().float(), atol=1e-3)
    assert not torch.allclose(soup[key], files[0][1][key], atol=1e-3)  # not a copy of the first input
    assert load_generator(out).config.extra["C"]["run"] == {"run": "c"}
    assert main([*(str(path) for path, _ in files), "--weights", "2", "1", "1", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["shares"] == [0.5, 0.25, 0.25]
    expected = 0.5 * files[0][1][key] + 0.25 * (files[1][1][key] + files[2][1][key])
    assert torch.allclose(load_generator(out).state_dict()[key], expected.half().float(), atol=1e-3)


def test_other_architectures_and_bad_weights_are_refused(tmp_path, capsys):
    (a, _), (wide, _) = _file(tmp_path, "a", 0), _file(tmp_path, "wide", 1, base_channels=16)
    assert main([str(a), str(wide), "--out", str(tmp_path / "x.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "different architectures" in err and "base_channels" in err
    assert main([str(a), str(a), "--weight", "1.5", "--out", str(tmp_path / "x.safetensors")]) == 1
    assert "--weight must lie in [0, 1]" in capsys.readouterr().err
    assert main([str(a), str(tmp_path / "gone.safetensors"), "--out", str(tmp_path / "x.safetensors")]) == 1
    assert "gone.safetensors" in capsys.readouterr().err
    assert main([str(a), str(a), str(a), "--weight", "0.5", "--out", str(tmp_path / "x.safetensors")]) == 1
    assert "for 3 files use --weights" in capsys.readouterr().err
    assert main([str(a), str(a), "--weights", "1", "--out", str(tmp_path / "x.safetensors")]) == 1
    assert "--weights needs 2 non-negative numbers" in capsys.readouterr().err
    assert main([str(a), "--out", str(tmp_path / "x.safetensors")]) == 1
    assert "at least two generator files" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()
