"""Data preparation and the trainer's smoke config: steps, checkpoints, resume, export."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from fewshot_core.generator import load_generator
from fewshot_core.train.checkpoint import MAX_SHARD_BYTES
from fewshot_core.train.config import TrainConfig
from fewshot_core.train.prepare import prepare
from fewshot_core.train.trainer import Trainer


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, model_dir, data_root):
    out = tmp_path_factory.mktemp("prepared")
    summary = prepare(data_root, 64, ("lfw", "celeba299"), limit=40, out_dir=out)
    return out, summary


def test_prepare_keeps_faces_and_marks_heldout(prepared):
    out, summary = prepared
    assert summary["datasets"]["lfw"]["photos"] == 40
    assert summary["datasets"]["lfw"]["kept"] >= 38
    with np.load(out / "lfw_0000.npz") as shard:
        assert shard["crops"].shape[1:] == (64, 64, 3) and shard["crops"].dtype == np.uint8
        lm = shard["landmarks"]
        assert (lm[:, 0, 0] < lm[:, 1, 0]).all() and (lm[:, 2, 1] < lm[:, 3, 1]).all()  # eyes l<r, nose above mouth
        norms = np.linalg.norm(shard["embeddings"].astype(np.float32), axis=1)
        assert np.allclose(norms, 1, atol=1e-2)
        assert all(name.startswith("lfw/") for name in shard["identities"])


def test_smoke_training_checkpoints_resumes_and_exports(prepared, tmp_path):
    data, _ = prepared
    cfg = TrainConfig.load("cpu_smoke")
    trainer = Trainer(cfg, data, tmp_path / "run")
    losses = trainer.train()
    assert trainer.step == 3 and all(np.isfinite(v) for v in losses.values())
    shards = list((tmp_path / "run" / "checkpoint").glob("shard_*.safetensors"))
    assert shards and all(s.stat().st_size <= MAX_SHARD_BYTES + 4096 for s in shards)
    rows = list(csv.DictReader(open(tmp_path / "run" / "losses.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert (tmp_path / "run" / "samples" / "step_000003.png").is_file()
    weights = {k: v.clone() for k, v in trainer.generator.state_dict().items()}

    resumed = Trainer(cfg, data, tmp_path / "run")
    assert resumed.step == 3
    assert all(torch.equal(weights[k], v) for k, v in resumed.generator.state_dict().items())
    resumed.train(5)
    assert resumed.step == 5

    path = resumed.export(tmp_path / "gen.safetensors")
    generator = load_generator(path, device="cpu", dtype=torch.float32)
    assert generator.config.extra["steps"] == 5 and generator.config.resolution == 64
