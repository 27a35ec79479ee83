"""`python -m fewshot_core.eval paired A.csv B.csv`: is B's difference from A on the same pairs more than noise?

    python -m fewshot_core.eval paired A.csv B.csv [--method-a NAME] [--method-b NAME] [--k 5]
        [--also A2.csv[,B2.csv] ...]

Why: a candidate that loses 4 pairs of 120 (or 10 of 500) against the shipped weights has been
rejected several times; whether that is a real loss or the pairs' noise is a paired question, since
both runs swap the very same (source, target) pairs. `eval swap --per-pair FILE` writes one row per
pair and method; this compares two such files (or two methods of one file):

* top-1: the exact two-sided McNemar test on the discordant pairs (A right and B wrong, or the reverse);
* expression, pose and gaze: the mean paired difference B - A with a 95 % bootstrap interval over pairs;
* realism (FD*, a set-level figure): FD*(B) - FD*(A) over the pairs both rendered, with a 95 % bootstrap
  interval that resamples pairs (the same ones for A and B) against the run's fixed real photos. It needs
  the `.features.npz` sidecar that `eval swap --per-pair` writes beside each CSV.

`--also` pools further draws (runs with another `--seed`), each compared the same way: one pair-level test
over every draw's pairs, so two draws of 500 pairs give one interval over 1,000 rather than two to squint at.
Pairs of different draws stay apart even when their numbers match. The last line is JSON.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import FewShotError
from .frechet import FrechetReference

FIELDS = ("pair", "source", "target", "method", "k", "detected", "rank", "top1", "expr", "pose_deg", "gaze")
NUMERIC = ("expr", "pose_deg", "gaze")


def features_path(path: Path) -> Path:
    """The per-pair file's sidecar of realism features: "run.csv" -> "run.features.npz"."""
    return Path(path).with_suffix(".features.npz")


