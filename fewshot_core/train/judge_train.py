"""`python -m fewshot_core.train.judge_train`: fit the landmark judge to dlib's 68 points on the prepared crops.

    python -m fewshot_core.train.judge_train [--out PATH] [--steps N] [--max-minutes M]

Trains on the training side of the split (`judge_labels` output, HOG-detected rows only), reports on the
held-out side: the judge's error against dlib (mean point distance over the inter-ocular distance, raw and
after the similarity fit the expression figure uses), and how well its per-face expression error between
two crops of the same photo (a mild blur apart) agrees with zero. The last line printed is JSON.

Augmentation: flips (points re-ordered), a small random similarity (shift, scale, rotation; the points
follow), colour jitter, blur and noise, because the judge must place points on generator outputs too.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import FewShotError
from ..parsing.mapper import default_parser_path
from .judge_labels import label_dir
from .landmark_judge import (FLIP_68, OUTER_EYE_CORNERS, LandmarkJudge, blur3, default_judge_path,
                             similarity_aligned_error)
from .prepare import prepared_dir


def load_points(prepared: Path, heldout: bool) -> tuple[np.ndarray, np.ndarray]:
    """Crops uint8 [N, R, R, 3] and dlib points float32 [N, 68, 2] of one side of the split (HOG-found rows)."""
    crops, points = [], []
    for shard in sorted(p for p in prepared.glob("*.npz") if not p.name.endswith(".tmp.npz")):
        labels = label_dir(prepared) / shard.name
        if not labels.is_file():
            continue
        with np.load(shard) as data, np.load(labels) as lab:
            keep = (data["heldout"] if heldout else ~data["heldout"]) & lab["detected"]
            crops.append(data["crops"][keep])
            points.append(lab["points"][keep])
    if not crops:
        raise FewShotError(f"no dlib landmark labels under {label_dir(prepared)}; run "
                           "`python -m fewshot_core.train.judge_labels` first")
    return np.concatenate(crops), np.concatenate(points)


def augment(crops: Tensor, points: Tensor, gen: torch.Generator, strength: float = 1.0) -> tuple[Tensor, Tensor]:
    """Flip, small similarity warp, colour jitter, blur and noise; points [B, 68, 2] pixel follow the warp."""
    b, _, h, w = crops.shape
    flip = torch.rand(b, generator=gen) < 0.5
    if flip.any():
        crops[flip] = crops[flip].flip(-1)
        p = points[flip][:, FLIP_68]
        p[..., 0] = w - 1 - p[..., 0]
        points[flip] = p
    angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(8) * strength
    scale = 1 + (torch.rand(b, generator=gen) * 2 - 1) * 0.06 * strength
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * 0.06 * strength  # normalised units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], -1), torch.stack([sin, cos, shift[:, 1]], -1)], 1)
    grid = F.affine_grid(theta, list(crops.shape), align_corners=False)
    crops = F.grid_sample(crops, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # output n = A^-1 (input n - t), with n = (2 px + 1) / side - 1
    size = torch.tensor([w, h], dtype=torch.float32)
    n_in = (2 * points + 1) / size - 1
    a_inv = torch.linalg.inv(theta[:, :, :2])
    n_out = torch.einsum("bij,bpj->bpi", a_inv, n_in - theta[:, None, :, 2])
    points = ((n_out + 1) * size - 1) / 2
    gain = 1 + (torch.rand(b, 3, 1, 1, generator=gen) * 2 - 1) * 0.15 * strength
    bias = (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * 0.08 * strength
    crops = crops * gain + bias
    blur = torch.rand(b, generator=gen) < 0.3 * strength
    if blur.any():
        crops[blur] = blur3(crops[blur])
    crops = crops + torch.randn(crops.shape, generator=gen) * 0.01 * strength
    return crops.clamp(0, 1), points


def to_tensor(crops: np.ndarray) -> Tensor:
    return torch.from_numpy(crops).permute(0, 3, 1, 2).float().div_(255)


@torch.no_grad()
def evaluate(judge: LandmarkJudge, crops: np.ndarray, points: np.ndarray, batch: int = 64) -> dict[str, float]:
    """Judge against dlib on held-out crops: raw and similarity-aligned point error over the inter-ocular distance."""
    judge.eval()
    raw, aligned, self_err = [], [], []
    left, right = OUTER_EYE_CORNERS
    for i in range(0, len(crops), batch):
        x = to_tensor(crops[i:i + batch])
        ref = torch.from_numpy(points[i:i + batch]).float()
        pred = judge(x)
        iod = (ref[:, right] - ref[:, left]).norm(dim=-1)
        raw.append(((pred - ref).norm(dim=-1).mean(1) / iod).numpy())
        aligned.append(similarity_aligned_error(pred, ref).numpy())
        self_err.append(similarity_aligned_error(judge(blur3(x)), pred).numpy())
    return {"nme_raw": float(np.concatenate(raw).mean()), "nme_aligned": float(np.concatenate(aligned).mean()),
            "blur_self_error": float(np.concatenate(self_err).mean())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fewshot_core.train.judge_train")
    ap.add_argument("--prepared", type=Path, default=prepared_dir(128))
    ap.add_argument("--parser", type=Path, default=None, help="parser file to start from (default: shipped)")
    ap.add_argument("--out", type=Path, default=default_judge_path())
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-minutes", type=float, default=None)
    ap.add_argument("--val-limit", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    crops, points = load_points(args.prepared, heldout=False)
    val_crops, val_points = load_points(args.prepared, heldout=True)
    pick = np.random.default_rng(args.seed).permutation(len(val_crops))[: args.val_limit]
    val_crops, val_points = val_crops[pick], val_points[pick]
    print(f"{len(crops)} training crops, {len(val_crops)} held-out crops", flush=True)
    if not len(crops):
        print("error: no training-side crops with dlib labels", file=sys.stderr)
        return 2
    judge = LandmarkJudge.from_parser(args.parser or default_parser_path())
    opt = torch.optim.AdamW(judge.parameters(), lr=args.lr, weight_decay=1e-4)
    warmup = min(100, args.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(warmup, 1))
                                              * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps)))
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    started = time.time()
    deadline = started + 60 * args.max_minutes if args.max_minutes else None
    step = 0
    for step in range(1, args.steps + 1):
        judge.train()
        idx = rng.integers(0, len(crops), min(args.batch, len(crops)))
        x, p = augment(to_tensor(crops[idx]), torch.from_numpy(points[idx]).float(), gen)
        pred = judge(x)
        loss = F.smooth_l1_loss(pred, p, beta=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0:
            print(json.dumps({"step": step, "loss_px": round(float(loss.detach()), 4),
                              "seconds": round(time.time() - started, 1)}), flush=True)
        if deadline is not None and time.time() > deadline:
            print(f"stopped by --max-minutes at step {step}", flush=True)
            break
    figures = evaluate(judge, val_crops, val_points) if len(val_crops) else {}
    if not figures:
        print("note: no held-out crops with labels; no held-out figures", flush=True)
    meta = {"training": json.dumps({"steps": step, "batch": args.batch, "lr": args.lr, "seed": args.seed,
                                    "train_crops": len(crops), "seconds": round(time.time() - started)}),
            "heldout": json.dumps(figures)}
    judge.save(args.out, meta)
    print(json.dumps({"out": str(args.out), "steps": step, "seconds": round(time.time() - started, 1),
                      **{k: round(v, 5) for k, v in figures.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
