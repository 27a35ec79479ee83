"""A private venv that holds MediaPipe, kept apart from the project's own venv.

MediaPipe 0.10.21 pins numpy<2 and pulls jax, opencv-contrib and audio
packages, so it may never become a run-time dependency of fewshot-swap. The
labelling tool therefore builds its own venv (once, idempotently) and talks
to it through `mesh_worker.py` in a subprocess.

Only what the legacy `mp.solutions.face_mesh` graph needs is installed:
mediapipe itself with `--no-deps`, then its import-time dependencies, with
opencv-python-headless in place of opencv-contrib-python. jax, jaxlib,
sounddevice and sentencepiece are only used by the GenAI converter and the
audio tasks, which are never imported. The face mesh and iris models ship
inside the wheel (mediapipe/modules/face_landmark/*.tflite,
mediapipe/modules/iris_landmark/iris_landmark.tflite); `check` verifies that.

    python -m tools.labelling.mediapipe_env            # create or verify
    python -m tools.labelling.mediapipe_env --force    # rebuild from scratch
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fewshot_core.errors import FewShotError
from fewshot_core.paths import cache_root

MEDIAPIPE_REQ = "mediapipe==0.10.21"
# Wheels of mediapipe 0.10.21 exist for CPython 3.9-3.12 (manylinux_2_28 x86_64).
SUPPORTED_PYTHONS = ((3, 9), (3, 10), (3, 11), (3, 12))
# Import-time dependencies of `import mediapipe` (solutions + tasks __init__).
# opencv-python-headless 4.12+ requires numpy>=2, hence the upper bound.
DEPENDENCIES = (
    "numpy<2",
    "absl-py",
    "attrs>=19.1.0",
    "flatbuffers>=2.0",
    "protobuf>=4.25.3,<5",
    "opencv-python-headless>=4.8,<4.12",
    "matplotlib",
)
# Files that the refined (478-point) face mesh graph loads from the wheel.
REQUIRED_MODEL_FILES = (
    "modules/face_landmark/face_landmark_with_attention.tflite",
    "modules/face_landmark/face_landmark_front_cpu.binarypb",
    "modules/face_detection/face_detection_short_range.tflite",
)
_MARKER = "fewshot-mediapipe-env.json"


class MediapipeEnvError(FewShotError):
    """The private MediaPipe venv could not be created or does not work."""


def venv_dir() -> Path:
    """Where the venv lives: `<cache_root>/mediapipe-venv` (~/.cache/fewshot-swap by default)."""
    return cache_root() / "mediapipe-venv"


def venv_python(root: Path | None = None) -> Path:
    """The interpreter inside the venv (POSIX and Windows layouts)."""
    root = root or venv_dir()
    win = root / "Scripts" / "python.exe"
    return win if win.exists() else root / "bin" / "python"


def _spec_hash() -> str:
    """Identifies the requirement set, so a changed list triggers a rebuild."""
    text = "\n".join((MEDIAPIPE_REQ, *DEPENDENCIES, *REQUIRED_MODEL_FILES))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def find_base_python() -> str:
    """A CPython 3.9-3.12 to build the venv from: the current one if it fits, else one on PATH."""
    if sys.version_info[:2] in SUPPORTED_PYTHONS:
        # From inside a venv, sys.executable still creates a proper venv (python -m venv
        # resolves the base interpreter), so it is fine to use directly.
        return sys.executable
    for major, minor in reversed(SUPPORTED_PYTHONS):
        found = shutil.which(f"python{major}.{minor}")
        if found:
            return found
    raise MediapipeEnvError(
        f"mediapipe 0.10.21 has wheels only for Python 3.9-3.12, and this is Python "
        f"{sys.version_info.major}.{sys.version_info.minor} with no python3.9..python3.12 on PATH. "
        "Fix: install one of those Python versions (e.g. apt install python3.11 python3.11-venv) "
        "and run `python -m tools.labelling.mediapipe_env` again."
    )


_CHECK_SCRIPT = r"""
import json, os, sys
import numpy, mediapipe as mp
from mediapipe.python.solutions import face_mesh
root = os.path.dirname(mp.__file__)
missing = [f for f in json.loads(sys.argv[1]) if not os.path.isfile(os.path.join(root, f))]
fm = face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True)
fm.close()
print(json.dumps({"mediapipe": mp.__version__, "numpy": numpy.__version__,
                  "python": sys.version.split()[0], "missing_models": missing}))
