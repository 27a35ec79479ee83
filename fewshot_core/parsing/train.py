"""Train the face parser on MediaPipe-rendered class maps (distillation).

    python -m fewshot_core.parsing.train --labels DIR --out weights/parser_128.safetensors [--epochs E | --steps N]
        [--init WEIGHTS --aug-strength S --blur P]   # fine-tune from a parser file

DIR holds one labels npz per prepared shard (tools/labelling/label_crops.py:
`class_maps`, `found`, same row order as the shard); the shards themselves
(`crops`, `heldout`, ...) are read from --shards (default: DIR's parent). Only
rows with `heldout` False and a face found by MediaPipe are trained on.

Why the augmentations: at inference the crops come from MTCNN's 5 landmarks,
which are a few pixels off MediaPipe's idea of the face, and from photos of any
quality; so every batch is randomly shifted, rotated and scaled a little,
flipped (left/right classes swapped; `--flip 0` keeps MediaPipe's own asymmetries),
colour-jittered and sometimes blurred.
With `--render-labels` a moved crop's map is rendered afresh from MediaPipe's moved 478 points rather
than resampled (exact borders at sub-pixel moves). `--grow` widens or deepens the `--init` parser to the
`--widths/--blocks/--head` given without changing its outputs (`parsing/widen.py`), then fine-tunes it.
The loss is cross-entropy plus Dice; `--lovasz W` adds the Lovasz-softmax IoU surrogate, for fine-tuning.
Runs are seeded per step (epoch order and augmentation draws), so a resumed run
continues exactly where it stopped. Prints losses; the last line is JSON.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import FewShotError
from ..paths import cache_root
from .classes import FLIP_PERMUTATION, IGNORE_INDEX, NUM_CLASSES, PARSE_CLASSES
from .network import FaceParser, ParserConfig, count_parameters, load_parser, read_parser_metadata, save_parser
from .render import render_class_maps
from .widen import grow_parser

DEFAULT_RUN_DIR = cache_root() / "runs" / "parser"


class LabelDataError(FewShotError):
    """The labels or prepared shards are missing or do not match each other."""


# --- data --------------------------------------------------------------------------------------------


@dataclass
class LabelledFaces:
    """Crops uint8 [N,R,R,3], class maps uint8 [N,R,R], iris centres [N,2,2], shard landmarks [N,5,2], paths,
    and MediaPipe's mesh [N,478,2] in crop pixels (the points the maps were rendered from) when loaded."""

    crops: np.ndarray
    maps: np.ndarray
    iris: np.ndarray
    landmarks: np.ndarray
    paths: np.ndarray
    mesh: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.crops)


def _labels_for(shard: Path, labels_dir: Path) -> Path | None:
    for name in (shard.name, f"{shard.stem}_labels.npz", f"{shard.stem}.labels.npz"):
        if (labels_dir / name).is_file():
            return labels_dir / name
    return None


def load_labelled(labels_dir: Path, shards_dir: Path | None = None, heldout: bool = False,
                  limit: int | None = None, mesh: bool = False) -> LabelledFaces:
    """Rows of every labelled shard on one side of the split (`heldout`) where MediaPipe found a face
    (with `mesh`, also MediaPipe's 478 points, x and y, for re-rendering the maps of moved crops)."""
    labels_dir = Path(labels_dir)
    shards_dir = Path(shards_dir) if shards_dir is not None else labels_dir.parent
    shards = sorted(p for p in shards_dir.glob("*.npz") if not p.name.endswith(".tmp.npz"))
    pairs = [(s, _labels_for(s, labels_dir)) for s in shards]
    pairs = [(s, lab) for s, lab in pairs if lab is not None]
    if not pairs:
        raise LabelDataError(
            f"no labelled shards: {shards_dir} has {len(shards)} shard npz files and none has a labels file of the "
            f"same name in {labels_dir}. Fix: run `python -m tools.labelling.label_crops --crops SHARD --out "
            f"{labels_dir}/SHARD_NAME.npz` for each shard, or pass --shards."
        )
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("crops", "maps", "iris", "landmarks", "paths")}
    if mesh:
        parts["mesh"] = []
    total = 0
    for shard_path, labels_path in pairs:
        with np.load(shard_path) as shard, np.load(labels_path) as lab:
            n = len(shard["crops"])
            if len(lab["class_maps"]) != n:
                raise LabelDataError(f"{labels_path} has {len(lab['class_maps'])} rows but {shard_path} has {n}; "
                                     "relabel the shard.")
            if "paths" in lab.files and not np.array_equal(lab["paths"], shard["paths"]):
                raise LabelDataError(f"{labels_path} lists other photos than {shard_path}; relabel the shard.")
            keep = (shard["heldout"].astype(bool) == heldout) & lab["found"].astype(bool)
            idx = np.flatnonzero(keep)
            if limit is not None:
                idx = idx[: max(0, limit - total)]
            if len(idx) == 0:
                continue
            parts["crops"].append(shard["crops"][idx])
            parts["maps"].append(lab["class_maps"][idx])
            parts["iris"].append(lab["iris_centres"][idx].astype(np.float32))
            parts["landmarks"].append(shard["landmarks"][idx].astype(np.float32))
            parts["paths"].append(shard["paths"][idx])
            if mesh:
                if "landmarks" not in lab.files:
                    raise LabelDataError(f"{labels_path} holds no MediaPipe landmarks to re-render maps from. Fix: "
                                         "relabel with tools/labelling, or train without --render-labels.")
                parts["mesh"].append(lab["landmarks"][idx, :, :2].astype(np.float32))
            total += len(idx)
        if limit is not None and total >= limit:
            break
    if total == 0:
        side = "held-out" if heldout else "training"
        raise LabelDataError(f"no {side} faces with labels in {labels_dir}; label shards that hold {side} photos.")
    return LabelledFaces(**{k: np.concatenate(v) for k, v in parts.items()})


