"""Label aligned face crops with MediaPipe face-mesh landmarks and parsing class maps.

    python -m tools.labelling.label_crops --crops CROPS.npz --out LABELS.npz [--preview grid.png]

CROPS.npz holds `crops` uint8 [N,S,S,3] RGB (plus optional `ids`, `paths`, copied
through). MediaPipe runs in its own venv (created on first use by
`mediapipe_env.ensure_venv`) via `mesh_worker.py`; the class maps are rendered
here with `fewshot_core.parsing.render`. LABELS.npz holds:

  landmarks    [N,478,3] float32  crop pixels (x, y; z relative), NaN where not found
  class_maps   [N,S,S]   uint8    indices into `classes`; IGNORE_INDEX (255) where not found
  iris_centres [N,2,2]   float32  (x, y) of the iris on the image's left, then right
  found        [N]       bool
  used_pad     [N]       float32  padding at which MediaPipe found the face (NaN: not found)
  classes      [12]      str      PARSE_CLASSES
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fewshot_core.errors import InputShapeError
from fewshot_core.parsing.classes import IGNORE_INDEX, PARSE_CLASSES
from fewshot_core.parsing.render import colourise, iris_centres, render_class_maps
from tools.labelling.mediapipe_env import MediapipeEnvError, clean_env, ensure_venv

WORKER = Path(__file__).resolve().parent / "mesh_worker.py"
# Chosen by measurement on LFW/UTKFace/CelebA stand-in crops: padding the crop by a
# quarter of its side on each edge (edge-replicated) and feeding 256 px to MediaPipe
# failed least (CelebA 2/300 vs 3-4/300 unpadded) and was the most shift-consistent.
DEFAULT_PROCESS_SIZE = 256
DEFAULT_PAD = 0.25
# Paddings retried on crops with no face found at DEFAULT_PAD.
DEFAULT_RETRY_PADS = (0.5, 0.0)


def _read_crops_meta(path: Path) -> tuple[int, int, dict[str, np.ndarray]]:
    """Validate `crops` and return (N, side, passthrough arrays such as ids/paths)."""
    with np.load(path, allow_pickle=False) as z:
        if "crops" not in z.files:
            raise InputShapeError(f"{path} has no `crops` array (keys: {z.files}). Fix: save the crops under `crops`.")
        crops = z["crops"]
        extra = {}
        for key in ("ids", "paths"):
            if key in z.files:
                try:
                    extra[key] = z[key]
                except ValueError:  # saved as an object array: read it once as strings
                    with np.load(path, allow_pickle=True) as zp:
                        extra[key] = np.asarray(zp[key]).astype(str)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3 or crops.shape[1] != crops.shape[2]:
        raise InputShapeError(
            f"`crops` in {path} must be uint8 [N,S,S,3] RGB square crops, got {crops.dtype} {crops.shape}. "
            "Fix: save the aligned crops as uint8 HWC RGB."
        )
    return crops.shape[0], crops.shape[1], extra


def run_mesh(crops_path: Path, process_size: int = DEFAULT_PROCESS_SIZE, pad: float = DEFAULT_PAD,
             min_conf: float = 0.5, retry_pads: tuple[float, ...] = DEFAULT_RETRY_PADS) -> dict[str, np.ndarray]:
    """Run mesh_worker in the MediaPipe venv; return its arrays (landmarks, found, seconds, ...)."""
    python = ensure_venv()
    with tempfile.TemporaryDirectory(prefix="fewshot-mesh-") as tmp:
        out = Path(tmp) / "mesh.npz"
        cmd = [str(python), str(WORKER), "--crops", str(crops_path), "--out", str(out),
               "--process-size", str(process_size), "--pad", str(pad), "--min-conf", str(min_conf),
               "--retry-pads", ",".join(str(p) for p in retry_pads)]
        # Show the worker's own progress lines; keep MediaPipe's C++ log chatter for errors.
        log: list[str] = []
        with subprocess.Popen(cmd, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) as proc:
            assert proc.stderr is not None
            for line in proc.stderr:
                log.append(line)
                if line.startswith("mesh_worker:"):
                    print(line, end="", flush=True)
        if proc.returncode != 0 or not out.exists():
            raise MediapipeEnvError(
                f"the MediaPipe worker failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                f"{''.join(log[-30:])}\n"
                "Fix: check the message above; `python -m tools.labelling.mediapipe_env --force` rebuilds the venv."
            )
        with np.load(out) as z:
            return {k: z[k] for k in z.files}


def save_preview(crops: np.ndarray, class_maps: np.ndarray, path: Path, n: int = 64, cols: int = 8) -> None:
    """PNG grid of (crop | class map blended over it) pairs for eyeballing the labels."""
    from PIL import Image

    n = min(n, len(crops))
    if n == 0:
        return
    s = crops.shape[1]
    rows = -(-n // cols)
    grid = np.zeros((rows * s, cols * 2 * s, 3), dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        colour = colourise(class_maps[i]).astype(np.float32)
        overlay = (0.35 * crops[i] + 0.65 * colour).astype(np.uint8)
        grid[r * s:(r + 1) * s, 2 * c * s:(2 * c + 1) * s] = crops[i]
        grid[r * s:(r + 1) * s, (2 * c + 1) * s:(2 * c + 2) * s] = overlay
    Image.fromarray(grid).save(path)


def label(crops_path: Path, out_path: Path, process_size: int = DEFAULT_PROCESS_SIZE, pad: float = DEFAULT_PAD,
          min_conf: float = 0.5, retry_pads: tuple[float, ...] = DEFAULT_RETRY_PADS,
          preview: Path | None = None) -> dict[str, float]:
    """Landmarks, class maps, iris centres and found flags for every crop; returns summary numbers."""
    n, side, extra = _read_crops_meta(crops_path)
    t0 = time.perf_counter()
    mesh = run_mesh(crops_path, process_size, pad, min_conf, retry_pads)
    t_mesh = time.perf_counter() - t0
    landmarks = mesh["landmarks"].astype(np.float32)
    found = mesh["found"].astype(bool)
    if landmarks.shape[0] != n:
        raise MediapipeEnvError(f"the worker returned {landmarks.shape[0]} results for {n} crops. Fix: rerun.")
    t1 = time.perf_counter()
    class_maps = render_class_maps(landmarks, side)
    iris = iris_centres(landmarks).astype(np.float32)
    t_render = time.perf_counter() - t1
    np.savez_compressed(out_path, landmarks=landmarks, class_maps=class_maps, iris_centres=iris, found=found,
                        used_pad=mesh["used_pad"],
                        classes=np.array(PARSE_CLASSES), ignore_index=np.array(IGNORE_INDEX),
                        process_size=np.array(process_size), pad=np.array(pad), **extra)
    if preview is not None:
        with np.load(crops_path) as z:
            save_preview(z["crops"], class_maps, preview)
    failed = int((~found).sum())
    summary = {"crops": n, "failed": failed, "failure_rate": failed / max(n, 1),
               "mesh_ms_per_crop": 1000 * float(mesh["seconds"]) / max(n, 1),
               "mesh_total_s": t_mesh, "render_ms_per_crop": 1000 * t_render / max(n, 1)}
    print(f"label_crops: MediaPipe failed on {failed} of {n} crops ({100 * summary['failure_rate']:.1f}%); "
          f"mesh {summary['mesh_ms_per_crop']:.1f} ms/crop (worker total incl. start-up {t_mesh:.1f} s), "
          f"render {summary['render_ms_per_crop']:.1f} ms/crop -> {out_path}", flush=True)
    if failed:
        names = extra.get("paths", extra.get("ids"))
        bad = np.flatnonzero(~found)[:10]
        shown = [str(names[i]) for i in bad] if names is not None else [str(i) for i in bad]
        print("label_crops: first failures: " + ", ".join(shown), flush=True)
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--crops", required=True, type=Path, help="npz with `crops` uint8 [N,S,S,3] RGB")
    ap.add_argument("--out", required=True, type=Path, help="output labels npz")
    ap.add_argument("--process-size", type=int, default=DEFAULT_PROCESS_SIZE, help="side fed to MediaPipe (0 = as is)")
    ap.add_argument("--pad", type=float, default=DEFAULT_PAD, help="padding per edge, fraction of the crop side")
    ap.add_argument("--retry-pads", default=",".join(map(str, DEFAULT_RETRY_PADS)),
                    help="comma-separated pads retried on crops with no face ('' = none)")
    ap.add_argument("--min-conf", type=float, default=0.5, help="MediaPipe face detector threshold")
    ap.add_argument("--preview", type=Path, default=None, help="optional PNG grid of the first 64 crops and labels")
    args = ap.parse_args(argv)
    try:
        retry = tuple(float(p) for p in args.retry_pads.split(",") if p.strip())
        label(args.crops, args.out, args.process_size, args.pad, args.min_conf, retry, args.preview)
    except (MediapipeEnvError, InputShapeError) as e:
        sys.exit(f"label_crops: {e}")


if __name__ == "__main__":
    main()
