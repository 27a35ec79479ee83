"""The landmark structure map: channel layout, partition of unity, parts where the landmarks are."""
from __future__ import annotations

import math

import pytest
import torch

from fewshot_core.errors import InputShapeError, WeightsMismatchError
from fewshot_core.generator import GeneratorConfig
from fewshot_core.structure import (
    STRUCTURE_CHANNELS,
    LandmarkStructureMapper,
    StructureMapper,
    landmark_structure_map,
)

# A frontal face in a 128 px crop (eyes, nose, mouth corners).
FRONTAL = torch.tensor([[43.8, 59.1], [84.0, 58.9], [64.0, 82.0], [47.5, 105.6], [80.8, 105.4]])


def _rotate(points: torch.Tensor, degrees: float, scale: float = 1.0, shift=(0.0, 0.0)) -> torch.Tensor:
    a = math.radians(degrees)
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    centre = points.mean(0)
    return (points - centre) @ rot.T * scale + centre + torch.tensor(shift)


def _channel(maps: torch.Tensor, name: str) -> torch.Tensor:
    return maps[:, STRUCTURE_CHANNELS.index(name)]


def _value_at(plane: torch.Tensor, xy: torch.Tensor) -> float:
    return float(plane[int(round(float(xy[1]))), int(round(float(xy[0])))])


def _centroid(plane: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(plane.shape[0]), torch.arange(plane.shape[1]), indexing="ij")
    total = plane.sum()
    return torch.stack([(plane * xs).sum() / total, (plane * ys).sum() / total])


def test_channels_match_the_parser_classes():
    parsing = pytest.importorskip("fewshot_core.parsing.classes")
    assert STRUCTURE_CHANNELS == parsing.PARSE_CLASSES


def test_map_is_a_partition_of_unity_with_one_channel_per_class():
    lms = torch.stack([FRONTAL, _rotate(FRONTAL, 25, 0.7), _rotate(FRONTAL, -40, 1.1, (5, -3))])
    maps = landmark_structure_map(lms, 128)
    assert maps.shape == (3, len(STRUCTURE_CHANNELS), 128, 128)
    assert float(maps.min()) >= 0.0
    torch.testing.assert_close(maps.sum(1), torch.ones(3, 128, 128), atol=1e-5, rtol=0)
    # every class is drawn somewhere (none silently empty)
    assert bool((maps.amax(dim=(2, 3)) > 0.5).all())


@pytest.mark.parametrize("degrees,scale,size", [(0, 1.0, 128), (30, 0.8, 128), (-20, 0.5, 64)])
def test_parts_sit_at_their_landmarks(degrees, scale, size):
    lm = _rotate(FRONTAL * size / 128, degrees, scale)
    maps = landmark_structure_map(lm[None], size)
    for name, point in (("iris_l", lm[0]), ("iris_r", lm[1])):
        plane = _channel(maps, name)[0]
        assert _value_at(plane, point) > 0.5, name
        assert float((_centroid(plane) - point).norm()) < 1.0, name
    assert _value_at(_channel(maps, "nose")[0], lm[2]) > 0.5
    mouth = sum(_channel(maps, n)[0] for n in ("lip_upper", "lip_lower", "mouth_inner"))
    assert _value_at(mouth, (lm[3] + lm[4]) / 2) > 0.5
    # brows are above the eyes (on the face's "up" side)
    up = torch.tensor([(lm[1] - lm[0])[1], -(lm[1] - lm[0])[0]])
    brow = _centroid(_channel(maps, "brow_l")[0])
    assert float(((brow - lm[0]) * up).sum()) > 0
    # corners are background, the cheek between eye and mouth corner is skin
    bg = _channel(maps, "background")[0]
    assert float(bg[0, 0]) > 0.99 and float(bg[-1, -1]) > 0.99
    assert _value_at(_channel(maps, "skin")[0], (lm[0] + lm[3]) / 2) > 0.5


def test_map_follows_a_shift_of_the_landmarks():
    a = landmark_structure_map(FRONTAL[None], 128)
    b = landmark_structure_map((FRONTAL + torch.tensor([7.0, -4.0]))[None], 128)
    for name in ("iris_r", "nose", "lip_lower"):
        moved = _centroid(_channel(b, name)[0]) - _centroid(_channel(a, name)[0])
        torch.testing.assert_close(moved, torch.tensor([7.0, -4.0]), atol=0.2, rtol=0)


def test_wrong_landmark_shape_is_refused():
    with pytest.raises(InputShapeError, match=r"\[B, 5, 2\]"):
        landmark_structure_map(torch.zeros(2, 68, 2), 128)


def test_mapper_protocol_and_generator_config_come_from_the_mapper():
    mapper = LandmarkStructureMapper()
    assert isinstance(mapper, StructureMapper)
    crops = torch.rand(2, 3, 64, 64)
    maps = mapper(crops, (FRONTAL * 0.5)[None].expand(2, 5, 2))
    assert maps.shape == (2, len(mapper.channels), 64, 64) and maps.dtype == crops.dtype

    cfg = GeneratorConfig.for_mapper(mapper, resolution=64, n_down=3)
    assert cfg.struct_channels == len(mapper.channels) and cfg.structure == "landmarks"
    cfg.check_mapper(mapper)

    class FiveClassParser:
        name = "parser"
        channels = ("background", "skin", "eyes", "nose", "mouth")

        def __call__(self, crops, landmarks_in_crop):
            return torch.zeros(crops.shape[0], 5, *crops.shape[-2:])

    other = FiveClassParser()
    assert GeneratorConfig.for_mapper(other).struct_channels == 5
    with pytest.raises(WeightsMismatchError, match="parser"):
        cfg.check_mapper(other)


def test_mapper_refuses_mismatched_batches():
    with pytest.raises(InputShapeError, match="one set of 5 landmarks per crop"):
        LandmarkStructureMapper()(torch.rand(2, 3, 64, 64), FRONTAL[None])
