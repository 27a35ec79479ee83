"""Carry the frozen FaceNet into a bounded GPU slot as int8, and restore it there.

    python -m fewshot_core.train.carry --out DIR            # here: DIR/facenet_int8.npz (~23 MiB)
    python -m fewshot_core.train.carry --restore DIR/facenet_int8.npz --models MODEL_DIR   # in the slot

Why: a slot takes at most 64 MiB of files in all, and FaceNet alone is 87 MiB
in float32. The trainer only uses it as a frozen judge (identity cosine and
perceptual features), for which per-output-channel int8 weights are close
enough (`python -m fewshot_core.train.carry --check` prints the embedding
cosine against float32). Shipped weights never depend on this copy.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..models import require_part
from ..models.fetch import part_path

CARRY_NAME = "facenet_int8.npz"


def quantize_tensor(t: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one float32 scale per output channel (dim 0)."""
    flat = t.float().reshape(t.shape[0], -1)
    scale = flat.abs().amax(dim=1).clamp_min(1e-12) / 127.0
    q = torch.round(flat / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q.reshape(t.shape).numpy(), scale.numpy()


def quantize_file(src: Path, out: Path) -> dict:
    """Weights with >= 2 dims and >= 4096 values become int8; everything else stays float32."""
    state = load_file(str(src))
    arrays: dict[str, np.ndarray] = {}
    for name, t in state.items():
        if t.is_floating_point() and t.ndim >= 2 and t.numel() >= 4096:
            arrays[f"q8::{name}"], arrays[f"scale::{name}"] = quantize_tensor(t)
        else:
            arrays[f"raw::{name}"] = t.float().numpy() if t.is_floating_point() else t.numpy()
    np.savez(out, **arrays)
    return {"out": str(out), "mib": round(out.stat().st_size / 2**20, 2), "tensors": len(state)}


def dequantize_file(src: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    with np.load(src) as data:
        for key in data.files:
            kind, name = key.split("::", 1)
            if kind == "raw":
                state[name] = torch.from_numpy(data[key].copy())
            elif kind == "q8":
                q = torch.from_numpy(data[key].astype(np.float32))
                scale = torch.from_numpy(data[f"scale::{name}"])
                state[name] = q * scale.reshape((-1,) + (1,) * (q.ndim - 1))
    return state


def restore(src: Path, models: Path) -> Path:
    """Write the dequantized FaceNet where `require_part("facenet")` looks in `models`."""
    target = part_path("facenet", models)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file(dequantize_file(src), str(target))
    return target


def check(src: Path) -> dict:
    """Embedding cosine between the float32 FaceNet and its int8 copy on random and smooth inputs."""
    from ..embed import FaceEmbedder

    full = FaceEmbedder.from_file(require_part("facenet"))
    carried = copy.deepcopy(full)  # same module, int8-derived weights; the 87 MiB file is read once
    carried.net.load_state_dict(dequantize_file(src))
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(16, 3, 20, 20, generator=g), size=160, mode="bilinear")
    with torch.no_grad():
        a, b = full.embed_crops(x), carried.embed_crops(x)
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
    return {"min_cosine": round(float(cos.min()), 5), "mean_cosine": round(float(cos.mean()), 5)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fewshot_core.train.carry")
    ap.add_argument("--out", type=Path, help="folder to write facenet_int8.npz into")
    ap.add_argument("--restore", type=Path, help="a facenet_int8.npz to turn back into the model file")
    ap.add_argument("--models", type=Path, help="model folder to restore into (default: the usual one)")
    ap.add_argument("--check", type=Path, help="compare a facenet_int8.npz with the float32 original")
    args = ap.parse_args(argv)
    if args.restore:
        from ..paths import model_dir

        summary = {"restored": str(restore(args.restore, args.models or model_dir()))}
    elif args.check:
        summary = check(args.check)
    elif args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        summary = quantize_file(require_part("facenet"), args.out / CARRY_NAME)
    else:
        ap.error("pass --out, --restore or --check")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
