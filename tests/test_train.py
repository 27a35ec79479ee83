"""Data preparation and the trainer's smoke config: steps, checkpoints, resume, export."""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

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

    with open(tmp_path / "run" / "losses.csv", "a", newline="") as handle:  # logged past the last checkpoint
        handle.write("4,32,9.9" + ",0" * 11 + "\n")
    resumed = Trainer(cfg, data, tmp_path / "run")
    assert resumed.step == 3
    assert all(torch.equal(weights[k], v) for k, v in resumed.generator.state_dict().items())
    resumed.train(5)
    assert resumed.step == 5
    rows = list(csv.DictReader(open(tmp_path / "run" / "losses.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5] and float(rows[3]["seconds"]) != 9.9

    path = resumed.export(tmp_path / "gen.safetensors")
    generator = load_generator(path, device="cpu", dtype=torch.float32)
    assert generator.config.extra["steps"] == 5 and generator.config.resolution == 64


@pytest.fixture(scope="module")
def labelled(prepared):
    """labels/<shard>.npz beside the shards, drawn from the landmarks (row 0: MediaPipe 'missed' it)."""
    from fewshot_core.structure import landmark_structure_map

    data, _ = prepared
    labels = data / "labels"
    labels.mkdir(exist_ok=True)
    for shard in data.glob("*.npz"):
        with np.load(shard) as content:
            lm = torch.from_numpy(content["landmarks"])
        maps = landmark_structure_map(lm, 64).argmax(1).numpy().astype(np.uint8)
        found = np.ones(len(maps), dtype=bool)
        found[0] = False
        maps[0] = 255
        iris = lm[:, :2].numpy().reshape(-1, 2, 2).astype(np.float32)
        np.savez(labels / shard.name, class_maps=maps, found=found, iris_centres=iris)
    return data


def test_parser_structure_mode_trains_on_class_maps(labelled, tmp_path):
    """Parser mode reads labels/<shard>.npz beside the shards; rows MediaPipe missed are left out."""
    data = labelled
    cfg = TrainConfig.load("cpu_smoke", {"structure": "parser", "steps": 2})
    trainer = Trainer(cfg, data, tmp_path / "run")
    assert trainer.gen_config.structure == "parser" and trainer.gen_config.struct_channels == 12
    assert trainer.data.class_maps is not None and trainer.data.class_maps.max() < 12
    batch = trainer.data.batch(np.arange(4), trainer.device, np.random.default_rng(0))
    soft = trainer.structure(batch)
    assert soft.shape == (4, 12, 64, 64) and torch.allclose(soft.sum(1), torch.ones(4, 64, 64), atol=1e-5)
    losses = trainer.train()
    assert trainer.step == 2 and all(np.isfinite(v) for v in losses.values())


def test_flip_mirrors_class_maps_and_swaps_sides(prepared):
    from fewshot_core.parsing.classes import CLASS_INDEX
    from fewshot_core.train.data import CLASS_FLIP

    maps = torch.zeros(1, 8, 8, dtype=torch.long)
    maps[0, 2, 1] = CLASS_INDEX["iris_l"]
    flipped = CLASS_FLIP[maps.flip(-1)]
    assert flipped[0, 2, 6] == CLASS_INDEX["iris_r"] and flipped.sum() == CLASS_INDEX["iris_r"]


def test_structure_loss_time_limit_and_latest_export(labelled, tmp_path):
    """The frozen parser judges cross outputs; a time limit ends the run on a checkpoint and an export."""
    cfg = TrainConfig.load("cpu_smoke", {"structure": "parser", "steps": 50, "w_struct": 1.0, "export_latest": True})
    trainer = Trainer(cfg, labelled, tmp_path / "run")
    assert trainer.parser is not None and not any(p.requires_grad for p in trainer.parser.parameters())
    losses = trainer.train(max_minutes=1e-6)
    assert trainer.step == 1, "the deadline had passed after the first step"
    assert np.isfinite(losses["struct"]) and losses["struct"] > 0
    assert (tmp_path / "run" / "checkpoint" / "state.json").is_file()
    latest = load_generator(tmp_path / "run" / "generator_latest.safetensors", device="cpu", dtype=torch.float32)
    assert latest.config.extra["steps"] == 1
    assert not list((tmp_path / "run").glob("*.partial.safetensors"))


def test_a_config_can_continue_another_and_override_a_few_values(tmp_path):
    base, cont = TrainConfig.load("cpu_finetune").to_dict(), TrainConfig.load("cpu_finetune2").to_dict()
    assert {k for k in base if base[k] != cont[k]} == {"name", "steps", "w_struct", "struct_balance"}
    assert cont["name"] == "cpu_finetune2" and cont["struct_balance"] == 0.5
    (tmp_path / "mine.json").write_text('{"base": "cpu_finetune", "lr_g": 1e-5}')
    mine = TrainConfig.load(tmp_path / "mine.json", {"steps": 5})
    assert (mine.name, mine.lr_g, mine.steps, mine.w_struct) == ("mine", 1e-5, 5, base["w_struct"])


def test_balanced_structure_loss_weighs_small_parts_up():
    """With balance, a mistake on a small class (a brow) costs more than the same count of skin mistakes."""
    import torch.nn.functional as F

    from fewshot_core.parsing.classes import CLASS_INDEX, IGNORE_INDEX, NUM_CLASSES
    from fewshot_core.train.losses import structure_loss

    maps = torch.full((1, 16, 16), CLASS_INDEX["skin"], dtype=torch.long)
    maps[0, :4] = 0  # background
    maps[0, 6, 2:6] = CLASS_INDEX["brow_l"]
    maps[0, 15, 15] = IGNORE_INDEX
    right = F.one_hot(maps.clamp(max=NUM_CLASSES - 1), NUM_CLASSES).permute(0, 3, 1, 2).float() * 16.0
    brow_wrong, skin_wrong = right.clone(), right.clone()
    brow_wrong[0, :, 6, 2:6] = 0.0  # the brow's 4 pixels predicted as skin
    brow_wrong[0, CLASS_INDEX["skin"], 6, 2:6] = 16.0
    skin_wrong[0, :, 10, 2:6] = 0.0  # 4 skin pixels predicted as background
    skin_wrong[0, 0, 10, 2:6] = 16.0

    plain = F.cross_entropy(brow_wrong, maps, ignore_index=IGNORE_INDEX)
    assert torch.allclose(structure_loss(brow_wrong, maps, 0.0), plain)
    assert torch.allclose(structure_loss(brow_wrong, maps, 0.0), structure_loss(skin_wrong, maps, 0.0), rtol=1e-4)
    assert structure_loss(brow_wrong, maps, 0.5) > 2 * structure_loss(skin_wrong, maps, 0.5)
    assert structure_loss(right, maps, 0.5) < 1e-3


def test_pack_round_trip_keeps_only_training_rows(labelled, tmp_path):
    from fewshot_core.parsing.train import load_labelled
    from fewshot_core.train.pack import pack, unpack

    data = labelled
    summary = pack(data, tmp_path / "pack.npz", max_mib=1.0, quality=90)
    assert 0 < summary["rows"] <= summary["of"] and summary["mib"] <= 1.0
    unpack(tmp_path / "pack.npz", tmp_path / "unpacked")
    with np.load(tmp_path / "unpacked" / "packed_0000.npz") as shard:
        crops = shard["crops"]
        assert crops.shape[1:] == (64, 64, 3) and not shard["heldout"].any()
        heldout_ids = set()
        for original in data.glob("*.npz"):
            with np.load(original) as o:
                heldout_ids |= set(o["identities"][o["heldout"]].tolist())
        assert not heldout_ids & set(shard["identities"].tolist())
    # The parser trainer reads the unpacked folder as it is (iris centres travel with the maps).
    faces = load_labelled(tmp_path / "unpacked" / "labels", tmp_path / "unpacked")
    assert faces.iris.shape == (len(faces), 2, 2) and faces.maps.shape[1:] == (64, 64)
    assert 0 < len(faces) <= len(crops)


def test_int8_facenet_carry_matches_float32(model_dir, tmp_path):
    from fewshot_core.train.carry import check, quantize_file, restore
    from fewshot_core.models import require_part

    summary = quantize_file(require_part("facenet"), tmp_path / "facenet_int8.npz")
    full_mib = require_part("facenet").stat().st_size / 2**20
    assert summary["mib"] < full_mib / 3.5
    assert check(tmp_path / "facenet_int8.npz")["min_cosine"] > 0.999
    restored = restore(tmp_path / "facenet_int8.npz", tmp_path / "models")
    assert restored.name == require_part("facenet").name and restored.is_file()


def test_fresh_run_starts_from_an_exported_generator(prepared, tmp_path):
    from fewshot_core.errors import WeightsMismatchError

    data, _ = prepared
    cfg = TrainConfig.load("cpu_smoke", {"steps": 1})
    first = Trainer(cfg, data, tmp_path / "first")
    first.train()
    export = first.export(tmp_path / "first.safetensors")

    second = Trainer(cfg, data, tmp_path / "second")
    second.init_generator_from(export)
    exported = load_generator(export, device="cpu", dtype=torch.float32).state_dict()
    assert all(torch.equal(exported[k], v) for k, v in second.generator.state_dict().items())
    second.train()
    extra = load_generator(second.export(tmp_path / "second.safetensors")).config.extra
    assert extra["init_from"] == str(export) and extra["init_run"]["run"] == cfg.name  # the lineage travels
    assert extra["init_sha256"] == hashlib.sha256(export.read_bytes()).hexdigest()
    resumed = Trainer(TrainConfig.load("cpu_smoke", {"steps": 2}), data, tmp_path / "second")  # from its checkpoint
    resumed.train()
    assert load_generator(resumed.export(tmp_path / "resumed.safetensors")).config.extra["init_sha256"] == \
        extra["init_sha256"]

    with pytest.raises(ValueError, match="already holds a checkpoint"):
        Trainer(cfg, data, tmp_path / "first").init_generator_from(export)
    wider = TrainConfig.load("cpu_smoke", {"generator": {**cfg.generator, "base_channels": 8}})
    with pytest.raises(WeightsMismatchError, match="base_channels"):
        Trainer(wider, data, tmp_path / "third").init_generator_from(export)


def test_dataset_weights_shift_the_draws_and_reject_unknown_datasets(prepared, tmp_path):
    data, _ = prepared
    cfg = TrainConfig.load("cpu_smoke", {"dataset_weights": {"celeba": 4.0}})
    trainer = Trainer(cfg, data, tmp_path / "run")
    datasets = trainer.data.dataset
    n_celeba = int((datasets == "celeba").sum())
    assert 0 < n_celeba < len(datasets)
    expected = 4 * n_celeba / (4 * n_celeba + len(datasets) - n_celeba)
    drawn = datasets[trainer.draw(20_000)]
    assert abs((drawn == "celeba").mean() - expected) < 0.02
    uniform = Trainer(TrainConfig.load("cpu_smoke"), data, tmp_path / "uniform")
    assert uniform.sample_p is None
    with pytest.raises(ValueError, match="utkface"):
        Trainer(TrainConfig.load("cpu_smoke", {"dataset_weights": {"utkface": 2.0}}), data, tmp_path / "bad")


def test_weight_average_trains_resumes_exports_and_can_start_part_way(prepared, tmp_path):
    """g_ema keeps an average beside the raw weights; the checkpoint carries it; exports and samples use it."""
    from fewshot_core.train.checkpoint import saved_module_names

    data, _ = prepared
    plain = Trainer(TrainConfig.load("cpu_smoke", {"steps": 1}), data, tmp_path / "run")
    plain.train()
    assert saved_module_names(tmp_path / "run" / "checkpoint") == {"generator", "discriminator"}
    raw_at_1 = {k: v.clone() for k, v in plain.generator.state_dict().items()}

    averaged = Trainer(TrainConfig.load("cpu_smoke", {"steps": 3, "g_ema": 0.5}), data, tmp_path / "run")
    assert averaged.step == 1, "resumes the plain run"
    assert all(torch.equal(raw_at_1[k], v) for k, v in averaged.generator_ema.state_dict().items()), \
        "an average switched on part-way starts at the resumed weights"
    before = {k: v.clone() for k, v in averaged.generator_ema.state_dict().items()}
    averaged.train()
    assert "generator_ema" in saved_module_names(tmp_path / "run" / "checkpoint")
    ema, raw = averaged.generator_ema.state_dict(), averaged.generator.state_dict()
    moved = [k for k in ema if ema[k].is_floating_point() and not torch.equal(ema[k], before[k])]
    assert moved, "the average follows training"
    assert any(not torch.equal(ema[k], raw[k]) for k in moved), "but lags the raw weights"

    resumed = Trainer(TrainConfig.load("cpu_smoke", {"steps": 3, "g_ema": 0.5}), data, tmp_path / "run")
    assert all(torch.equal(ema[k], v) for k, v in resumed.generator_ema.state_dict().items())
    shipped = load_generator(resumed.export(tmp_path / "avg.safetensors"), device="cpu", dtype=torch.float32)
    assert shipped.config.extra["weights"] == "average (g_ema 0.5)"
    assert all(torch.equal(ema[k].half().float(), v) for k, v in shipped.state_dict().items())
    raw_export = load_generator(resumed.export(tmp_path / "raw.safetensors", average=False), device="cpu",
                                dtype=torch.float32)
    assert "weights" not in raw_export.config.extra
    assert all(torch.equal(raw[k].half().float(), v) for k, v in raw_export.state_dict().items())


def test_landmark_loss_uses_a_frozen_judge(labelled, tmp_path):
    """w_landmarks > 0 loads the judge named in the config, frozen, and logs a finite, positive loss."""
    from fewshot_core.parsing.mapper import default_parser_path
    from fewshot_core.train.landmark_judge import LandmarkJudge

    judge_path = LandmarkJudge.from_parser(default_parser_path()).save(tmp_path / "judge.safetensors")
    cfg = TrainConfig.load("cpu_smoke", {"structure": "parser", "steps": 2, "w_landmarks": 10.0,
                                         "landmark_judge": str(judge_path)})
    trainer = Trainer(cfg, labelled, tmp_path / "run")
    assert trainer.judge is not None and not any(p.requires_grad for p in trainer.judge.parameters())
    before = {k: v.clone() for k, v in trainer.judge.state_dict().items()}
    losses = trainer.train()
    assert np.isfinite(losses["landmarks"]) and losses["landmarks"] > 0
    assert all(torch.equal(before[k], v) for k, v in trainer.judge.state_dict().items())
    rows = list(csv.DictReader(open(tmp_path / "run" / "losses.csv")))
    assert float(rows[-1]["landmarks"]) > 0



def test_extra_landmark_judges_all_judge_every_step(labelled, tmp_path):
    """landmark_judges_extra: every judge sees the source and the output each step; a missing file is named."""
    from fewshot_core.errors import ModelFileMissingError
    from fewshot_core.parsing.mapper import default_parser_path
    from fewshot_core.train.landmark_judge import LandmarkJudge

    first = LandmarkJudge.from_parser(default_parser_path()).save(tmp_path / "a.safetensors")
    second = LandmarkJudge.from_parser(default_parser_path()).save(tmp_path / "b.safetensors")
    cfg = TrainConfig.load("cpu_smoke", {"structure": "parser", "steps": 1, "w_landmarks": 10.0,
                                         "landmark_judge": str(first), "landmark_judges_extra": [str(second)]})
    trainer = Trainer(cfg, labelled, tmp_path / "run")
    assert len(trainer.judges) == 2 and trainer.judge is trainer.judges[0]
    assert not any(p.requires_grad for judge in trainer.judges for p in judge.parameters())
    calls = [0, 0]
    for i, judge in enumerate(trainer.judges):
        judge.register_forward_hook(lambda module, args, out, i=i: calls.__setitem__(i, calls[i] + 1))
    losses = trainer.train()
    assert np.isfinite(losses["landmarks"]) and losses["landmarks"] > 0
    assert calls == [2, 2], "each judge places the source's points and the output's"
    missing = TrainConfig.load("cpu_smoke", {"w_landmarks": 1.0, "landmark_judge": str(first),
                                             "landmark_judges_extra": [str(tmp_path / "gone.safetensors")]})
    with pytest.raises(ModelFileMissingError, match="gone.safetensors"):
        Trainer(missing, labelled, tmp_path / "run_missing")


def test_a_bare_judge_name_lies_in_the_judges_cache_folder(tmp_path, monkeypatch):
    """Committed recipes name extra judges by file name only; paths stay paths."""
    from fewshot_core.train.landmark_judge import default_judge_path, judge_path

    monkeypatch.setenv("FEWSHOT_CACHE_DIR", str(tmp_path / "cache"))
    assert judge_path("landmarks68_128_seed1.safetensors") == tmp_path / "cache" / "judges" / \
        "landmarks68_128_seed1.safetensors" == default_judge_path().with_name("landmarks68_128_seed1.safetensors")
    assert judge_path(tmp_path / "j.safetensors") == tmp_path / "j.safetensors"
    assert judge_path("~/j.safetensors") == Path.home() / "j.safetensors"


def test_discriminator_warmup_freezes_the_generator_then_hands_over(prepared, tmp_path):
    """d_warmup_steps: the first steps move only the discriminator; later steps train both."""
    data, _ = prepared
    cfg = TrainConfig.load("cpu_smoke", {"steps": 2, "d_warmup_steps": 2})
    trainer = Trainer(cfg, data, tmp_path / "run")
    gen_before = {k: v.clone() for k, v in trainer.generator.state_dict().items()}
    disc_before = {k: v.clone() for k, v in trainer.discriminator.state_dict().items()}
    losses = trainer.train()
    assert set(losses) == {"adv_d"} and np.isfinite(losses["adv_d"])
    assert all(torch.equal(gen_before[k], v) for k, v in trainer.generator.state_dict().items())
    assert any(not torch.equal(disc_before[k], v) for k, v in trainer.discriminator.state_dict().items())

    resumed = Trainer(TrainConfig.load("cpu_smoke", {"steps": 3, "d_warmup_steps": 2}), data, tmp_path / "run")
    assert resumed.step == 2
    losses = resumed.train()
    assert "l1" in losses and "adv_g" in losses
    assert any(not torch.equal(gen_before[k], v) for k, v in resumed.generator.state_dict().items())


def test_frozen_generator_levels_keep_their_weights_through_training_and_resume(prepared, tmp_path):
    """freeze_generator: the named modules leave training (and the export) unchanged; the rest still learn."""
    data, _ = prepared
    frozen = ["up.3", "head"]  # the smoke generator has n_down 3: up.3 is its full-resolution level
    cfg = TrainConfig.load("cpu_smoke", {"steps": 2, "freeze_generator": frozen, "g_ema": 0.9})
    trainer = Trainer(cfg, data, tmp_path / "run")
    before = {k: v.clone() for k, v in trainer.generator.state_dict().items()}
    trainer.train()
    resumed = Trainer(TrainConfig.load("cpu_smoke", {**cfg.to_dict(), "steps": 3}), data, tmp_path / "run")
    assert resumed.step == 2
    resumed.train()
    exported = load_generator(resumed.export(tmp_path / "frozen.safetensors"), device="cpu",
                              dtype=torch.float32).state_dict()
    for name, value in resumed.generator.state_dict().items():
        is_frozen = any(name.startswith(prefix + ".") for prefix in frozen)
        assert torch.equal(before[name], value) == is_frozen, name
        if is_frozen:  # the fp16 export of the weight average holds the starting values too
            assert torch.equal(exported[name], before[name].half().float()), name

    with pytest.raises(ValueError, match="resume with the same list"):
        Trainer(TrainConfig.load("cpu_smoke", {"steps": 4}), data, tmp_path / "run")
    with pytest.raises(ValueError, match="'up.9' names no generator parameter"):
        Trainer(TrainConfig.load("cpu_smoke", {"freeze_generator": ["up.9"]}), data, tmp_path / "typo")


def test_every_committed_config_loads_and_freezes_only_modules_its_generator_has():
    """A config's typo should fail here, not minutes into a run on a GPU slot."""
    from fewshot_core.generator import FewShotGenerator, GeneratorConfig
    from fewshot_core.train.config import CONFIG_DIR
    from fewshot_core.train.trainer import trainable_parameters

    names = sorted(path.stem for path in CONFIG_DIR.glob("*.json"))
    assert "cpu_finetune7" in names
    for name in names:
        cfg = TrainConfig.load(name)
        generator = FewShotGenerator(GeneratorConfig(resolution=cfg.resolution, **cfg.generator))
        trained = trainable_parameters(generator, cfg.freeze_generator)
        assert (len(trained) < len(list(generator.parameters()))) == bool(cfg.freeze_generator), name


def test_landmark_lowpass_blurs_what_the_judge_sees(labelled, tmp_path, monkeypatch):
    """landmark_lowpass feeds the judge 3x3-blurred crops (source and output alike), and still trains."""
    from fewshot_core.parsing.mapper import default_parser_path
    from fewshot_core.train import trainer as trainer_module
    from fewshot_core.train.landmark_judge import LandmarkJudge, blur3

    judge_path = LandmarkJudge.from_parser(default_parser_path()).save(tmp_path / "judge.safetensors")
    blurred: list[torch.Tensor] = []
    monkeypatch.setattr(trainer_module, "blur3", lambda t: blurred.append(t) or blur3(t))
    seen: list[torch.Tensor] = []
    for lowpass in (False, True):
        cfg = TrainConfig.load("cpu_smoke", {"structure": "parser", "steps": 1, "w_landmarks": 10.0,
                                             "landmark_judge": str(judge_path), "landmark_lowpass": lowpass})
        trainer = Trainer(cfg, labelled, tmp_path / f"run_{lowpass}")
        trainer.judge.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
        losses = trainer.train()
        assert np.isfinite(losses["landmarks"]) and losses["landmarks"] > 0
        assert len(blurred) == (2 if lowpass else 0), "source and output both pass the low-pass, or neither"
    assert torch.allclose(seen[2], blur3(blurred[0])), "the judge sees the blurred source"
    checker = torch.zeros(1, 3, 8, 8)
    checker[..., ::2, ::2] = checker[..., 1::2, 1::2] = 1
    assert blur3(checker)[..., 2:-2, 2:-2].std() < 0.05 * checker.std(), "the low-pass removes pixel texture"
    smooth = torch.linspace(0, 1, 8).expand(1, 3, 8, 8)
    assert torch.allclose(blur3(smooth)[..., 1:-1, 1:-1], smooth[..., 1:-1, 1:-1], atol=1e-6), "and keeps ramps"


def test_paired_jitter_moves_both_batches_by_the_same_small_similarity():
    from fewshot_core.train.landmark_judge import paired_jitter

    a, b = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    a1, b1 = paired_jitter(a, b, torch.Generator().manual_seed(3))
    a2, a3 = paired_jitter(a, a, torch.Generator().manual_seed(3))
    b2, _ = paired_jitter(b, b, torch.Generator().manual_seed(3))
    assert torch.equal(a1, a2) and torch.equal(a2, a3) and torch.equal(b1, b2), "one transform per row, shared"
    assert not torch.allclose(a1, a), "it does move the images"
    blob = torch.zeros(4, 1, 32, 32)
    blob[..., 10:14, 18:22] = 1
    moved, _ = paired_jitter(blob, blob, torch.Generator().manual_seed(5))
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    mass = moved[:, 0].sum((1, 2))[:, None]
    centre = torch.stack([(moved[:, 0] * xs).sum((1, 2)), (moved[:, 0] * ys).sum((1, 2))], 1) / mass
    shift = (centre - torch.tensor([19.5, 11.5])).norm(dim=1)
    assert (shift < 0.1 * 32).all() and (shift > 0.05).any(), "a small similarity, not a scramble"


def test_face_only_adversarial_losses_ignore_patches_outside_the_face(prepared, tmp_path):
    from fewshot_core.train.losses import hinge_d_loss, hinge_g_loss

    weight = torch.zeros(2, 1, 16, 16)
    weight[..., 4:12, 4:12] = 1
    real, fake = [torch.randn(2, 1, 8, 8)], [torch.randn(2, 1, 8, 8)]
    outside = [fake[0].clone()]
    outside[0][..., :2, :] += 5  # rows 0-1 of the 8x8 grid lie outside the face
    inside = [fake[0].clone()]
    inside[0][..., 3:5, 3:5] += 5
    assert torch.isclose(hinge_d_loss(real, fake, weight), hinge_d_loss(real, outside, weight))
    assert torch.isclose(hinge_g_loss(fake, weight), hinge_g_loss(outside, weight))
    assert not torch.isclose(hinge_d_loss(real, fake, weight), hinge_d_loss(real, inside, weight))
    assert not torch.isclose(hinge_d_loss(real, fake), hinge_d_loss(real, outside)), "unweighted counts all"

    data, _ = prepared
    cfg = TrainConfig.load("cpu_smoke", {"steps": 1, "disc_face_only": True})
    losses = Trainer(cfg, data, tmp_path / "run").train()
    assert np.isfinite(losses["adv_d"]) and np.isfinite(losses["adv_g"])


def test_landmark_loss_names_the_missing_judge(labelled, tmp_path):
    from fewshot_core.errors import ModelFileMissingError

    cfg = TrainConfig.load("cpu_smoke", {"structure": "parser", "w_landmarks": 1.0,
                                         "landmark_judge": str(tmp_path / "nowhere.safetensors")})
    with pytest.raises(ModelFileMissingError, match="nowhere.safetensors"):
        Trainer(cfg, labelled, tmp_path / "run")


def test_dlib_labels_then_judge_training_write_a_loadable_judge(prepared, tmp_path, capsys):
    """judge_labels puts dlib's 68 points on every prepared crop; judge_train fits and writes a judge."""
    import json
    import shutil

    from fewshot_core.train import judge_labels, judge_train
    from fewshot_core.train.landmark_judge import load_judge

    data, _ = prepared
    work = tmp_path / "prepared"
    work.mkdir()
    for shard in data.glob("*.npz"):
        shutil.copy(shard, work / shard.name)
    assert judge_labels.main(["--prepared", str(work)]) == 0
    for shard in work.glob("*.npz"):
        with np.load(shard) as crops, np.load(work / "dlib68" / shard.name) as labels:
            assert labels["points"].shape == (len(crops["crops"]), 68, 2)
            pts = labels["points"]
            assert (pts[:, 36, 0] < pts[:, 45, 0]).all(), "outer eye corners in image order"
            assert (pts[:, 30, 1] < pts[:, 57, 1]).all(), "nose tip above the lower lip"
    out = tmp_path / "judge.safetensors"
    capsys.readouterr()
    assert judge_train.main(["--prepared", str(work), "--out", str(out), "--steps", "2", "--batch", "4",
                             "--threads", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 2 and summary["out"] == str(out)
    with torch.no_grad():
        assert load_judge(out)(torch.rand(1, 3, 64, 64)).shape == (1, 68, 2)