# --- augmentation ------------------------------------------------------------------------------------

_FLIP_LUT = torch.arange(256)
_FLIP_LUT[:NUM_CLASSES] = torch.tensor(FLIP_PERMUTATION)


def moved_points(points: Tensor, theta: Tensor, side: int) -> Tensor:
    """Where points [B,K,2] (pixel centres at integers) of the input land in `grid_sample`'s output for the
    output->input affine `theta` [B,2,3] (normalised, align_corners=False)."""
    norm = (2 * points + 1) / side - 1
    out = torch.linalg.solve(theta[:, :, :2], (norm - theta[:, None, :, 2]).transpose(1, 2)).transpose(1, 2)
    return ((out + 1) * side - 1) / 2


def augment(crops: Tensor, maps: Tensor, gen: torch.Generator, strength: float = 1.0,
            blur_p: float = 0.3, flip_p: float = 0.5, mesh: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Random geometry (shift/rotate/scale scaled by `strength`, a mirror on a `flip_p` share) on crops
    [B,3,R,R] float and maps [B,R,R] long, then colour, and a down-up resize on a `blur_p` share of the batch.

    `flip_p` 0 lets the parser learn MediaPipe's own left/right habits (its maps disagree with their mirror
    at mIoU 0.79), which a mirrored target averages away; the draw is made either way, so runs stay seeded.
    With `mesh` [B,478,2] (the points the maps were rendered from), the moved crops' maps are rendered
    afresh from the moved points instead of resampled: a nearest-resampled map snaps every border to the
    pixel grid, label noise on 4 px eye openings, while a re-rendered one is exact at sub-pixel shifts."""
    b, _, r, _ = crops.shape

    def u(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(shape or (b,), generator=gen)

    # Geometry: output pixel -> input pixel in normalised coords (affine_grid), about the crop centre.
    angle = u(-8.0, 8.0) * strength * math.pi / 180
    scale = torch.exp(u(-0.08, 0.08) * strength)
    shift = u(-4.0, 4.0, b, 2) * strength * 2 / r                     # up to 4 px
    flip = torch.rand(b, generator=gen) < flip_p
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    fx = torch.where(flip, -1.0, 1.0)
    theta = torch.stack([torch.stack([cos * fx, -sin, shift[:, 0]], 1),
                         torch.stack([sin * fx, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, [b, 1, r, r], align_corners=False)
    crops = F.grid_sample(crops, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if mesh is not None:
        points = moved_points(mesh.float(), theta, r).numpy()
        warped = torch.from_numpy(render_class_maps(points, r)).long()
    else:
        warped = F.grid_sample(maps[:, None].float(), grid, mode="nearest", padding_mode="reflection",
                               align_corners=False)[:, 0].long()
    flipped = _FLIP_LUT[warped.clamp(0, 255)]
    maps = torch.where(flip[:, None, None], flipped, warped)

    # Colour: brightness, contrast, saturation, channel gains, sometimes grey; then sometimes blur (small faces).
    grey = crops.mean(1, keepdim=True)
    sat = torch.where(torch.rand(b, generator=gen) < 0.05, torch.zeros(b), u(0.6, 1.4))
    crops = grey + (crops - grey) * sat[:, None, None, None]
    mean = crops.mean((1, 2, 3), keepdim=True)
    crops = mean + (crops - mean) * u(0.7, 1.3)[:, None, None, None]
    crops = crops * u(0.7, 1.3)[:, None, None, None] * u(0.92, 1.08, b, 3)[:, :, None, None]
    crops = crops.clamp(0, 1) ** torch.exp(u(-0.25, 0.25))[:, None, None, None]
    blur = torch.rand(b, generator=gen) < blur_p
    if bool(blur.any()):
        side = int(torch.randint(40, 100, (1,), generator=gen))
        small = F.interpolate(crops[blur], size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        crops[blur] = F.interpolate(small, size=(r, r), mode="bilinear", align_corners=False)
    noise = u(0.0, 0.03)[:, None, None, None] * torch.randn(crops.shape, generator=gen)
    return (crops + noise).clamp(0, 1), maps


# --- loss --------------------------------------------------------------------------------------------


def class_frequencies(maps: np.ndarray, sample: int = 1024) -> Tensor:
    """Pixel share of each class [NUM_CLASSES] over (an even sample of) the labelled pixels."""
    picks = np.linspace(0, len(maps) - 1, min(sample, len(maps))).round().astype(int)
    counts = np.bincount(maps[picks].ravel(), minlength=256)[:NUM_CLASSES].astype(np.float64)
    return torch.from_numpy(counts / max(1.0, counts.sum())).float()


def class_weights(freq: Tensor, power: float, cap: float = 10.0) -> Tensor:
    """Cross-entropy weights (freq / median freq) ** -power, clipped to [1/cap, cap]; power 0 = unweighted."""
    w = (freq.clamp_min(1e-6) / freq.median()) ** (-power)
    return w.clamp(1 / cap, cap)


def lovasz_softmax(probs: Tensor, target: Tensor, tail_error: float = 0.01) -> Tensor:
    """Lovasz-softmax (Berman et al., 2018) over the batch's pixels: a convex surrogate of 1 - IoU per class,
    averaged over the non-background classes present; IGNORE_INDEX pixels are skipped.

    Why beside Dice: Dice rewards overlap smoothly but not the way the IoU counts each pixel, so a parser
    trained on it needs its class borders recalibrated afterwards; the Lovasz extension is exact for hard
    predictions, so the border it moves towards is the one mean IoU pays for. Batch-wide, like the metric.
    """
    c = probs.shape[1]
    flat = probs.permute(0, 2, 3, 1).reshape(-1, c)
    labels = target.reshape(-1)
    keep = labels != IGNORE_INDEX
    flat, labels = flat[keep], labels[keep]
    losses = []
    for k in range(1, c):
        fg = (labels == k).to(flat.dtype)
        total = fg.sum()
        if total == 0:
            continue
        errors = (fg - flat[:, k]).abs()
        # Only the sorted head matters: the prefix counts stay exact with `total` taken over all pixels, and the
        # dropped tail adds at most tail_error * 1 (its weights sum to under 1). Sorting every pixel of a batch
        # would cost more than the forward and backward passes together.
        head = errors > tail_error
        errors, order = torch.sort(errors[head], descending=True)
        fg_sorted = fg[head][order]
        jaccard = 1 - (total - fg_sorted.cumsum(0)) / (total + (1 - fg_sorted).cumsum(0))
        grad = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        losses.append(torch.dot(errors, grad))   # an empty head (all pixels within tail_error) gives 0
    return torch.stack(losses).mean() if losses else probs.new_zeros(())


def parsing_loss(logits: Tensor, target: Tensor, dice_weight: float = 0.5,
                 weights: Tensor | None = None, lovasz_weight: float = 0.0) -> tuple[Tensor, dict[str, float]]:
    """Cross-entropy (IGNORE_INDEX skipped, optionally class-weighted) + soft Dice over the non-background
    classes present in the batch, + `lovasz_weight` times `lovasz_softmax` when it is not 0.

    Dice weighs each class equally whatever its area, which is what mean IoU rewards:
    without it the irises (~0.1% of pixels) are learnt last and blurriest.
    """
    ce = F.cross_entropy(logits, target, weight=weights, ignore_index=IGNORE_INDEX)
    valid = (target != IGNORE_INDEX)
    probs = torch.softmax(logits, 1) * valid[:, None]
    onehot = F.one_hot(target.clamp(max=NUM_CLASSES - 1), NUM_CLASSES).permute(0, 3, 1, 2) * valid[:, None]
    inter = (probs * onehot).sum((0, 2, 3))[1:]
    sums = (probs + onehot).sum((0, 2, 3))[1:]
    present = onehot.sum((0, 2, 3))[1:] > 0
    dice = 1 - (2 * inter + 1) / (sums + 1)
    dice = dice[present].mean() if bool(present.any()) else logits.new_zeros(())
    total = ce + dice_weight * dice
    parts = {"ce": float(ce.detach()), "dice": float(dice.detach())}
    if lovasz_weight:
        lovasz = lovasz_softmax(probs, target)   # Dice's probabilities: the ignored pixels it zeroes are dropped
        total = total + lovasz_weight * lovasz
        parts["lovasz"] = float(lovasz.detach())
    return total, parts


def confusion(pred: Tensor, target: Tensor, n: int = NUM_CLASSES) -> Tensor:
    """[n,n] counts (rows: reference, cols: prediction) over pixels whose reference is not IGNORE_INDEX."""
    valid = target != IGNORE_INDEX
    idx = target[valid].long() * n + pred[valid].long()
    return torch.bincount(idx, minlength=n * n).reshape(n, n)


def iou_from_confusion(conf: Tensor) -> Tensor:
    """Per-class IoU [n] (NaN for classes absent from both reference and prediction)."""
    conf = conf.double()
    inter = conf.diag()
    union = conf.sum(0) + conf.sum(1) - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.full_like(inter, float("nan")))


def predict_classes(model: FaceParser, crops_u8: np.ndarray, batch: int = 64) -> np.ndarray:
    """Argmax class maps uint8 [N,R,R] for uint8 crops [N,R,R,3] (on the model's device)."""
    out = []
    model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode():
        for i in range(0, len(crops_u8), batch):
            x = torch.from_numpy(crops_u8[i:i + batch]).to(device).permute(0, 3, 1, 2).float() / 255
            out.append(model(x).argmax(1).to(torch.uint8).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0,) + crops_u8.shape[1:3], np.uint8)


