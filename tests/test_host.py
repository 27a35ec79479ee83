"""The real ComfyUI host: it starts, loads our pack and a probe pack, runs prompts.

Workflow tests with models live elsewhere; these need only the host.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.host.fixtures import PACK_NAME, link_pack, require_comfy_host
from tests.host.server import ComfyServer, PromptError, start_comfy, write_extra_model_paths

pytestmark = pytest.mark.host

PROBE_SRC = Path(__file__).resolve().parent / "host" / "probe_pack"
BROKEN_MESSAGE = "broken on purpose: the host test's failure report must show this"

# The node contracts from the spec: required inputs (name -> type) and the leading output types.
PACK_NODES: dict[str, tuple[dict[str, str], list[str]]] = {
    "LoadFewShotModel": ({}, ["FEWSHOT_MODEL"]),
    "EncodeTargetIdentity": ({"model": "FEWSHOT_MODEL", "images": "IMAGE"}, ["FEWSHOT_IDENTITY"]),
    "FewShotSwap": ({"model": "FEWSHOT_MODEL", "identity": "FEWSHOT_IDENTITY", "image": "IMAGE"}, ["IMAGE", "MASK"]),
    "FaceMaskComposite": ({"original": "IMAGE", "processed": "IMAGE", "mask": "MASK"}, ["IMAGE"]),
}
EXACT_OUTPUTS = {"FewShotSwap", "FaceMaskComposite", "LoadFewShotModel"}


def input_type(spec: Any) -> str:
    """The socket type of an /object_info input entry: a name, or COMBO for an options list."""
    kind = spec[0]
    return "COMBO" if isinstance(kind, list) else str(kind)


def default_inputs(info: dict[str, Any]) -> dict[str, Any]:
    """Values for every required widget input of a node (default, else first option / 0 / "")."""
    values: dict[str, Any] = {}
    for name, spec in info["input"].get("required", {}).items():
        kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
        if isinstance(kind, list) or kind == "COMBO":
            options = kind if isinstance(kind, list) else opts.get("options", [])
            values[name] = opts.get("default", options[0] if options else "")
        elif kind in ("INT", "FLOAT", "BOOLEAN", "STRING"):
            values[name] = opts.get("default", {"INT": 0, "FLOAT": 0.0, "BOOLEAN": False, "STRING": ""}[kind])
    return values


def pack_failure_report(server: ComfyServer, pack: str = PACK_NAME) -> str:
    """Why a pack is missing, in the server's words: its import traceback, else the log tail."""
    error = server.import_error(f"custom_nodes/{pack}")
    return (f"import failures reported by ComfyUI: {server.import_failures()}\n"
            f"--- {server.log_path}: " + ("the pack's import error ---\n" + error if error
                                           else "no import error logged; log tail ---\n" + server.log_tail()))


def write_noise_png(path: Path, h: int = 24, w: int = 32, seed: int = 0) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


# ------------------------------------------------------------ session server
def test_server_answers_with_builtin_nodes(comfy_server: ComfyServer) -> None:
    load_image = comfy_server.object_info("LoadImage")
    assert load_image["output"] == ["IMAGE", "MASK"]
    assert "image" in load_image["input"]["required"]
    assert comfy_server.object_info("SaveImage")["output_node"] is True


def test_torchvision_stand_in_is_enough_for_core_nodes(comfy_server: ComfyServer) -> None:
    builtin_failed = [p for p in comfy_server.import_failures() if "/" not in p]
    # only the audio nodes may fail (they need torchaudio, which ComfyUI treats as optional)
    assert all("audio" in name for name in builtin_failed), builtin_failed


def test_pack_imports_without_error(comfy_server: ComfyServer) -> None:
    if any(Path(p).name == PACK_NAME for p in comfy_server.import_failures()):
        pytest.fail(f"ComfyUI could not import the pack\n{pack_failure_report(comfy_server)}", pytrace=False)
    info = comfy_server.object_info()
    missing = [n for n in PACK_NODES if n not in info]
    if missing:
        pytest.fail(f"nodes {missing} are not in /object_info\n{pack_failure_report(comfy_server)}", pytrace=False)


