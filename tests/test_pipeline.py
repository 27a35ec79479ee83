"""The whole swap on real photos with a random-weight generator (plumbing, not quality)."""
from __future__ import annotations

import pytest
import torch

from fewshot_core.errors import InputShapeError, ModelFileMissingError, NoFaceError
from fewshot_core.imageio import load_image
from fewshot_core.pipeline import SwapModel, SwapSettings, parse_face_indices
from tests.conftest import lfw_photo


@pytest.fixture(scope="module")
def model(model_dir, random_generator_file):
    return SwapModel.load(random_generator_file, model_dir=model_dir)


@pytest.fixture(scope="module")
def identity(model, data_root):
    return model.encode_identity([load_image(lfw_photo("Colin_Powell", i))[0] for i in (1, 2)])


def two_faces(data_root) -> torch.Tensor:
    left = load_image(lfw_photo("George_W_Bush", 1))
    right = load_image(lfw_photo("Tony_Blair", 1))
    return torch.cat([left, right], dim=-1)  # 250 x 500, a face in each half


def test_swap_changes_only_masked_pixels(model, identity, data_root):
    source = load_image(lfw_photo("George_W_Bush", 2))
    out, mask = model.swap(source, identity)
    assert out.shape == source.shape and mask.shape == (1, 1, *source.shape[-2:])
    assert out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 1
    outside = (mask == 0).expand_as(source)
    assert outside.float().mean() > 0.3
    assert torch.equal(out[outside], source[outside])
    assert (out - source).abs()[(mask > 0.5).expand_as(source)].mean() > 0.01
    ys, xs = torch.nonzero(mask[0, 0] > 0.5, as_tuple=True)
    assert 60 < xs.float().mean() < 190 and 60 < ys.float().mean() < 190  # on the central face


def test_face_selection_by_index(model, identity, data_root):
    image = two_faces(data_root)
    left_face, right_face = (..., slice(80, 170), slice(80, 170)), (..., slice(80, 170), slice(350, 420))
    dets = model.detect(image)[0]
    assert len(dets.boxes) == 3  # Blair's photo has a second person in the background, between the two
    out, mask = model.swap(image, identity, SwapSettings(faces=[0], order="left_to_right"))
    assert mask[right_face].max() == 0 and mask[left_face].min() > 0.3
    assert torch.equal(out[right_face], image[right_face])
    _, largest = model.swap(image, identity, SwapSettings(faces=[0], order="largest_first"))
    assert largest[left_face].max() == 0 and largest[right_face].min() > 0.3
    _, both = model.swap(image, identity, SwapSettings(faces=None))
    assert both[left_face].min() > 0.3 and both[right_face].min() > 0.3


def test_batch_of_frames_matches_single_frames(model, identity, data_root):
    # One refinement step, not the default ten: on some CPUs (seen on an AMD EPYC) oneDNN rounds a batch of two
    # differently from a single frame (about 3e-6), and Adam's later steps, about lr per coordinate whatever the
    # gradient's size, grow that into 1e-3 differences over ten steps; the chunking itself must change nothing.
    settings = SwapSettings(identity_refine_steps=1)
    frames = torch.cat([load_image(lfw_photo("George_W_Bush", i)) for i in (2, 3, 4)])
    batch_out, _ = model.swap(frames, identity, settings, chunk_size=2)
    single, _ = model.swap(frames[1:2], identity, settings)
    assert torch.allclose(batch_out[1:2], single, atol=1e-4)


def test_progress_and_interrupt_hooks(model, identity, data_root):
    frames = torch.cat([load_image(lfw_photo("George_W_Bush", i)) for i in (2, 3, 4)])
    seen = []
    model.swap(frames, identity, chunk_size=1, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]

    class Stop(Exception):
        pass

    def interrupt():
        raise Stop

    with pytest.raises(Stop):
        model.swap(frames, identity, check_interrupt=interrupt)


def test_partial_strength_runs_and_differs(model, identity, data_root):
    source = load_image(lfw_photo("George_W_Bush", 2))
    full, _ = model.swap(source, identity, SwapSettings(strength=1.0))
    half, _ = model.swap(source, identity, SwapSettings(strength=0.5))
    assert not torch.allclose(full, half)


def test_source_without_face_is_a_clear_error(model, identity):
    with pytest.raises(NoFaceError, match="No face found in the source"):
        model.swap(torch.full((1, 3, 256, 256), 0.4), identity)


def test_bad_input_shapes_are_clear_errors(model, identity):
    with pytest.raises(InputShapeError, match=r"\[B, 3, H, W\]"):
        model.swap(torch.zeros(1, 256, 256, 3), identity)
    with pytest.raises(InputShapeError, match="'all' or a comma-separated"):
        parse_face_indices("first")
    assert parse_face_indices(" all ") is None and parse_face_indices("0, 2") == [0, 2]


def test_no_generator_means_a_clear_error(swap_model, identity):
    with pytest.raises(ModelFileMissingError, match="No generator weights"):
        swap_model.swap(torch.rand(1, 3, 64, 64), identity)


def test_structure_lock_out_of_range_is_a_clear_error(model, identity, data_root):
    with pytest.raises(InputShapeError, match="structure_lock"):
        model.swap(load_image(lfw_photo("George_W_Bush", 2)), identity, SwapSettings(structure_lock=1.5))


def test_unknown_lock_detail_and_source_size_out_of_range_are_clear_errors(model, identity, data_root):
    source = load_image(lfw_photo("George_W_Bush", 2))
    with pytest.raises(InputShapeError, match="lock_detail must be one of"):
        model.swap(source, identity, SwapSettings(lock_detail="ultra"))
    with pytest.raises(InputShapeError, match="source_detail_px"):
        model.swap(source, identity, SwapSettings(source_detail_px=model.config.resolution + 1))


