"""`python -m fewshot_core.train.average A B --weight 0.5 --out C`: a weighted average of two generators' weights.

Why: two fine-tunes that start from the same exported generator (or a fine-tune and its starting point) stay in
one basin of the loss, so the average of their weights behaves like a model between them, often better than
either on the figures each trades away ("model soups"; WiSE-FT). It costs no training. The average is taken in
float32 and written in the export's fp16; both files must have the same architecture. The output's metadata
records both inputs (path, sha256 and run record) and the weight, so the file says how it was made.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import FewShotError, WeightsMismatchError
from ..generator import GeneratorConfig, load_generator, save_generator
from ..models.download import sha256_of


def _record(path: Path, cfg: GeneratorConfig) -> dict:
    return {"path": str(path), "sha256": sha256_of(path), "run": cfg.extra}


def average_generators(a: Path, b: Path, weight_b: float, out: Path) -> Path:
    """Write (1 - weight_b) * A + weight_b * B to `out` (fp16), with both inputs recorded in its metadata."""
    if not 0.0 <= weight_b <= 1.0:
        raise FewShotError(f"--weight must lie in [0, 1] (the share of B), got {weight_b}.")
    first, second = load_generator(a), load_generator(b)  # float32; clear errors for missing or foreign files
    changed = first.config.architecture_changes(second.config)
    if changed:
        raise WeightsMismatchError(f"{a} and {b} have different architectures ({changed}); only generators of one "
                                   "architecture can be averaged.")
    theirs = second.state_dict()
    first.load_state_dict({k: (1.0 - weight_b) * v + weight_b * theirs[k] if v.is_floating_point() else v
                           for k, v in first.state_dict().items()})
    cfg = GeneratorConfig.from_dict({**first.config.to_dict(), "extra": {
        "weights": f"average: {1.0 - weight_b:g} x A + {weight_b:g} x B",
        "A": _record(a, first.config), "B": _record(b, second.config)}})
    first.config = cfg
    return save_generator(first, cfg, out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fewshot_core.train.average", description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="first generator file")
    ap.add_argument("b", type=Path, help="second generator file")
    ap.add_argument("--weight", type=float, default=0.5, help="B's share of the average (default 0.5)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    try:
        path = average_generators(args.a, args.b, args.weight, args.out)
    except FewShotError as exc:
        print(f"average: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"average": str(path), "weight_b": args.weight}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
