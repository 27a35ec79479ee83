"""Temporal smoothing of face landmarks across video frames (`fewshot_core/temporal.py`)."""
from __future__ import annotations

import pytest
import torch

from fewshot_core.errors import InputShapeError
from fewshot_core.imageio import load_image
from fewshot_core.pipeline import SwapModel, SwapSettings
from fewshot_core.temporal import LandmarkStabiliser
from tests.conftest import lfw_photo

FACE = torch.tensor([[40.0, 50.0], [140.0, 50.0], [90.0, 100.0], [55.0, 140.0], [125.0, 140.0]])  # eyes 100 px apart


def run(stabiliser: LandmarkStabiliser, frames: torch.Tensor) -> torch.Tensor:
    """Filter [T, N, 5, 2] landmarks frame by frame."""
    return torch.stack([stabiliser(f) for f in frames])


def frame_to_frame(track: torch.Tensor) -> float:
    return float((track[1:] - track[:-1]).norm(dim=-1).pow(2).mean().sqrt())


def test_zero_smoothing_returns_the_landmarks_unchanged():
    noisy = FACE[None] + torch.randn(1, 5, 2)
    assert torch.equal(LandmarkStabiliser(0.0)(noisy), noisy)


def test_still_face_jitters_less_and_stays_in_place():
    gen = torch.Generator().manual_seed(0)
    frames = FACE[None, None] + 2.0 * torch.randn(60, 1, 5, 2, generator=gen)
    smoothed = run(LandmarkStabiliser(0.5), frames)
    assert frame_to_frame(smoothed) < 0.6 * frame_to_frame(frames)
    assert (smoothed[20:].mean(dim=0) - FACE).abs().max() < 1.0
    assert frame_to_frame(run(LandmarkStabiliser(1.0), frames)) < frame_to_frame(smoothed)


def test_moving_face_is_followed_with_little_lag():
    steps = torch.arange(30, dtype=torch.float32)[:, None, None, None]
    frames = FACE[None, None] + steps * torch.tensor([10.0, 0.0])  # 10 px (0.1 eye distance) per frame
    smoothed = run(LandmarkStabiliser(0.5), frames)
    lag = (frames[-1] - smoothed[-1])[..., 0].mean()
    assert 0.0 < lag < 5.0


def test_a_jump_or_a_new_face_starts_a_fresh_track():
    stabiliser = LandmarkStabiliser(1.0)
    stabiliser(FACE[None])
    jumped = FACE[None] + torch.tensor([300.0, 0.0])  # another place: a cut, or another image
    assert torch.equal(stabiliser(jumped), jumped)
    stabiliser(torch.zeros(0, 5, 2))  # a frame without faces ends every track
    moved = FACE[None] + 5.0
    assert torch.equal(stabiliser(moved), moved)


def test_two_faces_keep_their_own_tracks_when_their_order_changes():
    left, right = FACE, FACE + torch.tensor([400.0, 0.0])
    stabiliser = LandmarkStabiliser(1.0)
    stabiliser(torch.stack([left, right]))
    out = stabiliser(torch.stack([right + 4.0, left + 4.0]))  # same faces, listed the other way round
    assert (out[0] - right).abs().max() < 4.0 and (out[1] - left).abs().max() < 4.0
    assert (out[0] - right).min() > 0 and (out[1] - left).min() > 0  # each moved toward its own observation


def test_a_track_keeps_its_memo_and_a_new_face_gets_a_fresh_one():
    for smoothing in (0.0, 0.5):
        stabiliser = LandmarkStabiliser(smoothing)
        stabiliser(FACE[None])
        first = stabiliser.memos()
        first[0]["kept"] = 1
        moved = FACE[None] + 3.0
        out = stabiliser(moved)
        assert stabiliser.memos()[0] is first[0]                        # the same face continues its track
        assert torch.equal(out, moved) == (smoothing == 0.0)            # tracked, but unfiltered at 0
        stabiliser(torch.stack([FACE + 3.0, FACE + torch.tensor([400.0, 0.0])]))
        assert stabiliser.memos()[0] is first[0] and stabiliser.memos()[1] == {}
        stabiliser(FACE[None] + torch.tensor([300.0, 0.0]))             # a cut: nothing continues
        assert stabiliser.memos() == [{}]


