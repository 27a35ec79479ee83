"""Every API workflow in workflows/api runs on a real ComfyUI 0.3.75 server (random-weight generator: plumbing)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fewshot_core.models import PARTS
from tests.conftest import ROOT, lfw_photo
from tests.host.server import PromptError

pytestmark = pytest.mark.host

API_DIR = ROOT / "workflows" / "api"
GENERATOR_NAME = "fewshot_generator_128.safetensors"


@pytest.fixture(scope="module")
def host(comfy_server, fewshot_model_dir, model_dir, random_generator_file, data_root, tmp_path_factory):
    """The session server with the parts, a random generator and the test photos uploaded."""
    for part in PARTS.values():
        shutil.copy(model_dir / part.filename, fewshot_model_dir / part.filename)
    shutil.copy(random_generator_file, fewshot_model_dir / GENERATOR_NAME)
    photos = tmp_path_factory.mktemp("photos")
    for name, (person, index) in {"source.png": ("George_W_Bush", 2), "target_1.png": ("Colin_Powell", 1),
                                  "target_2.png": ("Colin_Powell", 2)}.items():
        Image.open(lfw_photo(person, index)).convert("RGB").save(photos / name)
        comfy_server.upload_image(photos / name)
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(photos / "no_face.png")
    comfy_server.upload_image(photos / "no_face.png")
    return comfy_server


def load_api(name: str) -> dict:
    return json.loads((API_DIR / f"{name}.json").read_text())


def test_generator_listed_by_loader(host):
    options = host.object_info("LoadFewShotModel")["input"]["required"]["generator"]
    listed = options[0] if isinstance(options[0], list) else options[1]["options"]
    assert GENERATOR_NAME in listed
    assert not any(part.filename in listed for part in PARTS.values())


@pytest.mark.parametrize("workflow", sorted(p.stem for p in API_DIR.glob("*.json")))
def test_api_workflow_runs(host, workflow):
    outputs = host.run_prompt(load_api(workflow), timeout=600)
    paths = host.image_paths(outputs)
    assert paths and all(p.is_file() for p in paths)
    for path in paths:  # every saved image is the source's size (upscaled work is composited back)
        assert Image.open(path).size == (250, 250), path.name


def test_swap_changes_the_face_only(host):
    outputs = host.run_prompt(load_api("fewshot_swap_basic"), timeout=600)
    paths = {p.name.split("_0")[0]: p for p in host.image_paths(outputs)}
    swapped = np.asarray(Image.open(paths["fewshot_swap"]), dtype=np.float32)
    mask = np.asarray(Image.open(paths["fewshot_swap_mask"]).convert("L"), dtype=np.float32) / 255
    source = np.asarray(Image.open(lfw_photo("George_W_Bush", 2)).convert("RGB"), dtype=np.float32)
    outside = mask == 0
    assert outside.mean() > 0.3
    assert np.abs(swapped[outside] - source[outside]).max() <= 1.0  # PNG rounding only
    assert np.abs(swapped[mask > 0.5] - source[mask > 0.5]).mean() > 2.0


def test_source_without_face_fails_clearly_and_server_survives(host):
    prompt = load_api("fewshot_swap_basic")
    prompt["1"]["inputs"]["image"] = "no_face.png"
    with pytest.raises(PromptError, match="No face found in the source"):
        host.run_prompt(prompt, timeout=600)
    assert "FewShotSwap" in host.object_info()


def test_identity_save_then_load_then_swap(host):
    prompt = load_api("fewshot_swap_basic")
    save = {"class_type": "SaveFewShotIdentity", "inputs": {"identity": ["6", 0], "name": "colin test"}}
    host.run_prompt({k: prompt[k] for k in ("2", "3", "4", "5", "6")} | {"90": save}, timeout=600)
    names = host.object_info("LoadFewShotIdentity")["input"]["required"]["name"]
    listed = names[0] if isinstance(names[0], list) else names[1]["options"]
    assert "colin_test.safetensors" in listed
    prompt["6"] = {"class_type": "LoadFewShotIdentity", "inputs": {"name": "colin_test.safetensors"}}
    outputs = host.run_prompt(prompt, timeout=600)
    assert len(host.image_paths(outputs)) == 2


def test_structure_map_node(host):
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "source.png"}},
        "2": {"class_type": "LoadFewShotModel", "inputs": {"generator": GENERATOR_NAME, "device": "cpu",
                                                            "precision": "fp32"}},
        "3": {"class_type": "FaceStructureMap", "inputs": {"model": ["2", 0], "image": ["1", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "structure"}},
    }
    outputs = host.run_prompt(prompt, timeout=600)
    (path,) = host.image_paths(outputs)
    width, height = Image.open(path).size
    assert width == 2 * height  # the aligned face beside its map


def test_face_indices_node_numbers_the_face_and_reports_it(host):
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "source.png"}},
        "2": {"class_type": "LoadFewShotModel", "inputs": {"generator": GENERATOR_NAME, "device": "cpu",
                                                            "precision": "fp32"}},
        "3": {"class_type": "FewShotFaceIndices", "inputs": {"model": ["2", 0], "image": ["1", 0],
                                                              "order": "largest_first", "min_face_size": 40}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "indices"}},
    }
    outputs = host.run_prompt(prompt, timeout=600)
    (path,) = host.image_paths(outputs)
    drawn = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    source = np.asarray(Image.open(lfw_photo("George_W_Bush", 2)).convert("RGB"), dtype=np.float32)
    assert drawn.shape == source.shape
    changed = np.abs(drawn - source).max(axis=2) > 8
    assert 0.005 < changed.mean() < 0.2  # a box, five dots and a number, not the whole picture
    ys, xs = np.nonzero(changed)
    assert 40 < xs.mean() < 210 and 20 < ys.mean() < 210  # around the face in the middle


def test_workflows_listed_in_template_browser(host):
    listed = host.get("/workflow_templates").json()
    assert sorted(listed.get("fewshot-swap", [])) == sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))
