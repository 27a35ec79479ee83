"""Checkpoints as folders of safetensors shards, each under a size cap, plus a JSON state.

Why shards: a checkpoint must come back through a transfer limit of 16 MiB per
file, and only safetensors (or weights-only loads) are allowed.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

MAX_SHARD_BYTES = 15 * 1024 * 1024


def flatten_optimizer(state: dict[str, Any], prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors and JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    per_param: dict[str, dict[str, Any]] = {}
    for key, slots in state["state"].items():
        scalars = {}
        for name, value in slots.items():
            if isinstance(value, torch.Tensor) and value.ndim > 0:
                tensors[f"{prefix}.{key}.{name}"] = value
            else:
                scalars[name] = value.item() if isinstance(value, torch.Tensor) else value
        per_param[str(key)] = scalars
    return tensors, {"param_groups": state["param_groups"], "scalars": per_param}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, scalars in meta["scalars"].items():
        state[int(key)] = {name: torch.tensor(value, dtype=torch.float32) if name == "step" else value
                           for name, value in scalars.items()}
    for name, tensor in tensors.items():
        if name.startswith(prefix + "."):
            _, key, slot = name.rsplit(".", 2)
            state.setdefault(int(key), {})[slot] = tensor
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(folder: Path, modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                    state: dict[str, Any]) -> None:
    """Write atomically: into folder.tmp, then rename over the old checkpoint."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {"state": state, "optimizers": {}}
    for name, module in modules.items():
        tensors.update({f"{name}.{k}": v.detach().cpu().contiguous() for k, v in module.state_dict().items()})
    for name, optimizer in optimizers.items():
        flat, rest = flatten_optimizer(optimizer.state_dict(), f"opt_{name}")
        tensors.update({k: v.detach().cpu().contiguous() for k, v in flat.items()})
        meta["optimizers"][name] = rest
    shard: dict[str, torch.Tensor] = {}
    size, index = 0, 0
    for key in sorted(tensors):
        nbytes = tensors[key].numel() * tensors[key].element_size()
        if shard and size + nbytes > MAX_SHARD_BYTES:
            save_file(shard, str(tmp / f"shard_{index:03d}.safetensors"))
            shard, size, index = {}, 0, index + 1
        shard[key] = tensors[key]
        size += nbytes
    if shard:
        save_file(shard, str(tmp / f"shard_{index:03d}.safetensors"))
    (tmp / "state.json").write_text(json.dumps(meta))
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def saved_module_names(folder: Path) -> set[str]:
    """Names of the modules a checkpoint holds (from the shard headers; no tensor is read)."""
    names: set[str] = set()
    for shard in folder.glob("shard_*.safetensors"):
        with safe_open(str(shard), "pt") as handle:
            names |= {key.split(".", 1)[0] for key in handle.keys() if not key.startswith("opt_")}
    return names


def load_checkpoint(folder: Path, modules: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, Any]:
    """Restore modules and optimizers in place; returns the saved training state."""
    tensors: dict[str, torch.Tensor] = {}
    for shard in sorted(folder.glob("shard_*.safetensors")):
        tensors.update(load_file(str(shard)))
    meta = json.loads((folder / "state.json").read_text())
    for name, module in modules.items():
        prefix = name + "."
        module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(unflatten_optimizer(tensors, meta["optimizers"][name], f"opt_{name}"))
    return meta["state"]
