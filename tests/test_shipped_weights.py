"""The weights in weights/: listed in the manifest with their real sha256, loadable, and the generator swaps.

The swap check uses held-out people (never trained on) and FaceNet, our conditioning network, so it is a
regression guard that the shipped file really moves identity, not a quality figure (those come from the dlib
judge in `python -m fewshot_core.eval swap`, recorded in docs/EVALUATION.md).
"""
from __future__ import annotations

import hashlib
import re

import pytest
import torch
import torch.nn.functional as F

from fewshot_core.imageio import load_image
from fewshot_core.paths import weights_dir
from fewshot_core.weights import default_generator_path
from tests.conftest import lfw_photo

MANIFEST = weights_dir() / "MANIFEST.md"


@pytest.mark.parametrize("path", sorted(weights_dir().glob("*.safetensors")), ids=lambda p: p.name)
def test_every_shipped_file_has_a_current_manifest_entry(path):
    text = MANIFEST.read_text()
    section = re.search(rf"^## {re.escape(path.name)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, f"{MANIFEST} has no '## {path.name}' section"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest in section.group(1), f"the manifest's sha256 for {path.name} is stale (actual {digest})"
    assert "non-commercial" in section.group(1)


def largest_face_landmarks(model, image: torch.Tensor) -> torch.Tensor:
    faces = model.detector.detect(image)[0]
    assert len(faces.scores), "no face found"
    area = (faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])
    return faces.landmarks[int(area.argmax())]


def test_shipped_generator_moves_identity_and_keeps_the_face_in_place(model_dir, data_root):
    from fewshot_core.pipeline import SwapModel

    model = SwapModel.load(default_generator_path(), model_dir=model_dir)
    assert model.config.structure == "parser"
    source = load_image(lfw_photo("Hillary_Clinton", 1))
    target = model.encode_identity([load_image(lfw_photo("Donald_Rumsfeld", i))[0] for i in (1, 2, 3)])
    swapped, mask = model.swap(source, target)
    assert swapped.shape == source.shape and 0.02 < float(mask.mean()) < 0.6

    def embedding(image: torch.Tensor) -> torch.Tensor:
        return model.encode_identity([image[0]]).vector

    before, after = embedding(source), embedding(swapped)
    gain = float(F.cosine_similarity(after, target.vector, dim=0) - F.cosine_similarity(before, target.vector, dim=0))
    assert gain > 0.15, f"the swap moved the face only {gain:.3f} (cosine) toward the target identity"
    lm_source, lm_swapped = (largest_face_landmarks(model, image) for image in (source, swapped))
    box = float(lm_source[:, 0].max() - lm_source[:, 0].min())
    assert float((lm_source - lm_swapped).norm(dim=-1).max()) < 0.15 * box, "the swapped face moved"


def test_structure_lock_nudges_the_generated_face_and_nothing_else(model_dir, data_root):
    """The lock only warps the generated face by a few pixels: the photo outside the mask stays as it was,
    and the face changes a little, not wholesale. (Whether it keeps expression better is an evaluation
    figure: docs/EVALUATION.md.)"""
    from fewshot_core.pipeline import SwapModel, SwapSettings

    model = SwapModel.load(default_generator_path(), model_dir=model_dir)
    source = load_image(lfw_photo("Hillary_Clinton", 1))
    target = model.encode_identity([load_image(lfw_photo("Donald_Rumsfeld", i))[0] for i in (1, 2, 3)])
    free, free_mask = model.swap(source, target, SwapSettings(structure_lock=0.0))
    locked, locked_mask = model.swap(source, target, SwapSettings(structure_lock=1.0))
    for out, mask in ((free, free_mask), (locked, locked_mask)):
        outside = (mask == 0).expand_as(source)
        assert torch.equal(out[outside], source[outside])
    inside = (torch.maximum(free_mask, locked_mask) > 0.5).expand_as(source)
    change = (locked - free).abs()[inside]
    assert change.mean() > 1e-3, "the lock did nothing"
    assert change.mean() < 0.05 and float((locked_mask - free_mask).abs().mean()) < 0.02, "more than a nudge"
