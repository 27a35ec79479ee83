"""Pytest fixtures for tests that need a real ComfyUI server.

`tests/conftest.py` imports these with `from tests.host.fixtures import *`.
One server is shared by the whole session: it sees this repository as the
custom node pack `custom_nodes/fewshot-swap` (a symlink, so edits need no
copy) and a temporary folder as its `fewshot` model folder.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.host.server import (
    INSTALL_HINT,
    ComfyServer,
    HostNotInstalled,
    find_comfy_dir,
    start_comfy,
    write_extra_model_paths,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PACK_NAME = "fewshot-swap"

__all__ = [
    "comfy_host_available",
    "fewshot_model_dir",
    "comfy_base_dir",
    "comfy_extra_model_paths",
    "comfy_server",
    "require_comfy_host",
    "link_pack",
    "in_ci",
    "REPO_ROOT",
    "PACK_NAME",
]


def in_ci() -> bool:
    """True in CI (`CI=true`), where a missing host is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_comfy_host() -> None:
    """Skip (locally) or fail (in CI) when no ComfyUI host is installed."""
    if find_comfy_dir() is not None:
        return
    msg = f"ComfyUI host not installed: {INSTALL_HINT}"
    if in_ci():
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def link_pack(custom_nodes: Path, source: Path = REPO_ROOT, name: str = PACK_NAME) -> Path:
    """Make `source` visible as `custom_nodes/name` (symlink; ComfyUI follows it)."""
    custom_nodes.mkdir(parents=True, exist_ok=True)
    link = custom_nodes / name
    if not link.exists():
        link.symlink_to(source, target_is_directory=True)
    return link


@pytest.fixture(scope="session")
def comfy_host_available() -> bool:
    """Whether a ComfyUI host is installed (no skip, no start)."""
    return find_comfy_dir() is not None


@pytest.fixture(scope="session")
def fewshot_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the session server's pack sees as its `fewshot` model folder.

    Empty at first; tests (session fixtures) copy converted models into it.
    The pack should read it when a node runs, so files added after the
    server started are found.
    """
    return tmp_path_factory.mktemp("fewshot_models")


@pytest.fixture(scope="session")
def comfy_base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ComfyUI's --base-directory for the session server, with our pack linked in."""
    base = tmp_path_factory.mktemp("comfy_base")
    link_pack(base / "custom_nodes")
    return base


@pytest.fixture(scope="session")
def comfy_extra_model_paths(comfy_base_dir: Path, fewshot_model_dir: Path) -> Path:
    """The extra_model_paths.yaml given to the session server: fewshot -> fewshot_model_dir."""
    return write_extra_model_paths(comfy_base_dir / "extra_model_paths.yaml", {"fewshot": fewshot_model_dir})


@pytest.fixture(scope="session")
def comfy_server(comfy_base_dir: Path, comfy_extra_model_paths: Path) -> Iterator[ComfyServer]:
    """A ComfyUI 0.3.75 server for the whole session (skipped locally when no host; fails in CI)."""
    require_comfy_host()
    try:
        server = start_comfy(comfy_base_dir, extra_model_paths=comfy_extra_model_paths)
    except HostNotInstalled as e:  # found above, vanished since: treat the same way
        if in_ci():
            pytest.fail(str(e), pytrace=False)
        pytest.skip(str(e))
    try:
        yield server
    finally:
        server.stop()
