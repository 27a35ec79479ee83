"""Skin-tone statistics and the colour match's shift toward the target's skin."""
from __future__ import annotations

import pytest
import torch
from kornia.color import rgb_to_lab

from fewshot_core.errors import InputShapeError
from fewshot_core.paste import color_match
from fewshot_core.skin_tone import SKIN_CHANNEL, mean_skin_statistics, skin_statistics, skin_tone_shift

SIZE = 32


def _structure(skin: torch.Tensor) -> torch.Tensor:
    """A 12-class map whose skin channel is `skin` [B,1,R,R] and whose background takes the rest."""
    structure = torch.zeros(skin.shape[0], 12, SIZE, SIZE)
    structure[:, SKIN_CHANNEL:SKIN_CHANNEL + 1] = skin
    structure[:, :1] = 1 - skin
    return structure


def test_statistics_are_those_of_the_skin_pixels_only():
    crops = torch.zeros(2, 3, SIZE, SIZE)
    crops[:, :, :16] = torch.tensor([0.8, 0.6, 0.5])[:, None, None]  # skin colour, top half
    crops[:, :, 16:] = torch.tensor([0.1, 0.2, 0.9])[:, None, None]  # something else, bottom half
    skin = torch.zeros(2, 1, SIZE, SIZE)
    skin[0, :, :16] = 1.0  # face 0: the top half is skin; face 1: no skin at all
    stats = skin_statistics(crops, _structure(skin))
    expected = rgb_to_lab(torch.tensor([0.8, 0.6, 0.5])[None, :, None, None])[0, :, 0, 0]
    assert stats.shape == (2, 2, 3)
    assert torch.allclose(stats[0, 0], expected, atol=1e-3)
    assert torch.allclose(stats[0, 1], torch.zeros(3), atol=1e-2)  # one colour: no spread
    assert torch.isnan(stats[1]).all()
    grey = crops.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)  # a black-and-white photo: no skin tone
    assert torch.isnan(skin_statistics(grey, _structure(skin))).all()
    with pytest.raises(InputShapeError, match="structure map"):
        skin_statistics(crops, torch.zeros(2, 1, SIZE, SIZE))


def test_mean_over_photos_skips_photos_without_skin():
    per_photo = torch.tensor([[[50.0, 10.0, 20.0], [5.0, 2.0, 3.0]],
                              [[float("nan")] * 3] * 2,
                              [[70.0, 20.0, 10.0], [7.0, 4.0, 5.0]]])
    assert torch.allclose(mean_skin_statistics(per_photo), torch.tensor([[60.0, 15.0, 15.0], [6.0, 3.0, 4.0]]))
    assert mean_skin_statistics(per_photo[1:2]) is None


def test_shift_is_nothing_at_zero_the_whole_way_at_one_and_keeps_lightness_for_chroma_only():
    source = torch.tensor([[[40.0, 15.0, 12.0], [8.0, 3.0, 3.0]],
                           [[float("nan")] * 3] * 2])
    target = torch.tensor([[60.0, 20.0, 24.0], [10.0, 6.0, 4.0]])
    shift, ratio = skin_tone_shift(source, target, 0.0)
    assert torch.equal(shift, torch.zeros(2, 3)) and torch.equal(ratio, torch.ones(2, 3))
    shift, ratio = skin_tone_shift(source, target, 1.0, "colour+lightness")
    assert torch.allclose(source[0, 0] + shift[0], target[0]) and torch.allclose(source[0, 1] * ratio[0], target[1])
    assert torch.equal(shift[1], torch.zeros(3)) and torch.equal(ratio[1], torch.ones(3))  # no skin: no shift
    shift, ratio = skin_tone_shift(source, target, 0.5, "colour")
    assert shift[0, 0] == 0 and ratio[0, 0] == 1  # lightness stays the source's
    assert torch.allclose(shift[0, 1:], torch.tensor([2.5, 6.0]))
    with pytest.raises(InputShapeError, match="between 0 and 1"):
        skin_tone_shift(source, target, 1.5)
    with pytest.raises(InputShapeError, match="channels"):
        skin_tone_shift(source, target, 0.5, "rgb")


def test_colour_match_lands_on_the_shifted_statistics():
    torch.manual_seed(0)
    generated = (torch.rand(1, 3, SIZE, SIZE) * 0.4 + 0.3)
    source = (torch.rand(1, 3, SIZE, SIZE) * 0.3 + 0.4)
    mask = torch.ones(1, 1, SIZE, SIZE)
    shift = torch.tensor([[0.0, 4.0, -3.0]])
    plain = color_match(generated, source, mask)
    moved = color_match(generated, source, mask, mean_shift=shift)
    plain_mean = rgb_to_lab(plain).mean(dim=(2, 3))
    moved_mean = rgb_to_lab(moved).mean(dim=(2, 3))
    assert torch.allclose(moved_mean - plain_mean, shift, atol=0.3)
    assert torch.equal(color_match(generated, source, mask, torch.zeros(1, 3), torch.ones(1, 3)), plain)
    with pytest.raises(InputShapeError, match="mean_shift"):
        color_match(generated, source, mask, mean_shift=torch.zeros(3))
