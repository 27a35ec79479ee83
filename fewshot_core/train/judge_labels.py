"""`python -m fewshot_core.train.judge_labels`: dlib's 68 landmarks on every prepared crop.

Why: the landmark judge (`landmark_judge.py`) learns to place dlib's points, the ones the expression
figure is computed from, so its targets are dlib's own output on the same 128 px crops: the 68-point shape predictor started from one
box for all, the median HOG box (upsampled once, as the evaluation detects) of the first crops. The crops
are aligned to one template, so HOG's boxes differ by a few pixels only, and running HOG on every crop
cost 0.1-0.2 s each on this project's 2-core machines; `--hog` does it anyway (misses fall back to the
median box and are flagged `detected = False`).

Writes `dlib68/<shard>.npz` beside the shards (same row order: `points` [N, 68, 2] float32 crop px,
`detected` [N] bool), skipping shards already done. Needs the evaluation extras (dlib).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .prepare import prepared_dir


def label_dir(prepared: Path) -> Path:
    return prepared / "dlib68"


def label_crops(evaluator, crops: np.ndarray, box: tuple[int, int, int, int],
                hog: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """dlib points [N, 68, 2] for uint8 crops [N, R, R, 3] from `box`, or from HOG's box where `hog` finds one
    (and whether it did [N]; all True without `hog`)."""
    import dlib

    points = np.zeros((len(crops), 68, 2), np.float32)
    detected = np.ones(len(crops), bool)
    fallback_box = box
    for i, crop in enumerate(crops):
        crop = np.ascontiguousarray(crop)
        if not hog:
            points[i] = evaluator.landmarks68(crop, dlib.rectangle(*box))
            continue
        rects = evaluator.detect(crop)
        if rects:
            rect = rects[0]
        else:
            rect, detected[i] = dlib.rectangle(*fallback_box), False
        points[i] = evaluator.landmarks68(crop, rect)
    return points, detected


def median_box(evaluator, crops: np.ndarray, count: int = 200) -> tuple[int, int, int, int]:
    """The median HOG box over the first `count` crops where one is found (crops are aligned alike)."""
    boxes = []
    for crop in crops[:count]:
        rects = evaluator.detect(np.ascontiguousarray(crop))
        if rects:
            r = rects[0]
            boxes.append((r.left(), r.top(), r.right(), r.bottom()))
    if not boxes:
        side = crops.shape[1]
        return (side // 6, side // 6, side - side // 6, side - side // 6)
    return tuple(int(v) for v in np.median(np.array(boxes), axis=0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fewshot_core.train.judge_labels")
    parser.add_argument("--prepared", type=Path, default=prepared_dir(128))
    parser.add_argument("--hog", action="store_true", help="HOG-detect every crop instead of one shared box")
    args = parser.parse_args(argv)
    from ..eval.evaluator import DlibEvaluator

    evaluator = DlibEvaluator.from_package()
    shards = sorted(p for p in args.prepared.glob("*.npz") if not p.name.endswith(".tmp.npz"))
    if not shards:
        print(f"error: no prepared shards in {args.prepared}; run `python -m fewshot_core.train.prepare` first",
              file=sys.stderr)
        return 2
    out_dir = label_dir(args.prepared)
    out_dir.mkdir(parents=True, exist_ok=True)
    with np.load(shards[0]) as data:  # the same box whichever shards are still to do
        box = median_box(evaluator, data["crops"])
    print(f"shared box (left, top, right, bottom): {box}", flush=True)
    started = time.time()
    for shard in shards:
        target = out_dir / shard.name
        if target.is_file():
            continue
        with np.load(shard) as data:
            crops = data["crops"]
        points, detected = label_crops(evaluator, crops, box, args.hog)
        tmp = out_dir / (shard.stem + ".tmp.npz")
        np.savez(tmp, points=points, detected=detected)
        tmp.replace(target)
        missed = f", HOG missed {int((~detected).sum())}" if args.hog else ""
        print(f"{shard.name}: {len(crops)} crops{missed}", flush=True)
    totals = {"crops": 0, "hog_missed": 0, "seconds": round(time.time() - started, 1)}
    for labels in sorted(out_dir.glob("*.npz")):
        if not labels.name.endswith(".tmp.npz"):
            with np.load(labels) as data:
                totals["crops"] += int(data["detected"].shape[0])
                totals["hog_missed"] += int((~data["detected"]).sum())
    print(json.dumps(totals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