def mean_iou(model: FaceParser, faces: LabelledFaces) -> tuple[float, list[float]]:
    pred = torch.from_numpy(predict_classes(model, faces.crops))
    iou = iou_from_confusion(confusion(pred, torch.from_numpy(faces.maps)))
    return float(np.nanmean(iou[1:].numpy())), [round(float(v), 4) for v in iou]


# --- training ----------------------------------------------------------------------------------------


def _batch(faces: LabelledFaces, idx: np.ndarray) -> tuple[Tensor, Tensor, Tensor | None]:
    rows = np.sort(idx)
    crops = torch.from_numpy(faces.crops[rows]).permute(0, 3, 1, 2).float() / 255
    maps = torch.from_numpy(faces.maps[rows]).long()
    mesh = torch.from_numpy(faces.mesh[rows]) if faces.mesh is not None else None
    return crops, maps, mesh


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 2% of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def update_average(average: FaceParser, model: FaceParser, decay: float) -> None:
    """Move the weight average a step (1 - decay) towards `model`; BatchNorm statistics are copied.

    Why: late in training each step's weights jitter around the optimum on noisy labels (MediaPipe's own
    maps disagree with their mirror at mIoU 0.79); their running average sits nearer its centre.
    """
    with torch.no_grad():
        torch._foreach_lerp_(list(average.parameters()), [p.detach() for p in model.parameters()], 1.0 - decay)
        for mine, theirs in zip(average.buffers(), model.buffers()):
            mine.copy_(theirs)


