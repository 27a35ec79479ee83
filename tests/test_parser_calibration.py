"""Per-class logit offsets: fitted on training faces, stored with the weights, applied by the mapper."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fewshot_core.errors import WeightsMismatchError
from fewshot_core.parsing.calibrate import fit_class_bias, mean_iou, write_class_bias
from fewshot_core.parsing.classes import CLASS_INDEX, NUM_CLASSES
from fewshot_core.parsing.mapper import ParserStructureMapper
from fewshot_core.parsing.network import CLASS_BIAS_KEY, FaceParser, ParserConfig, load_parser, save_parser

SMALL = ParserConfig(widths=(8, 16, 16, 32), blocks=(0, 1, 1, 1), full_res=4)


def fat_eye_scores(n: int = 4, side: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: an eye disc of radius 5 in skin. Scores: the eye's logit wins out to radius 8 (too fat)."""
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    r = ((yy - side / 2) ** 2 + (xx - side / 2) ** 2).float().sqrt()
    maps = torch.full((n, side, side), CLASS_INDEX["skin"], dtype=torch.long)
    maps[:, r <= 5] = CLASS_INDEX["eye_l"]
    scores = torch.full((n, NUM_CLASSES, side, side), -10.0)
    scores[:, CLASS_INDEX["skin"]] = 0.0
    scores[:, CLASS_INDEX["eye_l"]] = (8.0 - r) / 2   # > 0 (beats skin) inside radius 8
    return scores.half(), maps


def test_fitted_offsets_shrink_a_class_that_comes_out_too_fat():
    scores, maps = fat_eye_scores()
    bias, before, after = fit_class_bias(scores, maps)
    assert bias[CLASS_INDEX["eye_l"]] - bias[CLASS_INDEX["skin"]] < -1.0   # moves the border inwards
    assert after > before and after > 0.95
    assert mean_iou(scores, maps, bias) == pytest.approx(after)


def test_offsets_travel_in_the_file_and_the_mapper_adds_them(tmp_path):
    torch.manual_seed(0)
    path = save_parser(FaceParser(SMALL).eval(), tmp_path / "p.safetensors")
    bias = torch.linspace(-1, 1, NUM_CLASSES)
    calibrated = write_class_bias(path, tmp_path / "cal.safetensors", bias, {"faces": 4})
    assert load_parser(path).class_bias is None
    loaded = load_parser(calibrated)
    torch.testing.assert_close(loaded.class_bias, bias, atol=1e-4, rtol=0)
    x = torch.rand(1, 3, 64, 64)
    plain, shifted = ParserStructureMapper.from_file(path).logits(x), ParserStructureMapper.from_file(calibrated).logits(x)
    torch.testing.assert_close(shifted - plain, bias[None, :, None, None].expand_as(plain), atol=1e-4, rtol=0)
    # a retrained parser does not inherit offsets fitted to other weights
    assert CLASS_BIAS_KEY not in safe_open(str(save_parser(loaded, tmp_path / "re.safetensors")), "pt").metadata()


@pytest.mark.parametrize("value, why", [("[1, 2]", "2 values for 12 classes"), ("not json", "unreadable")])
def test_broken_offsets_are_refused_by_name(tmp_path, value, why):
    path = save_parser(FaceParser(SMALL).eval(), tmp_path / "p.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    meta[CLASS_BIAS_KEY] = value
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(WeightsMismatchError, match=why):
        load_parser(tmp_path / "bad.safetensors")


def test_shipped_parser_records_how_it_was_calibrated():
    from fewshot_core.parsing.mapper import default_parser_path

    with safe_open(str(default_parser_path()), framework="pt") as f:
        meta = f.metadata()
    if CLASS_BIAS_KEY not in meta:
        pytest.skip("the shipped parser is not calibrated")
    note = json.loads(meta["calibration"])
    assert note["split"] == "training identities" and note["miou_after"] > note["miou_before"]
