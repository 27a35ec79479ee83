"""Does a state dict fit a module? One check for every loader, so every wrong-file error reads the same way."""
from __future__ import annotations

import torch


def state_dict_mismatch(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """None when `state` has exactly `module`'s keys and shapes; otherwise a short description of the gap."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if not (missing or unexpected or wrong):
        return None
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} with wrong shape (e.g. {k}: file {list(state[k].shape)}, "
                     f"network {list(expected[k])})")
    return "; ".join(parts)