def train(args: argparse.Namespace) -> dict:
    if args.grow and args.init is None:
        raise FewShotError("--grow needs --init: the parser file to grow. Fix: add --init weights/parser_128.safetensors.")
    torch.manual_seed(args.seed)
    started = time.time()
    faces = load_labelled(args.labels, args.shards, heldout=False, limit=args.limit, mesh=args.render_labels)
    val = load_labelled(args.labels, args.shards, heldout=True, limit=args.val_faces) if args.val_faces else None
    n = len(faces)
    steps_per_epoch = n // args.batch
    if steps_per_epoch == 0:
        raise LabelDataError(f"only {n} training faces, fewer than one batch of {args.batch}.")
    total = args.steps or steps_per_epoch * args.epochs
    epochs = round(total / steps_per_epoch, 2)
    cfg = ParserConfig(widths=tuple(args.widths), blocks=tuple(args.blocks), full_res=args.head,
                       resolution=int(faces.crops.shape[1]))
    model = FaceParser(cfg)
    if args.init is not None and args.grow:  # fine-tune a grown copy: same outputs, the flags' architecture
        model = grow_parser(load_parser(args.init), cfg, seed=args.seed).train()
    elif args.init is not None:  # fine-tune: the architecture comes from the file, not from the flags
        model = load_parser(args.init).train()
        cfg = model.config
    freq = class_frequencies(faces.maps)
    weights = class_weights(freq, args.class_weight_power) if args.class_weight_power else None
    if args.init is None:
        with torch.no_grad():  # start from the class priors: no early steps spent learning how rare irises are
            model.head[-1].bias.copy_(freq.clamp_min(1e-6).log().repeat_interleave(4))
    device = torch.device(args.device)
    model = model.to(device, memory_format=torch.channels_last)
    if weights is not None:
        weights = weights.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    average = copy.deepcopy(model).eval().requires_grad_(False) if args.ema > 0 else None
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "checkpoint.pt"
    signature = {"config": cfg.to_dict(), "train_faces": n, "batch": args.batch, "steps": total,
                 "seed": args.seed, "lr": args.lr,
                 "dice": args.dice, "class_weight_power": args.class_weight_power,
                 "init": str(args.init), **({"grow": True} if args.grow else {}),
                 "aug_strength": args.aug_strength, "blur": args.blur,
                 **({"ema": args.ema} if args.ema > 0 else {}),
                 **({"flip": args.flip} if args.flip != 0.5 else {}),
                 **({"lovasz": args.lovasz} if args.lovasz else {}),
                 **({"render_labels": True} if args.render_labels else {})}
    step = 0
    if ckpt_path.is_file() and not args.fresh:
        ckpt = torch.load(ckpt_path, weights_only=True, map_location=device)
        if json.loads(ckpt["signature"]) == json.loads(json.dumps(signature)):
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["opt"])
            if average is not None:
                average.load_state_dict(ckpt["average"])
            step = int(ckpt["step"])
            print(f"resumed from {ckpt_path} at step {step}/{total}", flush=True)
        else:
            print(f"ignoring {ckpt_path}: it is from a run with other settings (pass --fresh to silence)", flush=True)
    print(f"parser: {count_parameters(model)} parameters, {n} training faces, {total} steps of {args.batch} "
          f"({epochs} epochs of {steps_per_epoch} steps), {torch.get_num_threads()} thread(s)", flush=True)

    def save_checkpoint() -> None:
        tmp = ckpt_path.with_suffix(".tmp")
        state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                 "signature": json.dumps(signature)}
        if average is not None:
            state["average"] = average.state_dict()
        torch.save(state, tmp)
        tmp.replace(ckpt_path)

    model.train()
    running: dict[str, float] = {}
    last_log = time.time()
    while step < total:
        epoch, within = divmod(step, steps_per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed * 1000 + epoch)).numpy()
        idx = order[within * args.batch:(within + 1) * args.batch]
        gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
        crops, maps, mesh = _batch(faces, idx)
        # On the CPU: seeded, so independent of the training device.
        crops, maps = augment(crops, maps, gen, args.aug_strength, args.blur, args.flip, mesh)
        crops = crops.to(device).contiguous(memory_format=torch.channels_last)  # ~25% faster convolutions on CPU
        maps = maps.to(device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, args.lr, args.warmup)
        loss, parts = parsing_loss(model(crops), maps, args.dice, weights, args.lovasz)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if average is not None:
            update_average(average, model, args.ema)
        step += 1
        for k, v in {"loss": float(loss.detach()), **parts}.items():
            running[k] = running.get(k, 0.0) + v
        running["count"] = running.get("count", 0.0) + 1
        if step % args.log_every == 0 or step == total:
            c = running.pop("count")
            avg = " ".join(f"{k} {v / c:.4f}" for k, v in running.items())
            rate = (time.time() - last_log) / c
            print(f"step {step}/{total} epoch {epoch + 1} {avg} lr {opt.param_groups[0]['lr']:.2e} "
                  f"{rate:.2f}s/step", flush=True)
            running, last_log = {}, time.time()
        if step % args.ckpt_every == 0 or step == total:
            save_checkpoint()
        if args.max_minutes and time.time() - started > 60 * args.max_minutes and step < total:
            save_checkpoint()
            # Also write the weights reached so far: a bounded GPU slot may end before the run does.
            save_parser(average if average is not None else model, args.out, dtype=torch.float16,
                        extra_metadata={"training": json.dumps({"stopped_at_step": step, "steps": total,
                                                                "ema": args.ema})})
            print(f"stopped after {args.max_minutes} min at step {step}/{total}; wrote {args.out}; rerun the same "
                  "command to resume", flush=True)
            return {"stopped": True, "step": step, "total_steps": total}

    model.eval()
    if average is not None:  # the average is what ships
        model = average
    result = {"out": str(args.out), "parameters": count_parameters(model), "train_faces": n, "epochs": epochs,
              "steps": total, "batch": args.batch, "seconds": round(time.time() - started)}
    if val is not None:
        miou, per_class = mean_iou(model, val)
        result.update({"val_faces": len(val), "val_miou": round(miou, 4),
                       "val_iou": dict(zip(PARSE_CLASSES, per_class))})
        print(f"held-out subset ({len(val)} faces, monitoring only): mIoU {miou:.4f}", flush=True)
    meta = {"training": json.dumps({k: result[k] for k in ("train_faces", "epochs", "steps", "batch")}
                                   | {"seed": args.seed, "lr": args.lr, "dice": args.dice,
                                      "class_weight_power": args.class_weight_power,
                                      "init": str(args.init), "aug_strength": args.aug_strength,
                                      "blur": args.blur, "ema": args.ema, "flip": args.flip,
                                      "lovasz": args.lovasz, "grow": args.grow,
                                      "render_labels": args.render_labels})}
    if args.init is not None:
        meta["init_training"] = read_parser_metadata(args.init).get("training", "")
    save_parser(model, args.out, dtype=torch.float16, extra_metadata=meta)
    return result


