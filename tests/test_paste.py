"""Paste back: untouched pixels stay bit-identical, a round trip reproduces the frame, colours match."""
from __future__ import annotations

import math

import pytest
import torch
from kornia.color import rgb_to_lab
from kornia.geometry.transform import warp_affine

from fewshot_core.errors import InputShapeError
from fewshot_core.paste import color_match, composite, feather_mask, invert_affine, paste_back, photo_detail

R = 96


def _smooth_frames(b: int = 2, h: int = 150, w: int = 200) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    frames = [torch.stack([0.5 + 0.3 * torch.sin((5 + k) * xx), 0.5 + 0.3 * torch.cos(4 * yy + k), xx * yy])
              for k in range(b)]
    return torch.stack(frames)


def _affine(center_xy, degrees: float, scale: float) -> torch.Tensor:
    """image px -> crop px: rotate/scale about `center_xy`, which lands on the crop centre."""
    a = math.radians(degrees)
    lin = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) * scale
    t = torch.tensor([(R - 1) / 2, (R - 1) / 2]) - lin @ torch.tensor(center_xy, dtype=torch.float32)
    return torch.cat([lin, t[:, None]], dim=1)


def _disc(b: int, radius: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(R), torch.arange(R), indexing="ij")
    inside = ((xx - (R - 1) / 2) ** 2 + (yy - (R - 1) / 2) ** 2 <= radius ** 2).float()
    return inside.expand(b, 1, R, R).clone()


def test_invert_affine_is_exact():
    m = torch.stack([_affine((80, 60), 17, 1.7), _affine((10, 140), -40, 0.4)])
    inv = invert_affine(m)
    pts = torch.tensor([[3.0, 4.0], [120.0, 77.0]])
    there = pts @ m[:, :, :2].transpose(1, 2) + m[:, None, :, 2]
    back = there @ inv[:, :, :2].transpose(1, 2) + inv[:, None, :, 2]
    torch.testing.assert_close(back, pts.expand(2, 2, 2), atol=1e-4, rtol=0)


@pytest.mark.parametrize("feather", [0.0, 5.0])
def test_pixels_outside_the_mask_are_bit_identical(feather):
    frames = _smooth_frames()
    m = torch.stack([_affine((100, 70), 15, 1.4), _affine((40, 30), -30, 0.8)])
    crops = torch.rand(2, 3, R, R)
    out, mask = paste_back(frames, crops, _disc(2, 30), m, feather)
    assert out.shape == frames.shape and mask.shape == (2, 1, 150, 200)
    outside = (mask == 0).expand_as(frames)
    assert torch.equal(out[outside], frames[outside])
    assert bool((mask > 0).any(dim=(1, 2, 3)).all())
    inside = (mask > 0.99).expand_as(frames)
    assert float((out[inside] - frames[inside]).abs().mean()) > 0.05  # the random crop really went in


def test_pasting_the_warped_original_reproduces_the_frame():
    frames = _smooth_frames()
    m = torch.stack([_affine((100, 70), 20, 1.5), _affine((90, 80), -10, 0.9)])
    crops = warp_affine(frames, m, (R, R), align_corners=True)
    out, mask = paste_back(frames, crops, _disc(2, 35), m, feather_px=4.0)
    inside = (mask > 0).expand_as(frames)
    assert int(inside.sum()) > 2000
    assert float((out[inside] - frames[inside]).abs().max()) < 0.02


def test_photo_detail_is_what_a_smaller_crop_loses_and_nothing_outside_the_mask():
    """A crop at half the frame's scale cannot hold the frame's finest texture: the detail is that texture."""
    torch.manual_seed(0)
    texture = 0.1 * torch.randn(1, 3, 150, 200)
    smooth = _smooth_frames(1)
    frames = (smooth + texture).clamp(0, 1)
    m = _affine((100, 75), 10, 0.5)[None]                     # one crop px spans 2 frame px
    crops = warp_affine(frames, m, (R, R), align_corners=True)
    masks = _disc(1, 40)
    detail = photo_detail(frames, crops, masks, m, feather_px=3.0)
    _, mask = paste_back(frames, crops, masks, m, 3.0)
    assert bool((detail[(mask == 0).expand_as(frames)] == 0).all())
    inside = (mask > 0.99).expand_as(frames)
    # most of the fine texture comes back as detail, and the frame's smooth part does not
    loss = float((detail[inside] - (frames - smooth)[inside]).pow(2).mean())
    assert loss < 0.5 * float(texture[inside].pow(2).mean())
    assert float(detail[inside].pow(2).mean()) > 0.3 * float(texture[inside].pow(2).mean())
    # at the frame's own scale (one crop px per frame px, no rotation) the crop keeps everything
    same = _affine((100.5, 75.5), 0, 1.0)[None]                 # whole-pixel shift: sampling is exact
    assert float(photo_detail(frames, warp_affine(frames, same, (R, R), align_corners=True), masks, same,
                              3.0).abs().max()) < 1e-4