@pytest.mark.parametrize("node", sorted(PACK_NODES))
def test_pack_node_contract(comfy_server: ComfyServer, node: str) -> None:
    info = comfy_server.object_info(node)
    if not info:
        pytest.fail(f"{node} is not in /object_info\n{pack_failure_report(comfy_server)}", pytrace=False)
    required, outputs = PACK_NODES[node]
    got_inputs = {name: input_type(spec) for name, spec in info["input"].get("required", {}).items()}
    for name, kind in required.items():
        assert got_inputs.get(name) == kind, f"{node}.{name}: expected {kind}, inputs are {got_inputs}"
    if node in EXACT_OUTPUTS:
        assert info["output"] == outputs
    else:
        assert info["output"][: len(outputs)] == outputs
    assert info["python_module"].startswith("custom_nodes.")


def test_session_server_uses_the_fixture_model_folder(comfy_server: ComfyServer, fewshot_model_dir: Path) -> None:
    log = comfy_server.log_text()
    assert f"Adding extra search path fewshot {fewshot_model_dir.resolve()}" in log


# -------------------------------------------------------------- probe server
@pytest.fixture(scope="module")
def empty_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("empty_fewshot_models")


@pytest.fixture(scope="module")
def probe_server(tmp_path_factory: pytest.TempPathFactory, empty_model_dir: Path) -> Iterator[ComfyServer]:
    """A second server: our pack (forced onto the V1 node API) and the probe pack, an empty `fewshot` folder."""
    require_comfy_host()
    base = tmp_path_factory.mktemp("comfy_probe_base")
    link_pack(base / "custom_nodes")
    link_pack(base / "custom_nodes", source=PROBE_SRC, name="fewshot-host-probe")
    broken = tmp_path_factory.mktemp("broken_pack")
    (broken / "__init__.py").write_text(f"raise ImportError({BROKEN_MESSAGE!r})\n", encoding="utf-8")
    link_pack(base / "custom_nodes", source=broken, name="fewshot-host-broken")
    config = write_extra_model_paths(base / "extra_model_paths.yaml", {"fewshot": empty_model_dir})
    server = start_comfy(base, extra_model_paths=config, env={"FEWSHOT_SWAP_NODE_API": "v1"})
    try:
        yield server
    finally:
        server.stop()


def test_symlinked_probe_pack_loads(probe_server: ComfyServer) -> None:
    info = probe_server.object_info("FewShotHostProbeInvert")
    if not info:
        pytest.fail(f"probe pack missing\n{pack_failure_report(probe_server, 'fewshot-host-probe')}", pytrace=False)
    assert info["input"]["required"]["scale"][0] == "FEWSHOT_HOST_PROBE"
    assert info["output"] == ["IMAGE", "MASK"]


def test_failed_pack_import_is_reported_with_its_traceback(probe_server: ComfyServer) -> None:
    """The report `test_pack_imports_without_error` prints when our pack breaks."""
    assert any(p.endswith("custom_nodes/fewshot-host-broken") for p in probe_server.import_failures())
    report = pack_failure_report(probe_server, "fewshot-host-broken")
    assert f"ImportError: {BROKEN_MESSAGE}" in report
    assert "Traceback (most recent call last)" in report
    assert "torchaudio" not in report  # only this pack's error, not others'


def test_prompt_round_trip_through_load_and_save(probe_server: ComfyServer, tmp_path: Path) -> None:
    pixels = write_noise_png(tmp_path / "noise.png")
    name = probe_server.upload_image(tmp_path / "noise.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {"class_type": "FewShotHostProbeScale", "inputs": {"value": 1.0}},
        "3": {"class_type": "FewShotHostProbeInvert",
              "inputs": {"scale": ["2", 0], "image": ["1", 0], "fail_message": ""}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "probe"}},
    }
    outputs = probe_server.run_prompt(prompt, timeout=120)
    paths = probe_server.image_paths(outputs)
    assert len(paths) == 1 and paths[0].is_file()
    saved = np.asarray(Image.open(paths[0]).convert("RGB")).astype(int)
    assert saved.shape == pixels.shape
    # SaveImage truncates 255 * x to uint8, so an exact inverse may land one below
    assert np.abs(saved - (255 - pixels.astype(int))).max() <= 1