def test_source_detail_px_zero_is_the_generators_own_size_and_other_sizes_change_the_output(model, identity,
                                                                                              data_root):
    source = load_image(lfw_photo("George_W_Bush", 2))
    own, _ = model.swap(source, identity, SwapSettings(source_detail_px=0))
    explicit, _ = model.swap(source, identity, SwapSettings(source_detail_px=model.config.infer_degrade_px))
    sharper, _ = model.swap(source, identity, SwapSettings(source_detail_px=32))
    assert torch.equal(own, explicit)
    assert (sharper - own).abs().mean() > 1e-4


def _fine_energy(images: torch.Tensor, where: torch.Tensor) -> float:
    """Mean square of what a 3x3 box blur removes, over `where`: how much fine detail an image has there."""
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(images, (1, 1, 1, 1), mode="replicate"), 3, 1)
    return float((images - blurred)[where].pow(2).mean())


def test_photo_detail_brings_the_sources_fine_detail_back_inside_the_mask_only(model, identity, data_root):
    source = load_image(lfw_photo("George_W_Bush", 2))
    plain, mask = model.swap(source, identity, SwapSettings(photo_detail=0.0))
    detailed, same_mask = model.swap(source, identity, SwapSettings(photo_detail=1.0))
    assert torch.equal(mask, same_mask)
    outside = (mask == 0).expand_as(source)
    assert torch.equal(detailed[outside], source[outside])
    inside = (mask > 0.5).expand_as(source)
    assert int(inside.sum()) > 3000
    fine_src, fine_plain, fine_detailed = (_fine_energy(x, inside) for x in (source, plain, detailed))
    assert abs(fine_detailed - fine_src) < 0.5 * abs(fine_plain - fine_src)
    with pytest.raises(InputShapeError, match="photo_detail"):
        model.swap(source, identity, SwapSettings(photo_detail=1.5))


def _face_lab_mean(images: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    from kornia.color import rgb_to_lab

    return rgb_to_lab(images)[0][:, where].mean(dim=1)


def test_target_skin_tone_moves_the_faces_colour_toward_the_targets_skin(model, identity, data_root):
    from dataclasses import replace

    assert identity.skin is not None and identity.skin.shape == (2, 2, 3) and identity.skin_tone is not None
    source = load_image(lfw_photo("George_W_Bush", 2))
    own, mask = model.swap(source, identity, SwapSettings(identity_refine_steps=0))
    inside = mask[0, 0] > 0.8 * mask.max()
    assert int(inside.sum()) > 1000
    far_target = replace(identity, skin=identity.skin.clone())
    far_target.skin[:, 0, 1:] = _face_lab_mean(own, inside)[1:] + torch.tensor([12.0, -15.0])  # a, b
    colour, _ = model.swap(source, far_target, SwapSettings(identity_refine_steps=0, target_skin_tone=1.0))
    half, _ = model.swap(source, far_target, SwapSettings(identity_refine_steps=0, target_skin_tone=0.5))
    moved = _face_lab_mean(colour, inside) - _face_lab_mean(own, inside)
    moved_half = _face_lab_mean(half, inside) - _face_lab_mean(own, inside)
    assert moved[1] > 4 and moved[2] < -5  # toward the target's a and b
    assert abs(float(moved[0])) < 1.5  # 'colour' keeps the source's lightness
    assert 0.3 < float(moved_half[1] / moved[1]) < 0.7
    outside = (mask == 0).expand_as(source)
    assert torch.equal(colour[outside], source[outside])


def test_target_skin_tone_without_skin_statistics_is_a_clear_error(model, identity, data_root):
    from dataclasses import replace

    source = load_image(lfw_photo("George_W_Bush", 2))
    with pytest.raises(InputShapeError, match="no skin-tone statistics.*Encode the identity again from colour"):
        model.swap(source, replace(identity, skin=None), SwapSettings(target_skin_tone=0.5))
    with pytest.raises(InputShapeError, match="target_skin_tone must be between"):
        model.swap(source, identity, SwapSettings(target_skin_tone=2.0))
    with pytest.raises(InputShapeError, match="skin_tone_channels must be one of"):
        model.swap(source, identity, SwapSettings(target_skin_tone=0.5, skin_tone_channels="hue"))
    grey = source.mean(dim=1, keepdim=True).expand(-1, 3, -1, -1).contiguous()  # a black-and-white source
    plain, mask = model.swap(grey, identity, SwapSettings(identity_refine_steps=0))
    toned, _ = model.swap(grey, identity, SwapSettings(identity_refine_steps=0, target_skin_tone=1.0))
    assert torch.equal(plain, toned)  # is not coloured in
    # without the colour match the setting has nothing to act on, and an old identity is fine
    model.swap(source, replace(identity, skin=None),
               SwapSettings(target_skin_tone=0.5, color_match=False, identity_refine_steps=0))


def test_face_index_preview_numbers_the_faces_the_swap_selects(model, identity, data_root):
    import re

    from fewshot_core.face_preview import face_index_preview

    image = two_faces(data_root)
    for order in ("left_to_right", "largest_first"):
        _, report = face_index_preview(image, model.detect(image, min_face_size=40), order)
        boxes = [tuple(map(int, re.search(r"x (\d+)-(\d+), y (\d+)-(\d+)", line).groups()))
                 for line in report.splitlines()]
        assert len(boxes) == 3
        for index in (0, 2):
            _, mask = model.swap(image, identity, SwapSettings(faces=[index], order=order, identity_refine_steps=0))
            ys, xs = torch.nonzero(mask[0, 0] > 0.5, as_tuple=True)
            x0, x1, y0, y1 = boxes[index]
            assert x0 <= xs.float().mean() <= x1 and y0 <= ys.float().mean() <= y1
