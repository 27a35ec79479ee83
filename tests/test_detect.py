"""MTCNN detector: conversion, NMS, real photos, batching, no-face images, input checks."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from fewshot_core.detect import FaceDetections, FaceDetector, order_faces
from fewshot_core.detect.convert import convert_mtcnn
from fewshot_core.detect.nms import batched_nms, pairwise_overlap
from fewshot_core.errors import InputShapeError, ModelFileMissingError, WeightsMismatchError

WHEEL = Path.home() / ".cache" / "fewshot-swap" / "pkgs" / "facenet_pytorch-2.6.0-py3-none-any.whl"
DATA = Path(os.environ.get("FEWSHOT_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
SINGLE_FACE = [
    "lfw/AJ_Cook/AJ_Cook_0001.jpg",
    "lfw/Alvaro_Noboa/Alvaro_Noboa_0001.jpg",
    "lfw/Ari_Fleischer/Ari_Fleischer_0003.jpg",
    "lfw/Hilary_Duff/Hilary_Duff_0002.jpg",
    "celeba299/images/000093.jpg",
    "celeba299/images/000114.jpg",
]
LFW_BATCH = SINGLE_FACE[:4]  # all 250x250


@pytest.fixture(scope="module")
def mtcnn_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The converted detector weights (converted here from the cached wheel)."""
    if not WHEEL.is_file():
        pytest.skip(f"registry wheel not cached at {WHEEL}")
    path = tmp_path_factory.mktemp("models") / "mtcnn.safetensors"
    save_file(convert_mtcnn(WHEEL), str(path))
    return path


@pytest.fixture(scope="module")
def detector(mtcnn_path: Path) -> FaceDetector:
    return FaceDetector.from_file(mtcnn_path)


def load_photo(relative: str) -> torch.Tensor:
    path = DATA / relative
    if not path.is_file():
        pytest.skip(f"test photo missing: {path}")
    array = np.array(Image.open(path).convert("RGB"))
    return torch.from_numpy(array).permute(2, 0, 1).float().div(255).unsqueeze(0)


def central_face(dets: FaceDetections, height: int, width: int) -> int:
    """Index of the face whose box centre is nearest the image centre."""
    centre = torch.tensor([(width - 1) / 2, (height - 1) / 2])
    box_centres = (dets.boxes[:, :2] + dets.boxes[:, 2:]) / 2
    return int((box_centres - centre).norm(dim=1).argmin())


# --- conversion and loading -------------------------------------------------------------------

def test_convert_gives_prefixed_float_state_that_loads(mtcnn_path: Path) -> None:
    state = convert_mtcnn(WHEEL)
    assert {key.split(".")[0] for key in state} == {"pnet", "rnet", "onet"}
    assert all(v.dtype == torch.float32 and v.is_contiguous() for v in state.values())
    model = FaceDetector()
    assert set(state) == set(model.state_dict())
    loaded = FaceDetector.from_file(mtcnn_path)
    torch.testing.assert_close(loaded.onet.dense6_3.weight, state["onet.dense6_3.weight"])


