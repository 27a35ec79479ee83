"""The face-index preview: boxes and numbers drawn where the swap's `faces` setting counts them."""
from __future__ import annotations

import pytest
import torch

from fewshot_core.detect import FaceDetections
from fewshot_core.face_preview import BOX_COLOURS, digit_bitmap, draw_face_indices, face_index_preview


def _faces(boxes: list[list[float]]) -> FaceDetections:
    b = torch.tensor(boxes)
    centre = (b[:, :2] + b[:, 2:]) / 2
    return FaceDetections(b, torch.ones(len(boxes)), centre[:, None].expand(-1, 5, -1).clone())


def test_digits_are_drawn_from_their_glyphs():
    assert digit_bitmap("1").tolist() == [[0, 1, 0], [1, 1, 0], [0, 1, 0], [0, 1, 0], [1, 1, 1]]
    assert digit_bitmap("10").shape == (5, 7) and digit_bitmap("10")[:, 3].sum() == 0
    with pytest.raises(ValueError, match="digits only"):
        digit_bitmap("a")


def test_boxes_are_drawn_in_each_faces_colour_and_the_rest_is_unchanged():
    image = torch.full((3, 200, 300), 0.5)
    out = draw_face_indices(image, _faces([[40, 60, 120, 160], [180, 70, 260, 170]]))
    assert torch.equal(image, torch.full((3, 200, 300), 0.5))  # the input is not drawn on
    assert torch.allclose(out[:, 100, 40], BOX_COLOURS[0]) and torch.allclose(out[:, 100, 259], BOX_COLOURS[1])
    assert torch.equal(out[:, 5:40, 150], image[:, 5:40, 150]) and torch.equal(out[:, 190:, :], image[:, 190:, :])
    label = out[:, 60 - 14:60, 40:60]  # the number's plate sits just above face 0's box
    assert (label == 0).all(dim=0).any() and (label == BOX_COLOURS[0][:, None, None]).all(dim=0).any()


def test_report_follows_the_chosen_order():
    images = torch.full((1, 3, 200, 300), 0.5)
    dets = [_faces([[180, 20, 280, 180], [10, 80, 60, 130]])]  # the larger face is on the right
    _, left_first = face_index_preview(images, dets, "left_to_right")
    _, largest = face_index_preview(images, dets, "largest_first")
    assert left_first.splitlines()[0].startswith("image 0: face 0 at x 10-60")
    assert largest.splitlines()[0].startswith("image 0: face 0 at x 180-280")
    preview, none = face_index_preview(images, [_faces([[0, 0, 1, 1]]).select(slice(0, 0))], "left_to_right")
    assert none == "image 0: no face found" and torch.equal(preview, images)
