"""Blend two generators of the same architecture weight by weight (a "weight-space ensemble").

Why: a short fine-tune from a shipped generator can trade one figure for another (for example
expression for realism). Interpolating between the fine-tune and its starting point is a cheap way
to look for a point on that trade-off without more training. The output is an fp16 generator file
with the fine-tune's config and a note of the blend; evaluate it like any candidate:

    python tools/diagnostics/interpolate_generators.py FINETUNED BASE --alpha 0.5 --out blend.safetensors
    python -m fewshot_core.eval swap --pairs 120 --shots 5 --seed validation-px --compare blend.safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from fewshot_core.generator.io import load_generator, save_generator
from fewshot_core.generator.network import FewShotGenerator


def blend_generators(finetuned: Path, base: Path, alpha: float) -> FewShotGenerator:
    """Return a generator whose weights are alpha * finetuned + (1 - alpha) * base, with a blend note."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    tuned = load_generator(finetuned)
    start = load_generator(base)
    if tuned.config.architecture() != start.config.architecture():
        raise ValueError(f"{finetuned.name} and {base.name} have different configs; blend only one architecture")
    start_state = start.state_dict()
    blended = {
        key: alpha * value + (1.0 - alpha) * start_state[key] if value.is_floating_point() else value
        for key, value in tuned.state_dict().items()
    }
    tuned.load_state_dict(blended)
    extra = dict(tuned.config.extra)
    extra["weights"] = f"blend: {alpha:g} x {finetuned.name} + {1.0 - alpha:g} x {base.name} ({extra.get('weights', '')})"
    tuned.config = dataclasses.replace(tuned.config, extra=extra)
    return tuned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("finetuned", type=Path)
    parser.add_argument("base", type=Path)
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the fine-tuned generator")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    model = blend_generators(args.finetuned, args.base, args.alpha)
    save_generator(model, model.config, args.out)
    print(json.dumps({"out": str(args.out), "alpha": args.alpha}))


if __name__ == "__main__":
    main()
