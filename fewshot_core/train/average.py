"""`python -m fewshot_core.train.average A B [C ...] [--weight W | --weights W1 W2 ...] --out OUT`: a weighted
average of generators' weights.

Why: fine-tunes that start from the same exported generator (or a fine-tune and its starting point) stay in one
basin of the loss, so the average of their weights behaves like a model between them, often better than either
on the figures each trades away ("model soups"; WiSE-FT). Runs of one recipe that differ only in their seed share
what the recipe teaches and differ in the noise of their batches, so their average keeps the first and shrinks
the second (for the `cpu_finetune7` fine-tune this did not lower its realism cost: docs/EVALUATION.md, sixth
session of 2026-12-07). It costs no training. The average is taken in float32 and written in the export's fp16; all files
must have the same architecture. The output's metadata records every input (path, sha256, run record, share), so
the file says how it was made.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from ..errors import FewShotError, WeightsMismatchError
from ..generator import GeneratorConfig, load_generator, save_generator
from ..models.download import sha256_of


def _record(path: Path, cfg: GeneratorConfig, share: float) -> dict:
    return {"path": str(path), "sha256": sha256_of(path), "run": cfg.extra, "share": share}


def _shares(count: int, weight_b: float | None, weights: Sequence[float] | None) -> list[float]:
    """Each input's share: uniform by default; `weight_b` is the second file's share of two (the old form)."""
    if count < 2:
        raise FewShotError(f"an average needs at least two generator files, got {count}.")
    if weight_b is not None and weights is not None:
        raise FewShotError("give either --weight (B's share of two files) or --weights (one per file), not both.")
    if weight_b is not None:
        if count != 2:
            raise FewShotError(f"--weight is B's share of exactly two files; for {count} files use --weights.")
        if not 0.0 <= weight_b <= 1.0:
            raise FewShotError(f"--weight must lie in [0, 1] (the share of B), got {weight_b}.")
        return [1.0 - weight_b, weight_b]
    if weights is None:
        return [1.0 / count] * count
    if len(weights) != count or min(weights) < 0 or sum(weights) <= 0:
        raise FewShotError(f"--weights needs {count} non-negative numbers (one per file) with a positive sum, "
                           f"got {list(weights)}.")
    total = float(sum(weights))
    return [w / total for w in weights]


def average_generators(paths: Sequence[Path], out: Path, weights: Sequence[float] | None = None) -> Path:
    """Write sum_i share_i * input_i to `out` (fp16; shares are `weights` normalised, uniform by default), with
    every input recorded in its metadata."""
    shares = _shares(len(paths), None, weights)
    models = [load_generator(path) for path in paths]  # float32; clear errors for missing or foreign files
    first = models[0]
    for path, model in zip(paths[1:], models[1:]):
        changed = first.config.architecture_changes(model.config)
        if changed:
            raise WeightsMismatchError(f"{paths[0]} and {path} have different architectures ({changed}); only "
                                       "generators of one architecture can be averaged.")
    states = [model.state_dict() for model in models]
    first.load_state_dict({k: sum(share * state[k] for share, state in zip(shares, states))
                           if v.is_floating_point() else v for k, v in states[0].items()})
    labels = [chr(ord("A") + i) if i < 26 else str(i + 1) for i in range(len(paths))]
    cfg = GeneratorConfig.from_dict({**first.config.to_dict(), "extra": {
        "weights": "average: " + " + ".join(f"{share:g} x {label}" for share, label in zip(shares, labels)),
        **{label: _record(Path(path), model.config, share)
           for label, path, model, share in zip(labels, paths, models, shares)}}})
    first.config = cfg
    return save_generator(first, cfg, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fewshot_core.train.average", description=__doc__.splitlines()[0])
    ap.add_argument("files", type=Path, nargs="+", help="generator files (two or more, one architecture)")
    ap.add_argument("--weight", type=float, default=None, help="with two files: B's share (default 0.5)")
    ap.add_argument("--weights", type=float, nargs="+", default=None,
                    help="one share per file, normalised to sum 1 (default: uniform)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    try:
        shares = _shares(len(args.files), args.weight, args.weights)
        path = average_generators(args.files, args.out, weights=shares)
    except FewShotError as exc:
        print(f"average: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"average": str(path), "shares": shares}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