@pytest.mark.parametrize("scale,feather", [(0.25, 3.0), (0.25, 0.0), (2.0, 3.0)])
def test_windowed_paste_equals_the_whole_frame_computation(scale, feather):
    """paste_back only warps the window the crop covers; that must not cut the mask's fringe."""
    frames = _smooth_frames(1, 500, 500)
    m = _affine((250, 240), 12, scale)[None]          # at 0.25 one crop px spans 4 frame px
    crops = torch.rand(1, 3, R, R)
    masks = torch.full((1, 1, R, R), 0.8)                 # opaque up to the crop border
    out, mask = paste_back(frames, crops, masks, m, feather)
    whole = warp_affine(masks, invert_affine(m), (500, 500), align_corners=True)
    expected = feather_mask(whole, feather)
    torch.testing.assert_close(mask, expected, atol=1e-4, rtol=0)
    assert bool((mask > 0).any())


def test_feathering_stays_inside_the_mask_and_softens_it():
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:48, 16:48] = 1
    soft = feather_mask(mask, 6.0)
    assert torch.equal(soft[mask == 0], torch.zeros_like(soft[mask == 0]))
    assert float(soft[0, 0, 32, 32]) > 0.99                      # centre stays opaque
    edge_row = soft[0, 0, 32, 16:33]
    assert bool((edge_row[1:] >= edge_row[:-1] - 1e-6).all())   # ramps up monotonically
    assert 0.0 < float(soft[0, 0, 32, 20]) < 0.5                 # a real gradient near the edge
    assert torch.equal(feather_mask(mask, 0.0), mask)


def test_crop_landing_outside_the_frame_changes_nothing():
    frames = _smooth_frames(1)
    m = _affine((2000, 2000), 0, 1.0)[None]
    out, mask = paste_back(frames, torch.rand(1, 3, R, R), torch.ones(1, 1, R, R), m, 3.0)
    assert torch.equal(out, frames) and not bool(mask.any())


def test_color_match_moves_the_mean_to_the_source():
    g = torch.Generator().manual_seed(0)
    generated = 0.2 + 0.3 * torch.rand(2, 3, 64, 64, generator=g)
    source = 0.45 + 0.3 * torch.rand(2, 3, 64, 64, generator=g)
    source[1, 0] *= 0.6                                   # a differently tinted second sample
    mask = torch.zeros(2, 1, 64, 64)
    mask[..., 8:56, 8:56] = 1
    out = color_match(generated, source, mask)
    sel = mask.bool().expand(2, 3, 64, 64)

    def masked_mean(x):
        return torch.stack([x[i][sel[i]].view(3, -1).mean(1) for i in range(2)])

    before = (masked_mean(rgb_to_lab(generated)) - masked_mean(rgb_to_lab(source))).abs().max()
    after = (masked_mean(rgb_to_lab(out)) - masked_mean(rgb_to_lab(source))).abs().max()
    assert float(before) > 10 and float(after) < 0.5
    rgb_before = (masked_mean(generated) - masked_mean(source)).abs().max()
    rgb_after = (masked_mean(out) - masked_mean(source)).abs().max()
    assert float(rgb_after) < 0.03 and float(rgb_after) < float(rgb_before) / 10
    # no mask, no statistics: the sample is left alone
    empty = color_match(generated, source, torch.zeros_like(mask))
    assert torch.equal(empty, generated)


def test_composite_resizes_matches_and_keeps_the_outside():
    original = _smooth_frames(2, 120, 160)
    processed = torch.rand(1, 3, 60, 80)                  # half size, one image for both frames
    mask = torch.zeros(1, 60, 80)
    mask[:, 15:45, 20:60] = 1
    out, used = composite(original, processed, mask, feather_px=3.0, color_match=True)
    assert out.shape == original.shape and used.shape == (2, 1, 120, 160)
    outside = (used == 0).expand_as(original)
    assert torch.equal(out[outside], original[outside])
    full = torch.ones(1, 1, 120, 160)
    plain, _ = composite(original[:1], processed, full, feather_px=0.0, color_match=False)
    up = torch.nn.functional.interpolate(processed, size=(120, 160), mode="bicubic", align_corners=False).clamp(0, 1)
    torch.testing.assert_close(plain, up, atol=1e-5, rtol=0)


def test_paste_back_checks_its_inputs():
    with pytest.raises(InputShapeError, match="one crop, mask and affine per frame"):
        paste_back(_smooth_frames(2), torch.rand(1, 3, R, R), torch.ones(1, 1, R, R),
                   _affine((50, 50), 0, 1)[None], 2.0)
