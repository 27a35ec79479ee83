"""Grow a trained parser into a wider or deeper one that computes exactly the same logits.

Why: the parser's own metric stalls with more CPU training at one size (docs/PARSER.md), and training a
bigger parser from scratch takes hours on two cores. Growing the trained one function-preservingly
(Net2Net's idea, Chen et al., ICLR 2016, with zero-initialised consumers instead of copied units) lets a
short fine-tune start at the old parser's accuracy and spend its steps on the new capacity only:

* every old weight is copied into the leading slice of its new tensor;
* a new channel gets a fresh producer, but every convolution that *reads* it starts with zero weights
  for it, so it cannot change any output until training moves those weights;
* a new residual block starts with its last BatchNorm's scale and shift at zero: x + 0 = x (its input is
  already non-negative, so the ReLU after the sum changes nothing).

The head reads [decoder features, folded pixels]; widening the features moves the pixels' input slots,
which `_head_input_index` maps.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import WeightsMismatchError
from .network import FaceParser, ParserConfig


def _check_growth(old: ParserConfig, new: ParserConfig) -> None:
    grows = (all(n >= o for n, o in zip(new.widths, old.widths)) and all(n >= o for n, o in zip(new.blocks, old.blocks))
             and new.full_res >= old.full_res)
    if not grows or new.classes != old.classes or new.resolution != old.resolution:
        raise WeightsMismatchError(
            f"can only grow a parser: widths {old.widths} -> {new.widths}, blocks {old.blocks} -> {new.blocks}, "
            f"head {old.full_res} -> {new.full_res} (classes and resolution unchanged). Fix: pass widths, "
            "blocks and --head at least as large as the --init file's."
        )


def _head_input_index(old: ParserConfig, new: ParserConfig) -> Tensor:
    """Where each of the old head's input channels sits in the new head's input."""
    w_old, w_new = old.widths[0], new.widths[0]
    idx = torch.arange(w_old + 12)  # 12 = the crop's 3 colours folded 2x2 (`FaceParser.forward`)
    return torch.where(idx < w_old, idx, idx + (w_new - w_old))


def _grow_tensor(key: str, old: Tensor, fresh: Tensor, module: nn.Module | None,
                 in_index: Tensor | None) -> Tensor:
    """`fresh` (the new model's own initialisation) with `old` copied in and new inputs zeroed."""
    if old.ndim == 0 or (old.shape == fresh.shape and in_index is None):
        return old.clone().to(fresh.dtype)
    out = fresh.clone()  # new output rows and channels keep their fresh initialisation ...
    if isinstance(module, nn.Conv2d) and key.endswith("weight") and module.groups == 1:
        keep_in = in_index if in_index is not None else torch.arange(old.shape[1])
        new_in = torch.ones(fresh.shape[1], dtype=torch.bool)
        new_in[keep_in] = False
        out[:, new_in] = 0  # ... but nothing reads a new input channel yet
        out[: old.shape[0]][:, keep_in] = old.to(fresh.dtype)
        return out
    slices = tuple(slice(0, s) for s in old.shape)
    out[slices] = old.to(fresh.dtype)
    return out


@torch.no_grad()
def grow_parser(old: FaceParser, config: ParserConfig, seed: int = 0) -> FaceParser:
    """A `FaceParser(config)` with the same outputs as `old` (eval and train mode), ready to fine-tune."""
    _check_growth(old.config, config)
    torch.manual_seed(seed)
    new = FaceParser(config)
    modules = dict(new.named_modules())
    old_state = old.state_dict()
    state = new.state_dict()
    head_in = _head_input_index(old.config, config)
    for key, fresh in state.items():
        owner = modules.get(key.rsplit(".", 1)[0])
        if key in old_state:
            index = head_in if key == "head.0.weight" else None
            state[key] = _grow_tensor(key, old_state[key], fresh, owner, index)
        elif isinstance(owner, nn.BatchNorm2d) and ".body.3." in key and key.endswith(("weight", "bias")):
            state[key] = torch.zeros_like(fresh)  # a new residual block adds exactly zero
    new.load_state_dict(state)
    new.class_bias = None if old.class_bias is None else old.class_bias.clone()
    return new.train(old.training)


__all__ = ["grow_parser"]
