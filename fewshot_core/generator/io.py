"""Saving and loading generator weights as safetensors with their config inside.

File layout: tensors = the `FewShotGenerator` state dict (float16 by default,
halving the file); metadata "format" = "fewshot-generator-v1" and
"fewshot_config" = the `GeneratorConfig` as JSON. A file is therefore
self-describing and anything that does not fit is refused with the file named.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..state_check import state_dict_mismatch
from ..errors import ModelFileMissingError, WeightsMismatchError
from .config import GeneratorConfig
from .network import FewShotGenerator

FORMAT = "fewshot-generator-v1"
CONFIG_KEY = "fewshot_config"


def save_generator(model: FewShotGenerator, cfg: GeneratorConfig, path: str | os.PathLike[str],
                   dtype: torch.dtype = torch.float16) -> Path:
    """Write `model`'s weights (floats cast to `dtype`) and `cfg` to `path`; returns the path."""
    if model.config.to_dict() != cfg.to_dict():
        raise ValueError("save_generator: cfg differs from the config the model was built with.")
    state = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).cpu().contiguous()
             for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, CONFIG_KEY: json.dumps(cfg.to_dict(), sort_keys=True)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=meta)
    return path


def _missing(path: Path) -> ModelFileMissingError:
    return ModelFileMissingError(
        f"Generator weights not found at {path}. Put the trained generator file "
        "(fewshot-generator-v1 .safetensors) there, or train one with `python -m fewshot_core.train`."
    )


def _read(path: Path, with_tensors: bool) -> tuple[GeneratorConfig, dict[str, torch.Tensor]]:
    """The config (and, if asked, the tensors) of a generator file; clear errors for missing or foreign files."""
    if not path.is_file():
        raise _missing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            cfg = _config_from_meta(f.metadata() or {}, path)
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}
    except WeightsMismatchError:
        raise
    except Exception as exc:  # safetensors raises several types for corrupt/foreign files
        raise WeightsMismatchError(
            f"{path} is not a readable safetensors file ({exc}); replace it with a fewshot generator file."
        ) from exc
    return cfg, tensors


def read_generator_config(path: str | os.PathLike[str]) -> GeneratorConfig:
    """The config stored in a generator file, without loading its tensors."""
    return _read(Path(path), with_tensors=False)[0]


def _config_from_meta(meta: dict[str, str], path: Path) -> GeneratorConfig:
    if meta.get("format") != FORMAT:
        raise WeightsMismatchError(
            f"{path} is not a fewshot generator file (metadata format is {meta.get('format')!r}, "
            f"expected {FORMAT!r}); point the loader at a generator weights file."
        )
    if CONFIG_KEY not in meta:
        raise WeightsMismatchError(f"{path} has no '{CONFIG_KEY}' metadata; the file is incomplete, re-export it.")
    try:
        data = json.loads(meta[CONFIG_KEY])
    except json.JSONDecodeError as exc:
        raise WeightsMismatchError(f"{path} has an unreadable '{CONFIG_KEY}' ({exc}); re-export it.") from exc
    try:
        return GeneratorConfig.from_dict(data)
    except WeightsMismatchError as exc:
        raise WeightsMismatchError(f"{path}: {exc}") from exc


def load_generator(path: str | os.PathLike[str], device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32) -> FewShotGenerator:
    """Build the generator described by the file at `path` and load its weights (eval mode)."""
    path = Path(path)
    cfg, tensors = _read(path, with_tensors=True)
    model = FewShotGenerator(cfg)
    problem = state_dict_mismatch(model, tensors)
    if problem:
        raise WeightsMismatchError(
            f"{path} does not fit the generator its config describes: {problem}. "
            "The file is from another architecture or version; re-export or replace it."
        )
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    return model.to(device=device, dtype=dtype).eval()


def random_generator(cfg: GeneratorConfig | None = None, seed: int = 0) -> FewShotGenerator:
    """An untrained generator with reproducible random weights, for plumbing tests.

    The zero-initialised modulations are randomised too, so identity and
    structure visibly change the output even before training.
    """
    cfg = cfg or GeneratorConfig()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FewShotGenerator(cfg)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.ndim >= 2 and float(p.abs().max()) == 0.0:
                    p.normal_(0.0, 0.5 / p.shape[1] ** 0.5)
    return model.eval()
