"""Paired comparison of two per-pair files (`eval paired`): the exact McNemar test and paired differences."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fewshot_core.eval.frechet import frechet_distance
from fewshot_core.eval.paired import FIELDS, compare, features_path, main, mcnemar_exact, write_per_pair


def test_mcnemar_exact_matches_the_binomial_tail():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)            # all 6 discordant pairs one way
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(2, 8) == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert mcnemar_exact(8, 2) == mcnemar_exact(2, 8)               # two-sided


def _rows(method: str, hits: list[int], expr: list[float], target: str = "lfw/T") -> list[dict]:
    return [{"pair": i, "source": f"lfw/S{i}/S{i}_0001.jpg", "target": target, "method": method, "k": 5,
             "detected": 1, "rank": 1 if h else 7, "top1": h, "expr": e, "pose_deg": 2.0, "gaze": None}
            for i, (h, e) in enumerate(zip(hits, expr))]


def _by_pair(rows: list[dict]) -> dict[str, dict]:
    return {str(r["pair"]): {k: ("" if r[k] is None else str(r[k])) for k in FIELDS} for r in rows}


def test_compare_counts_discordant_pairs_and_the_paired_expression_difference():
    a = _by_pair(_rows("ours", [1, 1, 1, 0, 1, 0], [0.020, 0.030, 0.025, 0.022, 0.028, 0.024]))
    b = _by_pair(_rows("ours", [1, 0, 0, 0, 1, 1], [0.019, 0.029, 0.024, 0.021, 0.027, 0.023]))
    out = compare(a, b)
    assert (out["pairs"], out["a_only"], out["b_only"]) == (6, 2, 1)
    assert out["mcnemar_p"] == pytest.approx(1.0)
    assert out["expr"]["diff"] == pytest.approx(-0.001)
    assert out["expr"]["ci95"][0] == pytest.approx(-0.001) and out["expr"]["ci95"][1] == pytest.approx(-0.001)
    assert "gaze" not in out  # no values on either side


def test_the_command_compares_two_files_and_refuses_other_pairs(tmp_path, capsys):
    a, b, other = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "other.csv"
    write_per_pair(a, _rows("ours", [1] * 10, [0.02] * 10) + _rows("classical", [0] * 10, [0.02] * 10))
    write_per_pair(b, _rows("ours x lock0", [0] * 10, [0.03] * 10))
    write_per_pair(other, _rows("ours", [1] * 10, [0.02] * 10, target="lfw/Someone_Else"))
    assert main([str(a), str(b)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["a_only"], summary["b_only"]) == (10, 0) and summary["mcnemar_p"] < 0.01
    assert summary["expr"]["diff"] == pytest.approx(0.01)
    assert main([str(a), "--method-a", "classical", "--method-b", "ours"]) == 0  # two methods of one file
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["b_only"] == 10
    assert main([str(a), str(other)]) == 1
    assert "swaps other faces" in capsys.readouterr().err
    assert main([str(a), str(tmp_path / "missing.csv")]) == 1
    assert "--per-pair FILE" in capsys.readouterr().err
    assert main([str(a), str(b), "--method-a", "nope"]) == 1
    assert "no rows for method 'nope'" in capsys.readouterr().err


def test_also_pools_draws_whose_pair_numbers_overlap(tmp_path, capsys):
    first, second = tmp_path / "draw1.csv", tmp_path / "draw2.csv"
    write_per_pair(first, _rows("ours", [1, 1, 0, 1], [0.020] * 4) + _rows("classical", [0, 1, 0, 0], [0.020] * 4))
    # the same pair numbers 0-3 in another draw, where ours is 0.004 worse on expression and never alone right
    write_per_pair(second, _rows("ours", [0, 0, 1, 0, 1, 1], [0.024] * 6, target="lfw/U")
                   + _rows("classical", [0, 0, 1, 0, 1, 1], [0.020] * 6, target="lfw/U"))
    assert main([str(first), "--method-a", "classical", "--method-b", "ours", "--also", str(second)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["draws"], summary["pairs"]) == (2, 10)              # 4 + 6: no pair of draw 2 overwrote draw 1's
    assert (summary["a_only"], summary["b_only"]) == (0, 2)
    assert summary["expr"]["diff"] == pytest.approx(6 * 0.004 / 10)
    # one draw alone: its own figures
    assert main([str(second), "--method-a", "classical", "--method-b", "ours"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["expr"]["diff"] == pytest.approx(0.004)
    # A and B in separate files per draw: "A2,B2"
    b_first, b_second = tmp_path / "b1.csv", tmp_path / "b2.csv"
    write_per_pair(b_first, _rows("ours", [1, 1, 0, 1], [0.021] * 4))
    write_per_pair(b_second, _rows("ours", [0, 0, 1, 0, 1, 1], [0.023] * 6, target="lfw/U"))
    assert main([str(first), str(b_first), "--method-a", "ours", "--also", f"{second},{b_second}"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["pairs"] == 10 and summary["expr"]["diff"] == pytest.approx((4 * 0.001 - 6 * 0.001) / 10)
    assert main([str(first), "--also", "a.csv,b.csv,c.csv"]) == 1
    assert "--also takes A.csv or A.csv,B.csv" in capsys.readouterr().err
    assert main([str(first), "--method-a", "classical", "--also", str(first)]) == 1   # the same draw twice
    assert "would count its pairs twice" in capsys.readouterr().err


def _with_features(rows: list[dict], feats: np.ndarray) -> list[dict]:
    return [{**row, "feature": f} for row, f in zip(rows, feats)]


def test_the_fd_difference_gets_a_bootstrap_interval_from_the_feature_sidecars(tmp_path, capsys):
    rng = np.random.default_rng(1)
    real = rng.normal(size=(300, 8))
    ours = rng.normal(size=(60, 8))
    shifted = ours + np.eye(8)[0] * 1.5           # the candidate's outputs 1.5 off along one axis: FD* about +2.25
    a, b, same = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "same.csv"
    write_per_pair(a, _with_features(_rows("ours", [1] * 60, [0.02] * 60), ours), real)
    write_per_pair(b, _with_features(_rows("ours", [1] * 60, [0.02] * 60), shifted), real)
    write_per_pair(same, _with_features(_rows("ours", [1] * 60, [0.02] * 60), ours), real)
    assert features_path(a).is_file() and features_path(a).name == "a.features.npz"
    assert main([str(a), str(b), "--fd-draws", "200"]) == 0
    fd = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["fd"]
    assert fd["a"] == pytest.approx(frechet_distance(ours, real), abs=1e-3)   # the table's own FD*
    assert fd["diff"] == pytest.approx(frechet_distance(shifted, real) - frechet_distance(ours, real), abs=1e-3)
    assert 1.5 < fd["ci95"][0] < fd["diff"] < fd["ci95"][1] and fd["n"] == 60
    with pytest.raises(SystemExit):
        main([str(a), str(b), "--fd-draws", "0"])
    assert "--fd-draws must be 1 or more" in capsys.readouterr().err
    assert main([str(a), str(same), "--fd-draws", "50"]) == 0                 # identical outputs: exactly level
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["fd"]["ci95"] == [0.0, 0.0]
    # pooled with a level second draw: the mean of the two draws' differences
    assert main([str(a), str(b), "--fd-draws", "50", "--also", str(same)]) == 0
    pooled = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["fd"]
    assert pooled["diff"] == pytest.approx(fd["diff"] / 2, abs=1e-3) and pooled["n"] == 120


def test_fd_needs_matching_sidecars_and_says_so(tmp_path, capsys):
    rng = np.random.default_rng(2)
    real, feats = rng.normal(size=(50, 4)), rng.normal(size=(10, 4))
    a, b, plain = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "plain.csv"
    write_per_pair(a, _with_features(_rows("ours", [1] * 10, [0.02] * 10), feats), real)
    write_per_pair(b, _with_features(_rows("ours", [1] * 10, [0.02] * 10), feats), real + 1.0)
    write_per_pair(plain, _rows("ours", [1] * 10, [0.02] * 10))
    assert main([str(a), str(plain)]) == 0                                   # no sidecar on one side: no FD* figure
    out = capsys.readouterr().out
    assert "FD*: no interval" in out and "fd" not in json.loads(out.strip().splitlines()[-1])
    assert main([str(a), str(b)]) == 1
    assert "different real photos" in capsys.readouterr().err
    write_per_pair(b, _rows("ours", [1] * 10, [0.02] * 10))                  # rewritten without features
    assert not features_path(b).exists()                                     # the stale sidecar is gone
    np.savez(features_path(b), features=feats[:3], real=real)                # a sidecar of another run
    assert main([str(a), str(b)]) == 1
    assert "belongs to another run" in capsys.readouterr().err
