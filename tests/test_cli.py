"""The `fewshot-swap` command line: outputs on disk, identity files, frames with smoothing, clear errors."""
from __future__ import annotations

import json

from fewshot_core.cli import main
from fewshot_core.imageio import load_image
from tests.conftest import lfw_photo


def test_swap_writes_the_image_mask_and_identity(random_generator_file, model_dir, tmp_path, capsys, data_root):
    out, mask, ident = tmp_path / "out.png", tmp_path / "mask.png", tmp_path / "powell.safetensors"
    code = main(["--source", str(lfw_photo("George_W_Bush", 2)), "--targets", str(lfw_photo("Colin_Powell", 1)),
                 str(lfw_photo("Colin_Powell", 2)), "--out", str(out), "--mask-out", str(mask),
                 "--save-identity", str(ident), "--generator", str(random_generator_file), "--device", "cpu"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["outputs"] == [str(out)]
    source = load_image(lfw_photo("George_W_Bush", 2))
    swapped = load_image(out)
    assert swapped.shape == source.shape and (swapped - source).abs().mean() > 0.002
    assert mask.is_file() and ident.is_file()


def test_frames_with_a_saved_identity_and_smoothing_go_to_a_folder(random_generator_file, tmp_path, capsys,
                                                                  data_root):
    ident = tmp_path / "powell.safetensors"
    assert main(["--source", str(lfw_photo("George_W_Bush", 2)), "--targets", str(lfw_photo("Colin_Powell", 1)),
                 "--out", str(tmp_path / "first.png"), "--save-identity", str(ident),
                 "--generator", str(random_generator_file), "--device", "cpu"]) == 0
    frames = [str(lfw_photo("George_W_Bush", i)) for i in (2, 3)]
    folder = tmp_path / "frames_out"
    assert main(["--source", *frames, "--identity", str(ident), "--out", str(folder), "--temporal-smoothing", "0.5",
                 "--generator", str(random_generator_file), "--device", "cpu"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(summary["outputs"]) == sorted(str(folder / f"George_W_Bush_000{i}_swapped.png") for i in (2, 3))
    assert all((folder / f"George_W_Bush_000{i}_swapped.png").is_file() for i in (2, 3))


def test_errors_name_the_problem_and_exit_2(random_generator_file, tmp_path, capsys, data_root):
    missing = tmp_path / "nowhere" / "gen.safetensors"
    args = ["--source", str(lfw_photo("George_W_Bush", 2)), "--targets", str(lfw_photo("Colin_Powell", 1)),
            "--out", str(tmp_path / "o.png"), "--device", "cpu"]
    assert main(args + ["--generator", str(missing)]) == 2
    assert "nowhere/gen.safetensors" in capsys.readouterr().err
    assert main(args + ["--generator", str(random_generator_file), "--temporal-smoothing", "3"]) == 2
    assert "smoothing must be within 0..1" in capsys.readouterr().err