def write_per_pair(path: Path, rows: Sequence[dict], real_features: np.ndarray | None = None) -> Path:
    """One CSV row per (pair, method, K) with the pair's identity-rank and attribute scores.

    With `real_features` (the FD* reference set), each row's realism "feature" goes to the sidecar
    `features_path(path)`: row i of its "features" is CSV row i (NaN where no face was found), so that
    `eval paired` can put an interval on the FD* difference too. A stale sidecar is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in FIELDS})
    sidecar = features_path(path)
    sidecar.unlink(missing_ok=True)
    dims = {np.asarray(r["feature"]).shape[-1] for r in rows if r.get("feature") is not None}
    if real_features is not None and rows and dims:
        if len(dims) > 1:
            raise FewShotError(f"realism features of several sizes {sorted(dims)}; one run uses one feature.")
        feats = np.full((len(rows), dims.pop()), np.nan, dtype=np.float32)
        for i, row in enumerate(rows):
            if row.get("feature") is not None:
                feats[i] = row["feature"]
        np.savez_compressed(sidecar, features=feats, real=np.asarray(real_features, dtype=np.float32))
    return path


def read_per_pair(path: Path) -> list[dict]:
    if not Path(path).is_file():
        raise FewShotError(f"per-pair file {path} not found. Fix: write it with "
                           "`python -m fewshot_core.eval swap ... --per-pair FILE`.")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or set(FIELDS) - set(rows[0]):
        raise FewShotError(f"{path} is not a per-pair file of `eval swap --per-pair` (columns {list(FIELDS)}).")
    return rows


def read_features(path: Path, n_rows: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(per-row features [n_rows, D] with NaN rows, real features [M, D]) from the sidecar, or None without one."""
    sidecar = features_path(path)
    if not sidecar.is_file():
        return None
    try:
        with np.load(sidecar) as z:
            feats, real = z["features"].astype(np.float64), z["real"].astype(np.float64)
    except (OSError, KeyError, ValueError) as exc:
        raise FewShotError(f"cannot read realism features {sidecar}: {exc}. Fix: delete it (FD* is then "
                           "skipped) or rewrite it with `eval swap --per-pair`.") from exc
    if feats.ndim != 2 or real.ndim != 2 or feats.shape != (n_rows, real.shape[1]):
        raise FewShotError(f"{sidecar} holds features {feats.shape} and real {real.shape}, but {path} has "
                           f"{n_rows} rows; it belongs to another run. Fix: delete it or rerun `eval swap --per-pair`.")
    return feats, real


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: the discordant pairs as Binomial(n, 1/2)."""
    n = a_only + b_only
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(0, min(a_only, b_only) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def bootstrap_interval(diff: np.ndarray, draws: int = 10000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of the mean of `diff`, resampling pairs."""
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (draws, len(diff)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _select(rows: list[dict], method: str | None, k: str, path: Path) -> dict[str, dict]:
    methods = sorted({r["method"] for r in rows if r["k"] == k})
    if method is None:
        ours = [m for m in methods if m.startswith("ours")]
        if len(ours) != 1:
            raise FewShotError(f"{path} holds methods {methods} at K={k}; name one with --method-a/--method-b.")
        method = ours[0]
    picked = {r["pair"]: r for r in rows if r["method"] == method and r["k"] == k}
    if not picked:
        raise FewShotError(f"{path} has no rows for method {method!r} at K={k}; it holds {methods}.")
    return picked


def _pair_order(key: str) -> tuple[int, ...]:
    """Pair keys sort by draw, then pair number: "7" (the first draw) or "1:7" (`--also`'s first draw)."""
    return tuple(int(part) for part in key.split(":"))


def compare(a: dict[str, dict], b: dict[str, dict]) -> dict:
    """Paired figures of B against A over the pairs both files hold (same source and target)."""
    common = sorted(set(a) & set(b), key=_pair_order)
    mismatched = [p for p in common if (a[p]["source"], a[p]["target"]) != (b[p]["source"], b[p]["target"])]
    if mismatched:
        raise FewShotError(f"pair {mismatched[0]} swaps other faces in the two files; compare runs made with "
                           "the same --seed, --pairs and data.")
    if not common:
        raise FewShotError("the two files share no pairs; compare runs made with the same --seed and --pairs.")
    hit_a = np.array([a[p]["top1"] == "1" for p in common])
    hit_b = np.array([b[p]["top1"] == "1" for p in common])
    a_only, b_only = int((hit_a & ~hit_b).sum()), int((hit_b & ~hit_a).sum())
    out: dict = {"pairs": len(common), "top1_a": round(float(hit_a.mean()), 4), "top1_b": round(float(hit_b.mean()), 4),
                 "a_only": a_only, "b_only": b_only, "mcnemar_p": round(mcnemar_exact(a_only, b_only), 4)}
    for key in NUMERIC:
        both = [p for p in common if a[p][key] != "" and b[p][key] != ""]
        if len(both) < 2:
            continue
        va = np.array([float(a[p][key]) for p in both])
        vb = np.array([float(b[p][key]) for p in both])
        lo, hi = bootstrap_interval(vb - va)
        out[key] = {"n": len(both), "a": round(float(va.mean()), 5), "b": round(float(vb.mean()), 5),
                    "diff": round(float((vb - va).mean()), 5), "ci95": [round(lo, 5), round(hi, 5)]}
    return out


def _draw_files(spec: str) -> tuple[Path, Path]:
    """`--also` "A2.csv" (both methods in one file) or "A2.csv,B2.csv"."""
    names = spec.split(",")
    if len(names) > 2 or not all(name.strip() for name in names):
        raise FewShotError(f"--also takes A.csv or A.csv,B.csv, got {spec!r}.")
    return Path(names[0]), Path(names[-1])


def pooled_draws(draws: Sequence[tuple[Path, Path]], method_a: str | None, method_b: str | None,
                 k: str) -> tuple[dict[str, dict], dict[str, dict], list[np.ndarray] | None]:
    """A's and B's rows of every draw [(A file, B file), ...], keyed so that pairs of different draws stay apart:
    the first draw keeps its plain pair numbers, draw i > 0 prefixes them with "i:".

    Where every file has its realism sidecar, each row also carries its "feature" (None where no face was
    found) and the third value is each draw's FD* reference set; otherwise that value is None."""
    resolved = [a_file.resolve() for a_file, _ in draws]
    repeated = next((draws[i][0] for i, path in enumerate(resolved) if resolved.count(path) > 1), None)
    if repeated is not None:
        raise FewShotError(f"{repeated} is given as two draws, which would count its pairs twice; "
                           "pass each draw's file once.")
    a: dict[str, dict] = {}
    b: dict[str, dict] = {}
    reals: list[np.ndarray] | None = []
    for index, (a_file, b_file) in enumerate(draws):
        prefix = f"{index}:" if index else ""
        a_rows, a_real = _with_features(a_file)
        b_rows, b_real = (a_rows, a_real) if b_file == a_file else _with_features(b_file)
        a.update({prefix + pair: row for pair, row in _select(a_rows, method_a, k, a_file).items()})
        b.update({prefix + pair: row for pair, row in _select(b_rows, method_b, k, b_file).items()})
        if reals is None or a_real is None or b_real is None:
            reals = None
            continue
        if a_real.shape != b_real.shape or not np.allclose(a_real, b_real, atol=1e-5):
            raise FewShotError(f"{a_file} and {b_file} judge realism against different real photos (or "
                               "features); compare runs made with the same --seed, data and --realism.")
        reals.append(a_real)
    return a, b, reals


def _with_features(path: Path) -> tuple[list[dict], np.ndarray | None]:
    """The file's rows, each with its realism "feature" when the sidecar exists, and the real set (or None)."""
    rows = read_per_pair(path)
    loaded = read_features(path, len(rows))
    if loaded is None:
        return rows, None
    feats, real = loaded
    for row, feat in zip(rows, feats):
        row["feature"] = None if np.isnan(feat).any() else feat
    return rows, real


def _draw_of(key: str) -> int:
    return int(key.split(":")[0]) if ":" in key else 0


def realism_difference(a: dict[str, dict], b: dict[str, dict], reals: Sequence[np.ndarray],
                       draws: int = 1000, seed: int = 0) -> dict | None:
    """FD*(B) - FD*(A) with a 95 % bootstrap interval: the pairs of each draw are resampled (the same
    pairs for A and B) and FD* is taken against that draw's fixed real set; over several draws the
    figure is the mean of the per-draw differences. Only pairs where both outputs have a face count."""
    rng = np.random.default_rng(seed)
    per_draw, boot, a_fd, b_fd, n = [], np.zeros(draws), [], [], 0
    rendered = [p for p in sorted(set(a) & set(b), key=_pair_order)
                if a[p].get("feature") is not None and b[p].get("feature") is not None]
    for d, real in enumerate(reals):
        both = [p for p in rendered if _draw_of(p) == d]
        if len(both) < 2:
            return None
        xa = np.stack([a[p]["feature"] for p in both])
        xb = np.stack([b[p]["feature"] for p in both])
        fd = FrechetReference(real)
        a_fd.append(fd(xa))
        b_fd.append(fd(xb))
        per_draw.append(b_fd[-1] - a_fd[-1])
        n += len(both)
        for i in range(draws):
            idx = rng.integers(0, len(both), len(both))
            boot[i] += fd(xb[idx]) - fd(xa[idx])
    boot /= len(reals)
    return {"n": n, "a": round(float(np.mean(a_fd)), 4), "b": round(float(np.mean(b_fd)), 4),
            "diff": round(float(np.mean(per_draw)), 4), "per_draw": [round(x, 4) for x in per_draw],
            "ci95": [round(float(np.percentile(boot, 2.5)), 4), round(float(np.percentile(boot, 97.5)), 4)]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fewshot_core.eval paired", description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="per-pair CSV of the reference (e.g. the shipped weights)")
    ap.add_argument("b", type=Path, nargs="?", help="per-pair CSV of the candidate (default: A again)")
    ap.add_argument("--method-a", help="method name in A (default: its only 'ours' method)")
    ap.add_argument("--method-b", help="method name in B (default: its only 'ours' method)")
    ap.add_argument("--k", default="5", help="shots (K) to compare")
    ap.add_argument("--also", action="append", default=[], metavar="A2.csv[,B2.csv]",
                    help="another draw's per-pair file (or its A and B files), pooled with the first; repeatable")
    ap.add_argument("--fd-draws", type=int, default=1000,
                    help="bootstrap draws for the FD* interval (needs the files' .features.npz sidecars)")
    args = ap.parse_args(argv)
    if args.fd_draws < 1:
        ap.error(f"--fd-draws must be 1 or more, got {args.fd_draws}")
    b_path = args.b or args.a
    try:
        draws = [(args.a, b_path)] + [_draw_files(spec) for spec in args.also]
        a, b, reals = pooled_draws(draws, args.method_a, args.method_b, args.k)
        result = compare(a, b)
        if reals is not None:
            fd = realism_difference(a, b, reals, args.fd_draws)
            if fd is not None:
                result["fd"] = fd
    except FewShotError as exc:
        print(f"eval paired: {exc}", file=sys.stderr)
        return 1
    if len(draws) > 1:
        print(f"pooled over {len(draws)} draws")
    print(f"top-1 on {result['pairs']} pairs: A {result['top1_a']:.1%}, B {result['top1_b']:.1%}; "
          f"A only {result['a_only']}, B only {result['b_only']}, exact McNemar p = {result['mcnemar_p']:.3f}")
    for key in NUMERIC:
        if key in result:
            r = result[key]
            print(f"{key}: A {r['a']:.5f}, B {r['b']:.5f}, B - A {r['diff']:+.5f} (95% CI {r['ci95'][0]:+.5f} to "
                  f"{r['ci95'][1]:+.5f})")
    if "fd" in result:
        r = result["fd"]
        print(f"FD*: A {r['a']:.4f}, B {r['b']:.4f}, B - A {r['diff']:+.4f} (95% CI {r['ci95'][0]:+.4f} to "
              f"{r['ci95'][1]:+.4f}) on {r['n']} pairs")
    else:
        print("FD*: no interval (the files have no .features.npz sidecar: rerun `eval swap --per-pair`)")
    print(json.dumps({"eval": "paired", "a": str(args.a), "b": str(b_path), "k": args.k, "also": args.also,
                      "draws": len(draws), **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