def test_node_exception_message_reaches_run_prompt(probe_server: ComfyServer, tmp_path: Path) -> None:
    write_noise_png(tmp_path / "noise.png", seed=1)
    name = probe_server.upload_image(tmp_path / "noise.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {"class_type": "FewShotHostProbeScale", "inputs": {"value": -1.0}},
        "3": {"class_type": "FewShotHostProbeInvert",
              "inputs": {"scale": ["2", 0], "image": ["1", 0], "fail_message": "probe says: fix the input"}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    with pytest.raises(PromptError) as err:
        probe_server.run_prompt(prompt, timeout=120)
    assert err.value.message == "probe says: fix the input"
    assert err.value.node_type == "FewShotHostProbeInvert"


def test_invalid_prompt_is_rejected_with_the_reason(probe_server: ComfyServer) -> None:
    prompt = {"1": {"class_type": "FewShotHostProbeFolders", "inputs": {"nonce": "not a number"}}}
    with pytest.raises(PromptError) as err:
        probe_server.run_prompt(prompt, timeout=60)
    assert "nonce" in str(err.value)


def test_extra_model_paths_come_first_in_fewshot_folder(probe_server: ComfyServer, empty_model_dir: Path) -> None:
    outputs = probe_server.run_prompt({"1": {"class_type": "FewShotHostProbeFolders", "inputs": {"nonce": 1}}},
                                      timeout=60)
    paths = outputs["1"]["fewshot_paths"]
    assert Path(paths[0]).resolve() == empty_model_dir.resolve()
    assert len(paths) == len(set(paths))


def test_pack_reads_models_from_extra_model_paths(probe_server: ComfyServer, empty_model_dir: Path,
                                                  tmp_path: Path) -> None:
    """With an empty `fewshot` folder from extra_model_paths.yaml the pack must say that folder lacks the files."""
    info = probe_server.object_info()
    if any(n not in info for n in ("LoadFewShotModel", "FewShotSwap", "EncodeTargetIdentity")):
        pytest.fail(f"pack nodes missing\n{pack_failure_report(probe_server)}", pytrace=False)
    write_noise_png(tmp_path / "noise.png", seed=2)
    name = probe_server.upload_image(tmp_path / "noise.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {"class_type": "LoadFewShotModel", "inputs": default_inputs(info["LoadFewShotModel"])},
        "3": {"class_type": "EncodeTargetIdentity",
              "inputs": {**default_inputs(info["EncodeTargetIdentity"]), "model": ["2", 0], "images": ["1", 0]}},
        "4": {"class_type": "FewShotSwap",
              "inputs": {**default_inputs(info["FewShotSwap"]), "model": ["2", 0], "identity": ["3", 0],
                         "image": ["1", 0]}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }
    with pytest.raises(PromptError) as err:
        probe_server.run_prompt(prompt, timeout=300)
    assert err.value.node_type == "LoadFewShotModel", err.value
    assert str(empty_model_dir.resolve()) in err.value.message or str(empty_model_dir) in err.value.message, \
        err.value.message


# ------------------------------------------------------------ V1 fallback
def _contract(info: dict[str, Any]) -> dict[str, Any]:
    """What a workflow depends on: socket names and types, outputs, display name, category."""
    sections = {name: {k: input_type(v) for k, v in info["input"].get(name, {}).items()}
                for name in ("required", "optional")}
    return {"inputs": sections, "output": info["output"], "output_name": info["output_name"],
            "display_name": info["display_name"], "category": info["category"],
            "output_node": info["output_node"]}


def test_v1_fallback_registers_the_same_nodes_as_v3(comfy_server: ComfyServer, probe_server: ComfyServer) -> None:
    """Hosts without the V3 API get V1 classes built from the same specs: same sockets, same outputs."""
    assert "registered through the V1 node API" in probe_server.log_text()
    assert "registered through the V3 node API" in comfy_server.log_text()
    ours = sorted(name for name, info in comfy_server.object_info().items()
                  if info["python_module"] == f"custom_nodes.{PACK_NAME}")
    assert set(PACK_NODES) <= set(ours)
    for node in ours:
        v1 = probe_server.object_info(node)
        assert v1, f"{node} is missing from the V1 server\n{pack_failure_report(probe_server)}"
        assert _contract(v1) == _contract(comfy_server.object_info(node)), node


def test_v1_node_runs_in_a_prompt(probe_server: ComfyServer, tmp_path: Path) -> None:
    """A full mask composites the processed image over the original: the V1 class executes the spec."""
    pixels = write_noise_png(tmp_path / "noise.png", seed=2)
    name = probe_server.upload_image(tmp_path / "noise.png")
    h, w = pixels.shape[:2]
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": name}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": w, "height": h}},
        "4": {"class_type": "FaceMaskComposite", "inputs": {"original": ["1", 0], "processed": ["2", 0],
                                                             "mask": ["3", 0], "feather": 0.0,
                                                             "color_match": False}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "v1"}},
    }
    paths = probe_server.image_paths(probe_server.run_prompt(prompt, timeout=120))
    saved = np.asarray(Image.open(paths[0]).convert("RGB")).astype(int)
    assert np.abs(saved - (255 - pixels.astype(int))).max() <= 1
