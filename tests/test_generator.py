"""Generator contract: shapes, dtypes, ranges, input checks, config and weights files, degradation."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from fewshot_core.errors import InputShapeError, ModelFileMissingError, WeightsMismatchError
from fewshot_core.generator import (
    FewShotGenerator,
    GeneratorConfig,
    count_parameters,
    degrade_for_inference,
    load_generator,
    random_degrade,
    random_generator,
    read_generator_config,
    save_generator,
)

SMALL = dict(resolution=64, n_down=3, base_channels=16, max_channels=64, mlp_hidden=64, spade_hidden=16)


def _inputs(cfg: GeneratorConfig, b: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    r, n = cfg.resolution, cfg.struct_channels
    source = torch.rand(b, 3, r, r, generator=g)
    logits = torch.randn(b, n, r, r, generator=g)
    structure = torch.softmax(logits, dim=1)
    identity = torch.nn.functional.normalize(torch.randn(b, cfg.id_dim, generator=g), dim=1)
    return source, structure, identity


@pytest.fixture(scope="module")
def small():
    cfg = GeneratorConfig(**SMALL)
    return cfg, random_generator(cfg, seed=1)


@pytest.mark.parametrize("resolution,n_down", [(64, 3), (128, 4), (256, 5)])
def test_output_shapes_and_ranges(resolution, n_down):
    cfg = GeneratorConfig(resolution=resolution, n_down=n_down, base_channels=8, max_channels=32,
                          mlp_hidden=32, spade_hidden=8)
    model = random_generator(cfg, seed=0)
    with torch.no_grad():
        rgb, mask = model(*_inputs(cfg, b=1))
    assert rgb.shape == (1, 3, resolution, resolution) and mask.shape == (1, 1, resolution, resolution)
    assert rgb.dtype == mask.dtype == torch.float32
    for t in (rgb, mask):
        assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0 and bool(torch.isfinite(t).all())


def test_default_config_is_a_few_million_parameters():
    model = FewShotGenerator(GeneratorConfig())
    assert 2e6 < count_parameters(model) < 10e6
    assert model.config.resolution == 128 and model.cfg is model.config


def test_identity_and_structure_both_change_the_output(small):
    cfg, model = small
    source, structure, identity = _inputs(cfg)
    with torch.no_grad():
        base, _ = model(source, structure, identity)
        other_id, _ = model(source, structure, identity.flip(0))
        other_struct, _ = model(source, structure.flip(0), identity)
    assert float((base - other_id).abs().mean()) > 1e-3
    assert float((base - other_struct).abs().mean()) > 1e-3


@pytest.mark.parametrize("keep_modulations", [True, False])
def test_one_condition_renders_every_identity_as_forward_does(small, keep_modulations):
    """The identity refinement computes the identity-free part once and renders ten codes from it."""
    cfg, model = small
    source, structure, identity = _inputs(cfg)
    with torch.no_grad():
        condition = model.condition(source, structure, keep_modulations)
        assert (condition.modulations is not None) == keep_modulations
        for code in (identity, identity.flip(0), identity * 0.5):
            rendered = model.render(condition, code)
            direct = model(source, structure, code)
            assert all(torch.equal(a, b) for a, b in zip(rendered, direct))
    with pytest.raises(InputShapeError, match=r"'identity' has batch size 1 but source has 2"):
        model.render(condition, identity[:1])
    with pytest.raises(InputShapeError, match="structure"):
        model.condition(source, structure[:, :3])


def test_gradients_reach_the_identity_through_render(small):
    cfg, model = small
    source, structure, identity = _inputs(cfg)
    with torch.no_grad():
        condition = model.condition(source, structure)
    code = identity.clone().requires_grad_(True)
    rgb, mask = model.render(condition, code)
    (grad,) = torch.autograd.grad(rgb.mean() + mask.mean(), code)
    assert float(grad.abs().max()) > 0


def test_bfloat16_model_keeps_the_contract(small):
    cfg, model = small
    source, structure, identity = _inputs(cfg)
    bf16 = random_generator(cfg, seed=1).to(torch.bfloat16)
    with torch.no_grad():
        ref, _ = model(source, structure, identity)
        rgb, mask = bf16(source, structure, identity)  # float32 in -> float32 out
        rgb_b, mask_b = bf16(source.bfloat16(), structure.bfloat16(), identity.bfloat16())
    assert rgb.dtype == mask.dtype == torch.float32
    assert rgb_b.dtype == mask_b.dtype == torch.bfloat16
    assert float(mask.min()) >= 0 and float(mask.max()) <= 1
    assert float((rgb - ref).abs().max()) < 0.05


@pytest.mark.parametrize(
    "which,shape,expected",
    [
        ("source", (2, 3, 32, 32), r"\[B, 3, 64, 64\]"),
        ("structure", (2, 5, 64, 64), r"\[B, 12, 64, 64\]"),
        ("identity", (2, 512), r"\[B, 128\]"),
        ("identity", (3, 128), "batch size 3"),
    ],
)
def test_wrong_input_shapes_raise(small, which, shape, expected):
    cfg, model = small
    inputs = dict(zip(("source", "structure", "identity"), _inputs(cfg)))
    inputs[which] = torch.rand(*shape)
    with pytest.raises(InputShapeError, match=expected):
        model(**inputs)


def test_config_round_trip_and_strict_parsing():
    cfg = GeneratorConfig(resolution=256, n_down=5, n_adain_blocks=2, decoder_adain=False,
                          extra={"run": "test"})
    again = GeneratorConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    with pytest.raises(WeightsMismatchError, match="unknown keys.*n_layers"):
        GeneratorConfig.from_dict({**cfg.to_dict(), "n_layers": 3})
    with pytest.raises(WeightsMismatchError, match="'resolution' must be int"):
        GeneratorConfig.from_dict({**cfg.to_dict(), "resolution": "256"})
    with pytest.raises(WeightsMismatchError, match="'n_down' must be int"):
        GeneratorConfig.from_dict({**cfg.to_dict(), "n_down": True})
    with pytest.raises(WeightsMismatchError, match="power of two"):
        GeneratorConfig(resolution=100)
    with pytest.raises(WeightsMismatchError, match="infer_degrade_px"):
        GeneratorConfig(resolution=64, n_down=3, infer_degrade_px=128)


def test_fp16_file_round_trip(tmp_path, small):
    cfg, model = small
    path = save_generator(model, cfg, tmp_path / "gen.safetensors")
    assert read_generator_config(path) == cfg
    loaded = load_generator(path, device="cpu", dtype=torch.float32)
    assert loaded.config == cfg and not loaded.training
    inputs = _inputs(cfg)
    with torch.no_grad():
        a_rgb, a_mask = model(*inputs)
        b_rgb, b_mask = loaded(*inputs)
    assert float((a_rgb - b_rgb).abs().max()) < 1e-2
    assert float((a_mask - b_mask).abs().max()) < 1e-2
    assert float((a_rgb - b_rgb).abs().max()) > 0  # it really went through float16


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(ModelFileMissingError, match="nope.safetensors"):
        load_generator(path)


def test_file_of_another_architecture_is_refused(tmp_path, small):
    cfg, model = small
    other_cfg = GeneratorConfig(**{**SMALL, "max_channels": 32})
    path = tmp_path / "other.safetensors"
    save_generator(random_generator(other_cfg), other_cfg, path)
    # Same tensors, but metadata claiming the small config: shapes cannot fit.
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    save_file(tensors, str(path), metadata={"format": "fewshot-generator-v1",
                                            "fewshot_config": json.dumps(cfg.to_dict())})
    with pytest.raises(WeightsMismatchError, match="other.safetensors.*wrong shape"):
        load_generator(path)


@pytest.mark.parametrize("kind", ["garbage", "no_metadata", "bad_json"])
def test_unusable_files_are_refused_with_their_name(tmp_path, small, kind):
    cfg, model = small
    path = tmp_path / f"{kind}.safetensors"
    if kind == "garbage":
        path.write_bytes(b"this is not a safetensors file at all")
    else:
        meta = None if kind == "no_metadata" else {"format": "fewshot-generator-v1", "fewshot_config": "{oops"}
        save_file({"w": torch.zeros(2)}, str(path), metadata=meta)
    with pytest.raises(WeightsMismatchError, match=f"{kind}.safetensors"):
        load_generator(path)


def test_inference_degradation_removes_fine_detail_and_is_deterministic():
    cfg = GeneratorConfig(infer_degrade_px=16)
    yy, xx = torch.meshgrid(torch.arange(128), torch.arange(128), indexing="ij")
    checker = ((xx + yy) % 2).float().expand(1, 3, 128, 128)
    ramp = (xx.float() / 127).expand(1, 3, 128, 128)
    crops = torch.cat([checker, ramp])
    out = degrade_for_inference(crops, cfg)
    assert out.shape == crops.shape and torch.equal(out, degrade_for_inference(crops, cfg))
    assert float((out[0] - 0.5).abs().max()) < 0.02       # 1 px checkerboard averages out
    assert float((out[1] - ramp[0]).abs().mean()) < 0.02   # smooth content survives


def test_random_degradation_is_reproducible_and_in_range():
    crops = torch.rand(6, 3, 64, 64)
    a = random_degrade(crops, torch.Generator().manual_seed(3))
    b = random_degrade(crops, torch.Generator().manual_seed(3))
    c = random_degrade(crops, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == crops.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    # without noise-masking every sample is at most 16 px of detail: pixel noise is gone
    low = random_degrade(crops, torch.Generator().manual_seed(5), p_noise=0.0)
    assert float(low.std(dim=(2, 3)).max()) < 0.5 * float(crops.std(dim=(2, 3)).min())
    noisy = random_degrade(torch.full_like(crops, 0.5), torch.Generator().manual_seed(5), p_noise=1.0)
    assert float(noisy.std(dim=(2, 3)).min()) > 0.1
