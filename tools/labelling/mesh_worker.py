"""MediaPipe face mesh over a batch of face crops; runs INSIDE the MediaPipe venv.

Standalone on purpose (imports nothing from fewshot_core: that venv has numpy<2
and no torch). `label_crops.py` starts it with the venv's python:

    <venv>/bin/python tools/labelling/mesh_worker.py --crops CROPS.npz --out MESH.npz
    <venv>/bin/python tools/labelling/mesh_worker.py --crops DIR_OF_IMAGES --out MESH.npz

Input: an npz whose `crops` is uint8 [N,H,W,3] RGB, or a folder of images
(sorted by name). Output npz:
  landmarks [N,478,3] float32: x, y in pixels of the ORIGINAL crop (pixel centres
            at integer coordinates, as in kornia), z relative depth in the same
            pixel scale (MediaPipe's z * crop width; smaller = nearer the camera);
            NaN where no face was found
  found     [N] bool
  used_pad  [N] float32: the padding at which the face was found (NaN: not found)
  crop_size [2] int (H, W); process_size, pad: how the crops were fed to MediaPipe;
  seconds (meshing only), total_seconds (with graph start-up).

Tight crops are hard for MediaPipe's face detector, so each crop can be padded
(`--pad`, fraction of the side added on every edge, edge colour replicated) and
resized (`--process-size`) before detection; landmarks are mapped back exactly.
Crops with no face are retried at the `--retry-pads` paddings.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

N_LANDMARKS = 478  # 468 mesh points + 10 iris points (refine_landmarks=True)


def load_crops(src: str) -> np.ndarray:
    """uint8 [N,H,W,3] RGB from an npz (`crops`) or a folder of same-sized images."""
    if os.path.isdir(src):
        import cv2

        names = sorted(n for n in os.listdir(src) if n.lower().endswith((".png", ".jpg", ".jpeg", ".bmp")))
        imgs = [cv2.imread(os.path.join(src, n), cv2.IMREAD_COLOR)[:, :, ::-1] for n in names]
        return np.stack(imgs).astype(np.uint8)
    with np.load(src) as z:
        crops = z["crops"]
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[-1] != 3:
        raise SystemExit(f"mesh_worker: `crops` in {src} must be uint8 [N,H,W,3] RGB, got {crops.dtype} {crops.shape}")
    return crops


def prepare(crop: np.ndarray, process_size: int, pad: float) -> tuple[np.ndarray, int]:
    """Pad by `pad`*side on every edge (replicating the border), then resize to process_size.

    Returns the image fed to MediaPipe and the padding in original-crop pixels.
    """
    import cv2

    h, w = crop.shape[:2]
    p = int(round(pad * max(h, w)))
    img = cv2.copyMakeBorder(crop, p, p, p, p, cv2.BORDER_REPLICATE) if p > 0 else crop
    if process_size and process_size != img.shape[0]:
        interp = cv2.INTER_CUBIC if process_size > img.shape[0] else cv2.INTER_AREA
        img = cv2.resize(img, (process_size, process_size), interpolation=interp)
    return np.ascontiguousarray(img), p


def mesh_one(fm, crop: np.ndarray, process_size: int, pad: float) -> np.ndarray | None:
    """[478,3] landmarks in original-crop pixels, or None when MediaPipe finds no face."""
    h, w = crop.shape[:2]
    img, p = prepare(crop, process_size, pad)
    res = fm.process(img)
    if not res.multi_face_landmarks:
        return None
    arr = np.array([(q.x, q.y, q.z) for q in res.multi_face_landmarks[0].landmark], dtype=np.float64)
    # Normalised coords span the padded image (side w + 2p); continuous coords ->
    # pixel-centre coords is the -0.5.
    out = np.empty((len(arr), 3), dtype=np.float32)
    out[:, 0] = arr[:, 0] * (w + 2 * p) - 0.5 - p
    out[:, 1] = arr[:, 1] * (h + 2 * p) - 0.5 - p
    out[:, 2] = arr[:, 2] * (w + 2 * p)
    return out


def run(crops: np.ndarray, process_size: int, pad: float, min_conf: float,
        retry_pads: tuple[float, ...] = (), log_every: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Landmarks [N,478,3] in original-crop pixels, found flags [N], the pad that worked [N],
    and the seconds spent on the crops (graph start-up excluded).

    Crops with no face at `pad` are retried at each of `retry_pads` in turn (faces cut
    off by the crop edge are often found with more padding).
    """
    from mediapipe.python.solutions import face_mesh

    n = crops.shape[0]
    out = np.full((n, N_LANDMARKS, 3), np.nan, dtype=np.float32)
    found = np.zeros(n, dtype=bool)
    used_pad = np.full(n, np.nan, dtype=np.float32)
    with face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                            min_detection_confidence=min_conf) as fm:
        t0 = time.perf_counter()
        for i in range(n):
            for p in (pad, *retry_pads):
                lm = mesh_one(fm, crops[i], process_size, p)
                if lm is not None:
                    out[i], found[i], used_pad[i] = lm, True, p
                    break
            if log_every and (i + 1) % log_every == 0:
                dt = time.perf_counter() - t0
                print(f"mesh_worker: {i + 1}/{n} crops, {found[: i + 1].sum()} found, "
                      f"{1000 * dt / (i + 1):.1f} ms/crop", file=sys.stderr, flush=True)
        loop_s = time.perf_counter() - t0
    return out, found, used_pad, loop_s


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="MediaPipe 478-point face mesh over face crops")
    ap.add_argument("--crops", required=True, help="npz with `crops` uint8 [N,H,W,3] RGB, or a folder of images")
    ap.add_argument("--out", required=True, help="output npz (landmarks, found)")
    ap.add_argument("--process-size", type=int, default=256, help="side fed to MediaPipe after padding (0 = keep)")
    ap.add_argument("--pad", type=float, default=0.25, help="padding on each edge, fraction of the crop side")
    ap.add_argument("--retry-pads", default="0.5,0",
                    help="comma-separated pads tried in turn on crops with no face found ('' = none)")
    ap.add_argument("--min-conf", type=float, default=0.5, help="face detector confidence threshold")
    args = ap.parse_args(argv)

    crops = load_crops(args.crops)
    t0 = time.perf_counter()
    retry = tuple(float(p) for p in args.retry_pads.split(",") if p.strip())
    lm, found, used_pad, loop_s = run(crops, args.process_size, args.pad, args.min_conf, retry)
    dt = time.perf_counter() - t0
    np.savez_compressed(args.out, landmarks=lm, found=found, used_pad=used_pad, crop_size=np.array(crops.shape[1:3]),
                        process_size=np.array(args.process_size), pad=np.array(args.pad),
                        seconds=np.array(loop_s), total_seconds=np.array(dt))
    print(f"mesh_worker: {len(crops)} crops, {int(found.sum())} found, {int((~found).sum())} failed, "
          f"{1000 * loop_s / max(len(crops), 1):.1f} ms/crop (+{dt - loop_s:.1f} s start-up)",
          file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
