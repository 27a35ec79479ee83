"""Identity averaging, outlier report, strength blending, and identity files."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from fewshot_core.errors import InputShapeError, ModelFileMissingError, NoFaceError, WeightsMismatchError
from fewshot_core.identity import average_identity, blend_identity, load_identity, save_identity
from fewshot_core.imageio import load_image
from tests.conftest import lfw_photo


def test_average_of_one_photo_is_that_photo():
    e = F.normalize(torch.randn(1, 128), dim=1)
    identity = average_identity(e)
    assert torch.allclose(identity.vector, e[0], atol=1e-6)
    assert identity.outliers == []


def test_average_is_unit_norm_and_between_the_photos():
    e = F.normalize(torch.randn(4, 128), dim=1)
    identity = average_identity(e, outlier_threshold=-1.0)
    assert torch.isclose(identity.vector.norm(), torch.tensor(1.0), atol=1e-5)
    assert all((identity.vector @ e.T) > 0)


def test_real_photo_of_someone_else_is_reported(swap_model, data_root):
    photos = [load_image(lfw_photo("George_W_Bush", i))[0] for i in (1, 2, 3, 4)]
    photos.append(load_image(lfw_photo("Serena_Williams", 1))[0])
    identity = swap_model.encode_identity(photos)
    assert identity.outliers == [4], identity.report()
    assert identity.agreement[:4].min() > identity.agreement[4]
    assert "photo 4" in identity.report() and "different person" in identity.report()


def test_target_photo_without_face_is_an_error_naming_it(swap_model, data_root):
    photos = [load_image(lfw_photo("George_W_Bush", 1))[0], torch.full((3, 200, 200), 0.5)]
    with pytest.raises(NoFaceError, match="target photo 1"):
        swap_model.encode_identity(photos)


def test_blend_strength_endpoints_and_norm():
    source, target = F.normalize(torch.randn(3, 128), dim=1), F.normalize(torch.randn(128), dim=0)
    assert torch.allclose(blend_identity(source, target, 0.0), source, atol=1e-5)
    assert torch.allclose(blend_identity(source, target, 1.0), target.expand(3, -1), atol=1e-5)
    half = blend_identity(source, target, 0.5)
    assert torch.allclose(half.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(half @ target, (half * source).sum(1), atol=1e-4)  # equidistant on the sphere


def test_identity_file_round_trip(tmp_path):
    skin = torch.rand(3, 2, 3) * 50
    skin[1] = float("nan")  # a photo whose skin was not found
    identity = average_identity(F.normalize(torch.randn(3, 128), dim=1), outlier_threshold=0.99, skin=skin)
    path = save_identity(identity, tmp_path / "person.safetensors")
    loaded = load_identity(path)
    assert torch.equal(loaded.vector, identity.vector)
    assert loaded.outliers == identity.outliers and loaded.num_photos == 3
    assert torch.equal(loaded.skin.nan_to_num(-1), skin.nan_to_num(-1))
    report = loaded.report().splitlines()
    assert "no skin tone" in report[2] and "no skin tone" not in report[1] + report[3]
    plain = load_identity(save_identity(average_identity(identity.per_photo), tmp_path / "older.safetensors"))
    assert plain.skin is None and plain.skin_tone is None  # as files saved before skin statistics existed


def test_skin_tone_leaves_out_outliers_and_photos_without_skin():
    units = F.normalize(torch.randn(3, 128), dim=1)
    units[1] = F.normalize(units[0] + 0.05 * torch.randn(128), dim=0)
    skin = torch.tensor([[[50.0, 10.0, 20.0], [5.0, 2.0, 3.0]],
                         [[70.0, 20.0, 10.0], [7.0, 4.0, 5.0]],
                         [[10.0, 0.0, 0.0], [1.0, 1.0, 1.0]]])
    identity = average_identity(units, outlier_threshold=0.5, skin=skin)
    assert identity.outliers == [2]
    assert torch.allclose(identity.skin_tone, skin[:2].mean(dim=0))
    with pytest.raises(InputShapeError, match="skin statistics"):
        average_identity(units, skin=skin[:2])


def test_wrong_identity_files_give_clear_errors(tmp_path):
    with pytest.raises(ModelFileMissingError, match="does not exist"):
        load_identity(tmp_path / "missing.safetensors")
    other = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, str(other))
    with pytest.raises(WeightsMismatchError, match="not a fewshot-swap identity"):
        load_identity(other)
    bad_skin = tmp_path / "bad_skin.safetensors"
    save_file({"vector": torch.ones(128), "per_photo": torch.ones(2, 128), "skin": torch.zeros(3, 2, 3)},
              str(bad_skin), metadata={"format": "fewshot-identity-v1"})
    with pytest.raises(WeightsMismatchError, match="skin statistics of shape"):
        load_identity(bad_skin)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightsMismatchError, match="not a readable"):
        load_identity(garbage)