"""


def check(python: Path | None = None) -> dict:
    """Import mediapipe in the venv, build a refined FaceMesh, confirm the model files are in the wheel."""
    python = python or venv_python()
    if not python.exists():
        raise MediapipeEnvError(
            f"no MediaPipe venv at {python.parent.parent}. Fix: run `python -m tools.labelling.mediapipe_env`."
        )
    proc = subprocess.run(
        [str(python), "-c", _CHECK_SCRIPT, json.dumps(REQUIRED_MODEL_FILES)],
        capture_output=True, text=True, env=clean_env(),
    )
    if proc.returncode != 0:
        raise MediapipeEnvError(
            f"mediapipe does not import in {python}:\n{proc.stderr.strip()[-2000:]}\n"
            "Fix: rebuild it with `python -m tools.labelling.mediapipe_env --force`."
        )
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    if info["missing_models"]:
        raise MediapipeEnvError(
            f"the mediapipe wheel in {python} lacks {info['missing_models']}; this tool needs the "
            f"models bundled in {MEDIAPIPE_REQ}. Fix: `python -m tools.labelling.mediapipe_env --force`."
        )
    return info


def clean_env() -> dict[str, str]:
    """Environment for the child: drop the parent's venv/PYTHONPATH so nothing of numpy 2 leaks in."""
    env = dict(os.environ)
    for key in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(key, None)
    return env


def _pip(python: Path, *args: str) -> None:
    cmd = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=clean_env())
    if proc.returncode != 0:
        raise MediapipeEnvError(
            f"`{' '.join(cmd)}` failed:\n{proc.stderr.strip()[-2000:]}\n"
            "Fix: check that PyPI is reachable (pip config / proxy) and run again with --force."
        )


def ensure_venv(force: bool = False, verbose: bool = True) -> Path:
    """Create the venv if it is missing or stale; return its python. Cheap when it is already there."""
    root = venv_dir()
    python = venv_python(root)
    marker = root / _MARKER
    if not force and python.exists() and marker.exists():
        try:
            if json.loads(marker.read_text()).get("spec") == _spec_hash():
                return python
        except (OSError, ValueError):
            pass
    t0 = time.perf_counter()
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    base = find_base_python()
    if verbose:
        print(f"[mediapipe_env] creating {root} from {base}", flush=True)
    proc = subprocess.run([base, "-m", "venv", str(root)], capture_output=True, text=True, env=clean_env())
    if proc.returncode != 0:
        raise MediapipeEnvError(
            f"`{base} -m venv {root}` failed:\n{proc.stderr.strip()}\n"
            "Fix: install the venv module for that Python (e.g. apt install python3.11-venv)."
        )
    python = venv_python(root)
    if verbose:
        print(f"[mediapipe_env] pip install {MEDIAPIPE_REQ} --no-deps + {len(DEPENDENCIES)} deps", flush=True)
    _pip(python, "--no-deps", MEDIAPIPE_REQ)
    _pip(python, *DEPENDENCIES)
    info = check(python)
    info.update(spec=_spec_hash(), setup_seconds=round(time.perf_counter() - t0, 1))
    marker.write_text(json.dumps(info, indent=1))
    if verbose:
        print(f"[mediapipe_env] ready in {info['setup_seconds']} s: {info}", flush=True)
    return python


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="delete and rebuild the venv")
    args = ap.parse_args(argv)
    python = ensure_venv(force=args.force)
    print(json.dumps({"python": str(python), **check(python)}))


if __name__ == "__main__":
    main()
