"""Shared fixtures: the converted pre-trained parts, real photos, a random-weight generator."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from fewshot_core.eval.split import default_data_root

ROOT = Path(__file__).resolve().parents[1]
DATA = default_data_root()
if str(ROOT) not in sys.path:  # `tools/` is not an installed package; plain `pytest` may lack the repo root
    sys.path.insert(0, str(ROOT))

try:  # the real-host fixtures (ComfyUI server)
    from tests.host.fixtures import *  # noqa: F401,F403
except ImportError as exc:  # pragma: no cover - only while the host tooling is missing
    if os.environ.get("CI"):
        raise
    print(f"host fixtures unavailable: {exc}")


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (DATA / "lfw").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"shared data missing at {DATA}")
        pytest.skip(f"shared data missing at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The converted MTCNN and FaceNet files, fetched (idempotently) the way users get them."""
    from fewshot_core.models import fetch_all
    from fewshot_core.paths import model_dir as default_dir

    fetch_all()
    return default_dir()


@pytest.fixture(scope="session")
def swap_model(model_dir: Path):
    """Detector and embedder, no generator."""
    from fewshot_core.pipeline import SwapModel

    torch.set_num_threads(2)
    return SwapModel.load(None, model_dir=model_dir)


@pytest.fixture(scope="session")
def random_generator_file(tmp_path_factory) -> Path:
    """A random-weight generator for plumbing tests only (never a quality claim)."""
    from fewshot_core.generator import GeneratorConfig, random_generator, save_generator
    from fewshot_core.structure import LandmarkStructureMapper

    config = GeneratorConfig.for_mapper(LandmarkStructureMapper(), base_channels=16, max_channels=64)
    path = tmp_path_factory.mktemp("gen") / "random_generator.safetensors"
    save_generator(random_generator(config, seed=0), config, path)
    return path


def lfw_photo(name: str, index: int = 1) -> Path:
    return DATA / "lfw" / name / f"{name}_{index:04d}.jpg"