def build_argparser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m fewshot_core.parsing.train", description=__doc__.splitlines()[0])
    ap.add_argument("--labels", required=True, type=Path, help="folder of labels npz files, one per shard")
    ap.add_argument("--shards", type=Path, default=None, help="folder of prepared shards (default: --labels/..)")
    ap.add_argument("--out", required=True, type=Path, help="output weights (.safetensors, fp16)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--steps", type=int, default=None, help="total steps (overrides --epochs; may end mid-epoch)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--dice", type=float, default=1.0, help="weight of the Dice term (0 = cross-entropy only)")
    ap.add_argument("--lovasz", type=float, default=0.0,
                    help="weight of the Lovasz-softmax term, an IoU surrogate (0 = off; for fine-tuning)")
    ap.add_argument("--class-weight-power", type=float, default=0.5,
                    help="cross-entropy class weights (freq/median)^-power, clipped to [0.1, 10]; 0 = unweighted")
    ap.add_argument("--widths", type=int, nargs=4, default=list(ParserConfig().widths))
    ap.add_argument("--blocks", type=int, nargs=4, default=list(ParserConfig().blocks))
    ap.add_argument("--head", type=int, default=ParserConfig().full_res, help="head channels per output pixel")
    ap.add_argument("--aug-strength", type=float, default=1.0, help="scale of the shift/rotate/scale jitter")
    ap.add_argument("--render-labels", action="store_true",
                    help="render each moved crop's map afresh from MediaPipe's moved points (exact borders) "
                         "instead of resampling the stored map (needs labels files with 'landmarks')")
    ap.add_argument("--blur", type=float, default=0.3, help="share of each batch blurred by a down-up resize")
    ap.add_argument("--flip", type=float, default=0.5,
                    help="share of each batch mirrored (left/right classes swapped); 0 keeps MediaPipe's asymmetries")
    ap.add_argument("--init", type=Path, default=None, help="start from these parser weights (fine-tune)")
    ap.add_argument("--grow", action="store_true",
                    help="with --init: grow that parser to --widths/--blocks/--head first, keeping its outputs "
                         "(new channels and blocks start switched off; see parsing/widen.py)")
    ap.add_argument("--ema", type=float, default=0.0,
                    help="keep an exponential moving average of the weights with this decay (e.g. 0.998) and "
                         "write it instead of the last weights (0 = off)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda (augmentation stays on the CPU)")
    ap.add_argument("--limit", type=int, default=None, help="at most this many training faces")
    ap.add_argument("--val-faces", type=int, default=256, help="held-out faces for a final mIoU print (0 = none)")
    ap.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR, help="checkpoint folder (resumable)")
    ap.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    ap.add_argument("--max-minutes", type=float, default=None, help="checkpoint and stop after this long")
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--ckpt-every", type=int, default=200)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_argparser().parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        result = train(args)
    except FewShotError as exc:
        print(f"parsing.train: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