def test_missing_file_names_path_and_fetch_command(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "mtcnn.safetensors"
    with pytest.raises(ModelFileMissingError) as info:
        FaceDetector.from_file(missing)
    assert str(missing) in str(info.value) and "python -m fewshot_core.models fetch" in str(info.value)


def test_wrong_or_broken_file_is_weights_mismatch(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.safetensors"
    save_file({"pnet.conv1.weight": torch.zeros(10, 3, 5, 5)}, str(wrong))
    with pytest.raises(WeightsMismatchError, match="pnet.conv1.weight"):
        FaceDetector.from_file(wrong)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsMismatchError):
        FaceDetector.from_file(broken)


# --- NMS ------------------------------------------------------------------------------------------

def greedy_reference(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, t: float, mode: str) -> list[int]:
    """The textbook loop, for comparison."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    overlap = pairwise_overlap(boxes, boxes, mode)
    kept: list[int] = []
    for i in order:
        if all(groups[j] != groups[i] or overlap[j, i] <= t for j in kept):
            kept.append(i)
    return kept


@pytest.mark.parametrize("mode", ["union", "min"])
def test_batched_nms_equals_greedy_loop(mode: str) -> None:
    gen = torch.Generator().manual_seed(3)
    for _ in range(20):
        n = 60
        xy = torch.rand(n, 2, generator=gen) * 40
        wh = 5 + torch.rand(n, 2, generator=gen) * 20
        boxes = torch.cat((xy, xy + wh), dim=1)
        scores = torch.rand(n, generator=gen)
        groups = torch.randint(0, 3, (n,), generator=gen)
        kept = batched_nms(boxes, scores, groups, 0.4, mode)
        assert kept.tolist() == greedy_reference(boxes, scores, groups, 0.4, mode)


def test_batched_nms_empty() -> None:
    assert batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.5).numel() == 0


# --- detection on real photos ---------------------------------------------------------------

@pytest.mark.models
@pytest.mark.parametrize("relative", SINGLE_FACE)
def test_finds_the_face_with_plausible_landmarks(detector: FaceDetector, relative: str) -> None:
    image = load_photo(relative)
    _, _, h, w = image.shape
    dets = detector.detect(image)[0]
    assert len(dets) >= 1
    face = dets.select(central_face(dets, h, w))
    box, lm, score = face.boxes[0], face.landmarks[0], float(face.scores[0])
    assert score > 0.9
    assert box[0] < w / 2 < box[2] and box[1] < h / 2 < box[3], "the face in these photos is centred"
    assert (box[2] - box[0]) > 0.25 * w
    left_eye, right_eye, nose, mouth_left, mouth_right = lm
    assert left_eye[0] < nose[0] < right_eye[0]
    assert mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    assert (lm[:, 0] > box[0]).all() and (lm[:, 0] < box[2]).all()
    assert (lm[:, 1] > box[1]).all() and (lm[:, 1] < box[3]).all()


@pytest.mark.models
def test_batched_equals_one_by_one(detector: FaceDetector) -> None:
    images = torch.cat([load_photo(p) for p in LFW_BATCH])
    images = torch.cat((images, torch.full_like(images[:1], 0.5)))  # a faceless one in the middle of nowhere
    batched = detector.detect(images)
    assert len(batched) == images.shape[0]
    for i, dets in enumerate(batched):
        single = detector.detect(images[i : i + 1])[0]
        assert len(dets) == len(single)
        torch.testing.assert_close(dets.boxes, single.boxes, atol=1e-2, rtol=0)
        torch.testing.assert_close(dets.landmarks, single.landmarks, atol=1e-2, rtol=0)
        torch.testing.assert_close(dets.scores, single.scores, atol=1e-4, rtol=0)
    assert len(batched[-1]) == 0


@pytest.mark.models
def test_mirrored_photos_give_mirrored_landmarks(detector: FaceDetector) -> None:
    """Checks the coordinate convention: mirroring the photo mirrors the landmarks about x = (W - 1) / 2
    without a systematic shift (half a pixel off would shift every point by 1 px here), and the
    left/right order follows the image."""
    images = torch.cat([load_photo(p) for p in LFW_BATCH])
    width = images.shape[-1]
    differences = []
    for plain, mirrored in zip(detector.detect(images), detector.detect(images.flip(-1))):
        a = plain.landmarks[central_face(plain, 250, 250)]
        b = mirrored.landmarks[central_face(mirrored, 250, 250)].clone()
        b[:, 0] = width - 1 - b[:, 0]
        differences.append(a - b[[1, 0, 2, 4, 3]])  # the mirror swaps left and right
    difference = torch.stack(differences)
    assert difference[..., 0].mean().abs() < 0.6
    assert difference.norm(dim=-1).max() < 5.0


@pytest.mark.models
def test_upscaled_photo_scales_landmarks(detector: FaceDetector) -> None:
    image = load_photo(SINGLE_FACE[1])
    big = torch.nn.functional.interpolate(image, scale_factor=2, mode="bilinear", align_corners=False).clamp(0, 1)
    small_dets, big_dets = detector.detect(image)[0], detector.detect(big)[0]
    small_lm = small_dets.landmarks[central_face(small_dets, 250, 250)]
    big_lm = big_dets.landmarks[central_face(big_dets, 500, 500)]
    expected = small_lm * 2 + 0.5  # pixel centres at integers: x_big = 2 x + 0.5
    eye_distance = (expected[1] - expected[0]).norm()
    # O-Net sees other crops at the other scale, so points move a few pixels; a wrong scale mapping moves them far
    assert (big_lm - expected).norm(dim=1).mean() < 0.1 * eye_distance
    assert (big_lm.mean(0) - expected.mean(0)).norm() < 0.05 * eye_distance


@pytest.mark.models
def test_no_face_in_flat_or_noise_images(detector: FaceDetector) -> None:
    gen = torch.Generator().manual_seed(0)
    grey = torch.full((1, 3, 200, 300), 0.5)
    noise = torch.rand(2, 3, 256, 256, generator=gen)
    assert [len(d) for d in detector.detect(grey)] == [0]
    assert [len(d) for d in detector.detect(noise)] == [0, 0]
    tiny = torch.rand(1, 3, 8, 8, generator=gen)  # smaller than any face: no pyramid level at all
    out = detector.detect(tiny)[0]
    assert out.boxes.shape == (0, 4) and out.landmarks.shape == (0, 5, 2) and out.scores.shape == (0,)


@pytest.mark.models
def test_rejects_wrong_inputs(detector: FaceDetector) -> None:
    with pytest.raises(InputShapeError, match="permute"):
        detector.detect(torch.rand(1, 64, 64, 3))
    with pytest.raises(InputShapeError, match="255"):
        detector.detect(torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8))
    with pytest.raises(InputShapeError, match=r"\[0, 1\]"):
        detector.detect(torch.rand(1, 3, 64, 64) * 255)


def test_order_faces() -> None:
    boxes = torch.tensor([[50.0, 0, 60, 10], [0, 0, 30, 30], [20, 0, 40, 20]])
    dets = FaceDetections(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.arange(3.0).view(3, 1, 1).expand(3, 5, 2))
    ltr = order_faces(dets, "left_to_right")
    assert ltr.boxes[:, 0].tolist() == [0, 20, 50]
    assert ltr.landmarks[:, 0, 0].tolist() == [1, 2, 0]  # rows move together
    largest = order_faces(dets, "largest_first")
    assert largest.scores.tolist() == pytest.approx([0.8, 0.7, 0.9])
    with pytest.raises(ValueError):
        order_faces(dets, "random")  # type: ignore[arg-type]
