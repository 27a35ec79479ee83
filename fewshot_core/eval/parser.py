"""`python -m fewshot_core.eval parser`: the face parser against MediaPipe labels on held-out identities.

Measures, on held-out faces only (the committed split; the parser never trained
on them):
* mean IoU over the 11 non-background classes (dataset-wide intersection over
  union per class, then the mean), plus every class's IoU and a per-dataset mIoU;
* iris-centre error: the centroid of each predicted iris class against
  MediaPipe's iris centre, in px and as a fraction of the inter-ocular
  (iris-to-iris) distance;
* CPU time per face at 128 px, batch 1, on --threads threads (the mapper call
  the pipeline makes: forward + softmax), median of --repeats runs.
With --write-docs (or --grid PATH) it writes a PNG grid of ~8 faces
(photo | predicted | reference). The reference is MediaPipe's mesh rendered to
classes, not a human annotation: the figures say how well the distillation
worked, and inherit MediaPipe's own errors. The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import FewShotError
from ..parsing.classes import CLASS_INDEX, PARSE_CLASSES
from ..parsing.mapper import ParserStructureMapper, default_parser_path
from ..parsing.network import iris_centres_from_probs
from ..parsing.render import colourise
from ..parsing.train import LabelledFaces, confusion, iou_from_confusion, load_labelled
from ..paths import cache_root

DOCS_GRID = Path(__file__).resolve().parents[2] / "docs" / "parser_grid.png"


def default_labels_dir() -> Path:
    return cache_root() / "prepared" / "r128" / "labels"


def predict(mapper: ParserStructureMapper, crops_u8: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Argmax maps uint8 [N,R,R] and iris centres [N,2,2] for uint8 crops [N,R,R,3]."""
    maps, iris = [], []
    k = CLASS_INDEX
    for i in range(0, len(crops_u8), batch):
        x = torch.from_numpy(crops_u8[i:i + batch]).permute(0, 3, 1, 2).float() / 255
        probs = mapper(x)
        maps.append(probs.argmax(1).to(torch.uint8).numpy())
        iris.append(iris_centres_from_probs(probs, k["iris_l"], k["iris_r"], k["eye_l"], k["eye_r"]).numpy())
    return np.concatenate(maps), np.concatenate(iris)


def iris_errors(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Per-eye distance between predicted and reference iris centres [N,2,2], absolute and per inter-ocular."""
    err = np.linalg.norm(pred - ref, axis=-1)                        # [N,2]
    iod = np.linalg.norm(ref[:, 0] - ref[:, 1], axis=-1)[:, None]     # [N,1]
    frac = err / np.maximum(iod, 1e-6)
    return {"iris_err_px_mean": float(err.mean()), "iris_err_px_median": float(np.median(err)),
            "iris_err_iod_mean": float(frac.mean()), "iris_err_iod_median": float(np.median(frac)),
            "iris_err_iod_p95": float(np.percentile(frac, 95)),
            "iris_over_10pct_iod": float((frac > 0.10).mean()), "inter_ocular_px_mean": float(iod.mean())}


def time_per_face(mapper: ParserStructureMapper, threads: int, repeats: int, side: int = 128) -> tuple[float, float]:
    """(median, fastest) ms of one mapper call on a single side x side crop with `threads` CPU threads.

    Both are reported because on a shared machine the median measures the neighbours too:
    with 2 threads on 2 busy cores, one descheduled thread stalls the other at every op.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(0))
        lm = torch.zeros(1, 5, 2)
        for _ in range(10):
            mapper(x, lm)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            mapper(x, lm)
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times), min(times)
    finally:
        torch.set_num_threads(previous)