def test_video_refines_each_face_once_and_reuses_its_code(model_dir, random_generator_file, data_root, monkeypatch):
    import fewshot_core.pipeline as pipeline

    calls: list[int] = []
    real = pipeline.refine_identity_code

    def counting(*args, **kwargs):
        calls.append(args[2].shape[0])  # faces refined in this call
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "refine_identity_code", counting)
    model = SwapModel.load(random_generator_file, model_dir=model_dir)
    identity = model.encode_identity([load_image(lfw_photo("Colin_Powell", 1))[0]])
    still = load_image(lfw_photo("George_W_Bush", 2))
    gen = torch.Generator().manual_seed(3)
    frames = (still.expand(3, -1, -1, -1) + 0.02 * torch.randn(3, *still.shape[1:], generator=gen)).clamp(0, 1)
    video = SwapSettings(faces=[0], temporal_smoothing=0.5, identity_refine_steps=2)
    refined, _ = model.swap(frames, identity, video, chunk_size=2)
    assert calls == [1]                                     # one face, refined on its first frame only
    plain, _ = model.swap(frames, identity, SwapSettings(faces=[0], temporal_smoothing=0.5, identity_refine_steps=0))
    assert (refined[2] - plain[2]).abs().max() > 1e-3       # later frames still use the refined code
    calls.clear()
    model.swap(frames, identity, SwapSettings(faces=[0], identity_refine_steps=2))
    assert calls == [1, 1, 1]                               # stills: every image is refined on its own
    calls.clear()
    stabiliser = LandmarkStabiliser(0.5)
    other = model.encode_identity([load_image(lfw_photo("Tony_Blair", 1))[0]])
    model.swap(frames[:1], identity, video, stabiliser=stabiliser)
    model.swap(frames[1:2], other, video, stabiliser=stabiliser)
    model.swap(frames[2:], other, video, stabiliser=stabiliser)
    assert calls == [1, 1]                                  # a new target code is refined again, then kept


def test_bad_settings_and_shapes_are_named():
    with pytest.raises(InputShapeError, match="smoothing must be within 0..1"):
        LandmarkStabiliser(1.5)
    with pytest.raises(InputShapeError, match=r"\[N, 5, 2\]"):
        LandmarkStabiliser(0.5)(FACE)


def test_swap_with_smoothing_changes_later_frames_only(model_dir, random_generator_file, data_root):
    model = SwapModel.load(random_generator_file, model_dir=model_dir)
    identity = model.encode_identity([load_image(lfw_photo("Colin_Powell", 1))[0]])
    still = load_image(lfw_photo("George_W_Bush", 2))
    gen = torch.Generator().manual_seed(1)
    frames = (still.expand(3, -1, -1, -1) + 0.03 * torch.randn(3, *still.shape[1:], generator=gen)).clamp(0, 1)
    plain, _ = model.swap(frames, identity, SwapSettings(faces=[0]))
    steady, _ = model.swap(frames, identity, SwapSettings(faces=[0], temporal_smoothing=0.8), chunk_size=2)
    assert torch.allclose(plain[0], steady[0], atol=1e-5)  # the first frame has no past
    for later in (1, 2):  # later frames lean on earlier ones; frame 2 is in the next chunk
        assert (plain[later] - steady[later]).abs().max() > 1e-3
    with pytest.raises(InputShapeError, match="smoothing"):
        model.swap(frames, identity, SwapSettings(temporal_smoothing=2.0))


def test_clip_benchmark_measures_motion_in_the_photo_frame():
    from fewshot_core.eval.temporal import PAN, PAN_STEP, flicker, landmark_errors, make_clip

    world = torch.rand(1, 3, 120, 160, generator=torch.Generator().manual_seed(2))
    frames, offsets = make_clip(world)
    assert frames.shape[0] == offsets.shape[0] and tuple(offsets[-1].tolist()) == (PAN * PAN_STEP[0], PAN * PAN_STEP[1])
    x, y = offsets[20].long().tolist()
    h, w = frames.shape[-2:]
    assert (frames[20] - world[0, :, y:y + h, x:x + w]).abs().mean() < 0.01  # the window, plus faint noise
    clean = torch.stack([world[0, :, oy:oy + h, ox:ox + w] for ox, oy in offsets.long().tolist()])
    full = torch.ones(len(clean), 1, h, w)
    assert flicker(clean, full, offsets) == 0.0            # the pan alone is not flicker
    assert flicker(frames, full, offsets) > 0.5            # fresh noise in each frame is
    still = FACE[None].expand(len(offsets), -1, -1)
    assert landmark_errors(still, FACE) == {"change_rest": 0.0, "change_pan": 0.0, "offset": 0.0}
    assert landmark_errors(still + offsets[:, None], FACE)["change_pan"] > 0  # following the window is an error
