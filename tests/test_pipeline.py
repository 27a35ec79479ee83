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
