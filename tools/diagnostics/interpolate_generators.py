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
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), "pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        metadata = dict(handle.metadata() or {})
    return tensors, metadata


def blend_generators(finetuned: Path, base: Path, alpha: float) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return alpha * finetuned + (1 - alpha) * base, with the fine-tune's metadata and a blend note."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    tuned, metadata = _read(finetuned)
    start, base_metadata = _read(base)
    if tuned.keys() != start.keys():
        missing = sorted(set(tuned) ^ set(start))[:5]
        raise ValueError(f"the two generators have different tensors (for example {missing}); blend only one architecture")
    if json.loads(metadata.get("fewshot_config", "{}")).get("base_channels") != json.loads(
        base_metadata.get("fewshot_config", "{}")
    ).get("base_channels"):
        raise ValueError("the two generators have different configs; blend only one architecture")
    blended = {}
    for key, value in tuned.items():
        other = start[key]
        if value.shape != other.shape:
            raise ValueError(f"tensor {key} has shape {tuple(value.shape)} in one file and {tuple(other.shape)} in the other")
        if value.is_floating_point():
            mixed = alpha * value.float() + (1.0 - alpha) * other.float()
            blended[key] = mixed.to(torch.float16).contiguous()
        else:
            blended[key] = value.contiguous()
    config = json.loads(metadata["fewshot_config"])
    extra = config.setdefault("extra", {})
    extra["weights"] = f"blend: {alpha:g} x {finetuned.name} + {1.0 - alpha:g} x {base.name} ({extra.get('weights', '')})"
    metadata["fewshot_config"] = json.dumps(config, sort_keys=True)
    return blended, metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("finetuned", type=Path)
    parser.add_argument("base", type=Path)
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the fine-tuned generator")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    tensors, metadata = blend_generators(args.finetuned, args.base, args.alpha)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata=metadata)
    print(json.dumps({"out": str(args.out), "alpha": args.alpha, "tensors": len(tensors)}))


if __name__ == "__main__":
    main()
