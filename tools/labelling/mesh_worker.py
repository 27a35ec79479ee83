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
  crop_size [2] int (H, W); process_size, pad: how the crops were fed to MediaPipe.

Tight crops are hard for MediaPipe's face detector, so each crop can be padded
(`--pad`, fraction of the side added on every edge, edge colour replicated) and
resized (`--process-size`) before detection; landmarks are mapped back exactly.
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


def run(crops: np.ndarray, process_size: int, pad: float, min_conf: float, log_every: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks [N,478,3] in original-crop pixels and found flags [N]."""
    from mediapipe.python.solutions import face_mesh

    n, h, w = crops.shape[:3]
    out = np.full((n, N_LANDMARKS, 3), np.nan, dtype=np.float32)
    found = np.zeros(n, dtype=bool)
    t0 = time.perf_counter()
    with face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                            min_detection_confidence=min_conf) as fm:
        for i in range(n):
            img, p = prepare(crops[i], process_size, pad)
            res = fm.process(img)
            if res.multi_face_landmarks:
                lm = res.multi_face_landmarks[0].landmark
                arr = np.array([(q.x, q.y, q.z) for q in lm], dtype=np.float64)
                # normalised coords span the padded image (side w + 2p); continuous
                # coords -> pixel-centre coords is the -0.5.
                side_w, side_h = w + 2 * p, h + 2 * p
                out[i, :, 0] = arr[:, 0] * side_w - 0.5 - p
                out[i, :, 1] = arr[:, 1] * side_h - 0.5 - p
                out[i, :, 2] = arr[:, 2] * side_w
                found[i] = True
            if log_every and (i + 1) % log_every == 0:
                dt = time.perf_counter() - t0
                print(f"mesh_worker: {i + 1}/{n} crops, {found[: i + 1].sum()} found, "
                      f"{1000 * dt / (i + 1):.1f} ms/crop", file=sys.stderr, flush=True)
    return out, found


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="MediaPipe 478-point face mesh over face crops")
    ap.add_argument("--crops", required=True, help="npz with `crops` uint8 [N,H,W,3] RGB, or a folder of images")
    ap.add_argument("--out", required=True, help="output npz (landmarks, found)")
    ap.add_argument("--process-size", type=int, default=256, help="side fed to MediaPipe after padding (0 = keep)")
    ap.add_argument("--pad", type=float, default=0.25, help="padding on each edge, fraction of the crop side")
    ap.add_argument("--min-conf", type=float, default=0.5, help="face detector confidence threshold")
    args = ap.parse_args(argv)

    crops = load_crops(args.crops)
    t0 = time.perf_counter()
    lm, found = run(crops, args.process_size, args.pad, args.min_conf)
    dt = time.perf_counter() - t0
    np.savez_compressed(args.out, landmarks=lm, found=found, crop_size=np.array(crops.shape[1:3]),
                        process_size=np.array(args.process_size), pad=np.array(args.pad),
                        seconds=np.array(dt))
    print(f"mesh_worker: {len(crops)} crops, {int(found.sum())} found, {int((~found).sum())} failed, "
          f"{1000 * dt / max(len(crops), 1):.1f} ms/crop", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
