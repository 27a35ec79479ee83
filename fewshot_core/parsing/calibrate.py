"""`python -m fewshot_core.parsing.calibrate`: per-class logit offsets that put the parser's borders where
MediaPipe's labels put them.

    python -m fewshot_core.parsing.calibrate [--weights W] [--out W] [--every 10] [--threads 2]

Why: the parser trains with class-weighted cross-entropy plus Dice, which pays small classes (eyes,
irises, lips) for every border pixel they win, so they come out fatter than the labels. One offset per
class, added to the logits, undoes that prior (logit adjustment, Menon et al., ICLR 2021). The offsets
are fitted by coordinate ascent on mean IoU over faces of *training* identities only (every N-th), never
the held-out ones the evaluation scores, and written into the weights file's metadata, which the
structure mapper reads. A retrained parser needs calibrating again. The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import FewShotError
from ..paths import cache_root
from .classes import NUM_CLASSES
from .mapper import ParserStructureMapper, default_parser_path
from .network import CLASS_BIAS_KEY
from .train import confusion, iou_from_confusion, load_labelled

STEPS = (0.4, 0.2, 0.1)  # offset moves tried per class, coarse to fine, one round each


def log_probs(mapper: ParserStructureMapper, crops_u8: np.ndarray, batch: int = 64) -> torch.Tensor:
    """Log-softmax [N, C, R, R] (fp16, to keep thousands of faces in memory) with the file's own offsets."""
    out = []
    for i in range(0, len(crops_u8), batch):
        x = torch.from_numpy(crops_u8[i:i + batch]).permute(0, 3, 1, 2).float() / 255
        out.append(torch.log_softmax(mapper.logits(x), dim=1).half())
    return torch.cat(out)


def mean_iou(scores: torch.Tensor, maps: torch.Tensor, bias: torch.Tensor, chunk: int = 100) -> float:
    """Mean IoU over the non-background classes of argmax(scores + bias) against `maps`."""
    conf = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
    for i in range(0, len(scores), chunk):
        pred = (scores[i:i + chunk].float() + bias[None, :, None, None]).argmax(dim=1)  # no copy if float
        conf += confusion(pred, maps[i:i + chunk])
    return float(np.nanmean(iou_from_confusion(conf).numpy()[1:]))


def fit_class_bias(scores: torch.Tensor, maps: torch.Tensor, steps=STEPS) -> tuple[torch.Tensor, float, float]:
    """Offsets [C] (background fixed at 0) that raise mean IoU; returns (offsets, mIoU before, after)."""
    scores = scores.float()  # once, not in every trial (about 1.6 GB for 2,000 faces at 128 px)
    bias = torch.zeros(scores.shape[1])
    start = best = mean_iou(scores, maps, bias)
    for step in steps:
        for c in range(1, scores.shape[1]):
            for move in (-step, step):
                while True:  # keep moving while it helps
                    trial = bias.clone()
                    trial[c] += move
                    value = mean_iou(scores, maps, trial)
                    if value <= best:
                        break
                    best, bias = value, trial
    return bias, start, best


def write_class_bias(source: Path, out: Path, bias: torch.Tensor, note: dict) -> Path:
    """Copy the parser file at `source` to `out` with the offsets (and how they were fitted) in its metadata."""
    with safe_open(str(source), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta[CLASS_BIAS_KEY] = json.dumps([round(float(v), 4) for v in bias])
    meta["calibration"] = json.dumps(note, sort_keys=True)
    partial = out.with_name(out.name + ".partial")
    save_file(tensors, str(partial), metadata=meta)
    partial.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fewshot_core.parsing.calibrate", description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=default_parser_path())
    ap.add_argument("--out", type=Path, default=None, help="where to write (default: --weights, in place)")
    ap.add_argument("--labels", type=Path, default=cache_root() / "prepared" / "r128" / "labels")
    ap.add_argument("--every", type=int, default=10, help="use every N-th training face")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    try:
        mapper = ParserStructureMapper.from_file(args.weights)
        if mapper.parser.class_bias is not None:
            raise FewShotError(f"{args.weights} is already calibrated ({CLASS_BIAS_KEY} in its metadata); "
                               "calibrate the uncalibrated file the trainer wrote.")
        faces = load_labelled(args.labels, heldout=False)
        pick = np.arange(0, len(faces.crops), max(1, args.every))
        scores, maps = log_probs(mapper, faces.crops[pick]), torch.from_numpy(faces.maps[pick])
        del faces
        bias, before, after = fit_class_bias(scores, maps)
    except FewShotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    note = {"faces": int(len(pick)), "every": args.every, "split": "training identities", "miou_before": round(before, 4),
            "miou_after": round(after, 4), "steps": list(STEPS)}
    out = write_class_bias(args.weights, args.out or args.weights, bias, note)
    print(json.dumps({"calibrated": str(out), "bias": [round(float(v), 3) for v in bias], **note,
                      "seconds": round(time.perf_counter() - started, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