def write_grid(faces: LabelledFaces, pred: np.ndarray, path: Path, n: int = 8) -> Path:
    """PNG of n faces spread over the held-out set, two columns of (photo | predicted | reference), 256 colours."""
    from PIL import Image

    picks = np.linspace(0, len(faces) - 1, min(n, len(faces))).round().astype(int)
    s = faces.crops.shape[1]
    cols = 2
    rows = -(-len(picks) // cols)
    gap = 4
    grid = np.full((rows * s, cols * 3 * s + (cols - 1) * gap, 3), 255, np.uint8)
    for j, i in enumerate(picks):
        r, c = divmod(j, cols)
        x0 = c * (3 * s + gap)
        for k, img in enumerate((faces.crops[i], colourise(pred[i]), colourise(faces.maps[i]))):
            grid[r * s:(r + 1) * s, x0 + k * s:x0 + (k + 1) * s] = img
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def evaluate(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    mapper = ParserStructureMapper.from_file(args.weights)
    faces = load_labelled(args.labels, args.shards, heldout=True)
    if args.limit is not None and args.limit < len(faces):
        picks = np.linspace(0, len(faces) - 1, args.limit).round().astype(int)
        faces = LabelledFaces(*(getattr(faces, f)[picks] for f in ("crops", "maps", "iris", "landmarks", "paths")))
    started = time.perf_counter()
    pred, iris = predict(mapper, faces.crops)
    predict_s = time.perf_counter() - started
    ref = torch.from_numpy(faces.maps)
    iou = iou_from_confusion(confusion(torch.from_numpy(pred), ref)).numpy()
    result: dict = {"faces": len(faces), "miou": round(float(np.nanmean(iou[1:])), 4),
                    "iou": {c: round(float(v), 4) for c, v in zip(PARSE_CLASSES, iou)}}
    datasets = np.array([str(p).split("/", 1)[0] for p in faces.paths])
    result["miou_by_dataset"] = {}
    for name in sorted(set(datasets)):
        sel = datasets == name
        d_iou = iou_from_confusion(confusion(torch.from_numpy(pred[sel]), ref[sel])).numpy()
        result["miou_by_dataset"][name] = {"faces": int(sel.sum()), "miou": round(float(np.nanmean(d_iou[1:])), 4)}
    result.update({k: round(v, 4) for k, v in iris_errors(iris, faces.iris).items()})
    # The floor of the centroid method: the reference map's own iris centroids against MediaPipe's centres
    # (the visible iris is clipped by the lids, so its centroid is not exactly the iris centre).
    ref_onehot = torch.nn.functional.one_hot(ref.long().clamp(max=len(PARSE_CLASSES) - 1), len(PARSE_CLASSES))
    k = CLASS_INDEX
    ref_iris = iris_centres_from_probs(ref_onehot.permute(0, 3, 1, 2).float(), k["iris_l"], k["iris_r"],
                                       k["eye_l"], k["eye_r"]).numpy()
    result["iris_err_iod_mean_reference_centroid"] = round(iris_errors(ref_iris, faces.iris)["iris_err_iod_mean"], 4)
    median_ms, fastest_ms = time_per_face(mapper, args.threads, args.repeats)
    result["cpu_ms_per_face"] = round(median_ms, 2)
    result["cpu_ms_per_face_fastest"] = round(fastest_ms, 2)
    result["threads"] = args.threads
    result["load_avg_1min"] = round(os.getloadavg()[0], 2)
    result["cpu_count"] = os.cpu_count()
    result["batch_ms_per_face"] = round(1000 * predict_s / max(1, len(faces)), 2)
    grid = DOCS_GRID if args.write_docs else args.grid
    if grid is not None:
        result["grid"] = str(write_grid(faces, pred, Path(grid)))
        result["grid_kb"] = round(Path(grid).stat().st_size / 1024, 1)
    result["weights"] = str(args.weights)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fewshot_core.eval parser", description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=default_parser_path())
    ap.add_argument("--labels", type=Path, default=default_labels_dir(), help="folder of labels npz, one per shard")
    ap.add_argument("--shards", type=Path, default=None, help="folder of prepared shards (default: --labels/..)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many held-out faces (spread evenly)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=100, help="timed runs for the CPU figure")
    ap.add_argument("--grid", type=Path, default=None, help="write the example grid PNG here")
    ap.add_argument("--write-docs", action="store_true", help=f"write the example grid to {DOCS_GRID}")
    args = ap.parse_args(argv)
    try:
        result = evaluate(args)
    except FewShotError as exc:
        print(f"eval parser: {exc}", file=sys.stderr)
        return 1
    print(f"held-out faces: {result['faces']}  mIoU (11 classes): {result['miou']:.4f}")
    for name, value in result["iou"].items():
        print(f"  {name:12s} {value:.4f}")
    for name, d in result["miou_by_dataset"].items():
        print(f"  {name:12s} mIoU {d['miou']:.4f} on {d['faces']} faces")
    print(f"iris centre error: mean {result['iris_err_px_mean']:.2f} px = {100 * result['iris_err_iod_mean']:.1f}% "
          f"of the inter-ocular distance (median {100 * result['iris_err_iod_median']:.1f}%, "
          f"p95 {100 * result['iris_err_iod_p95']:.1f}%)")
    print(f"CPU: {result['cpu_ms_per_face']:.2f} ms per face median, {result['cpu_ms_per_face_fastest']:.2f} fastest "
          f"(128 px, batch 1, {result['threads']} threads; load average {result['load_avg_1min']} "
          f"on {result['cpu_count']} cores)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
