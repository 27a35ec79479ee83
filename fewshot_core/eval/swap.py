"""`python -m fewshot_core.eval swap`: identity, attributes and realism of swaps on held-out people.

    python -m fewshot_core.eval swap [--quick] [--fairness] [--write-docs] [--generator PATH]

Protocol (issue 4; pairs and roles in `protocol.py`): held-out LFW and
celeba299 identities; per target K = 1, 3, 5 shots; sources are photos of
other held-out people. Every output is judged by dlib's ResNet and 68-point
landmarks (`evaluator.py`), never by the FaceNet the swapper is conditioned
on; the realism proxy FD* uses FaceNet-512 features (a second recogniser the
generator never trains with; `fetch --eval` converts it), else dlib's.
Baselines run on the same pairs: the source itself (no swap), the
classical warp-and-blend (`classical.py`) with the target's best shot, and a
real unused photo of the target (the identity ceiling). "Ours" is the swap
model with the shipped generator or `--generator PATH`; without one only the
baselines are reported, and a random-weight generator is never evaluated here.

The last stdout line is a one-line JSON summary.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import FewShotError
from ..skin_tone import SHIFT_CHANNELS
from ..structure_lock import LOCK_DETAIL
from . import protocol as P
from . import report
from . import split
from .analysis import Analyser, Gallery, ParserIrisLocator, Reference, realism_features
from .evaluator import DlibEvaluator, load_rgb
from .expression import LANDMARK_REGIONS
from .methods import ClassicalMethod, OursMethod, SwapMethod, best_shot
from .paired import write_per_pair
from .scoring import Score, score_output, summarise
from .split import default_data_root

DOCS_DIR = Path(__file__).resolve().parents[2] / "docs"
QUICK = {"n_pairs": 40, "n_targets": 8, "ks": (5,), "gallery": 2, "fairness_pairs": 8}
FULL = {"n_pairs": 500, "n_targets": None, "ks": (1, 3, 5), "gallery": 10, "fairness_pairs": 40}


# --- the run ------------------------------------------------------------------------

@dataclass
class Config:
    n_pairs: int
    n_targets: int | None
    ks: tuple[int, ...]
    gallery: int
    fairness_pairs: int
    seed: str = P.DEFAULT_SEED
    max_identities: int | None = None
    data_root: Path | None = None


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run_protocol(cfg: Config, analyser: Analyser, methods: Sequence[SwapMethod],
                 per_pair: list[dict] | None = None) -> tuple[list[dict], P.Protocol, Gallery]:
    """Swap every pair with every method and K; returns the table rows (and appends one row per pair,
    method and K to `per_pair` when given, for paired comparisons: `eval paired`)."""
    photos = P.heldout_photos(cfg.data_root, cfg.max_identities, cfg.seed)
    proto = P.build_protocol(photos, n_pairs=cfg.n_pairs, n_targets=cfg.n_targets, gallery_size=cfg.gallery,
                             shots=max(cfg.ks), seed=cfg.seed, usable=analyser.usable)
    gallery = Gallery({ident: Reference.of([analyser.photo(p).face.descriptor for p in ps])
                       for ident, ps in proto.gallery.items()})
    real = gallery_features(proto, analyser)
    _log(f"protocol: {len(proto.pairs)} pairs, {len(proto.targets)} targets, {len(gallery)} gallery identities, "
         f"{analyser.cached} real photos analysed")
    scores: dict[tuple[str, int | None], list[Score]] = {}
    start = time.perf_counter()
    for i, pair in enumerate(proto.pairs):
        src = analyser.photo(pair.source)
        src_ref = gallery[pair.source_identity]
        target = proto.targets[pair.target]
        # Named relative to the data folder, so per-pair files from two machines compare.
        source_name = str(pair.source.relative_to(cfg.data_root) if pair.source.is_relative_to(cfg.data_root)
                          else pair.source)
        scores.setdefault(("no swap", None), []).append(score_output(src, src, gallery, pair.target, src_ref))
        scores.setdefault(("upper bound", None), []).append(
            score_output(analyser.photo(target.probe), src, gallery, pair.target, src_ref))
        for method in methods:
            for k in cfg.ks:
                out, failed = method.output(pair.source, target.shots[:k])
                score = score_output(out, src, gallery, pair.target, src_ref, failed)
                scores.setdefault((method.name, k), []).append(score)
                if per_pair is not None:
                    per_pair.append({"pair": i, "source": source_name, "target": pair.target,
                                     "method": method.name, "k": k, "detected": int(score.detected),
                                     "rank": score.rank, "top1": int(score.rank == 1), "expr": score.expr,
                                     "pose_deg": score.pose_deg, "gaze": score.gaze, "feature": score.feature})
        if (i + 1) % 25 == 0 or i + 1 == len(proto.pairs):
            _log(f"  {i + 1}/{len(proto.pairs)} pairs, {time.perf_counter() - start:.0f} s")
    rows = [summarise(m, k, s, real) for (m, k), s in scores.items()]
    return rows, proto, gallery


def gallery_features(proto: P.Protocol, analyser: Analyser) -> np.ndarray:
    """Realism features of the gallery's real photos: the reference set of the FD* column."""
    return np.stack([f for f in (analyser.photo(p).feature for ps in proto.gallery.values() for p in ps)
                     if f is not None])


def run_fairness(cfg: Config, analyser: Analyser, methods: Sequence[SwapMethod]) -> list[dict]:
    """Per UTKFace race group: 1-shot swaps inside the group, retrieval among the group's targets."""
    groups = P.build_fairness(P.utkface_groups(cfg.data_root), cfg.fairness_pairs, cfg.seed, analyser.usable)
    rows: list[dict] = []
    for group, pairs in groups.items():
        if not pairs:
            continue
        gallery = Gallery({str(p.target): Reference.of([analyser.photo(p.target).face.descriptor]) for p in pairs})
        real = np.stack([analyser.photo(x).feature for p in pairs for x in (p.source, p.target)])
        scores: dict[str, list[Score]] = {}
        for p in pairs:
            src = analyser.photo(p.source)
            src_ref = Reference.of([src.face.descriptor])
            scores.setdefault("no swap", []).append(score_output(src, src, gallery, str(p.target), src_ref))
            for method in methods:
                out, failed = method.output(p.source, (p.target,))
                scores.setdefault(method.name, []).append(
                    score_output(out, src, gallery, str(p.target), src_ref, failed))
        for name, s in scores.items():
            rows.append({k: v for k, v in summarise(name, 1, s, real, group=group).items() if k != "top5"})
        _log(f"  fairness {group}: {len(pairs)} pairs")
    return rows


def grid_for(proto: P.Protocol, analyser: Analyser, method: SwapMethod, k: int,
             n_rows: int = 4, n_cols: int = 4):
    """Sources x targets cross product for the docs grid (faces cropped around dlib's box)."""
    cols = list(proto.targets)[:n_cols]
    sources: list[Path] = []
    for pair in proto.pairs:
        if pair.source_identity not in cols and pair.source not in sources:
            sources.append(pair.source)
        if len(sources) == n_rows:
            break
    crop = lambda rgb, a: report.face_crop(rgb, a.face.box if a.face else None)  # noqa: E731
    src_imgs = [crop(load_rgb(s), analyser.photo(s)) for s in sources]
    shots = [[crop(load_rgb(p), analyser.photo(p)) for p in proto.shots(t, k)] for t in cols]
    used = [best_shot([analyser.photo(p) for p in proto.shots(t, k)]) if isinstance(method, ClassicalMethod)
            else None for t in cols]
    cells = []
    for s in sources:
        row = []
        for t in cols:
            rgb = method.render(s, proto.shots(t, k))
            row.append(None if rgb is None else crop(rgb, analyser.photo(s)))
        cells.append(row)
    return src_imgs, shots, cells, used


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fewshot_core.eval swap", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="40 pairs, 8 targets, K=5, 2 gallery photos each")
    parser.add_argument("--pairs", type=int, help="number of (source, target) pairs (full 500)")
    parser.add_argument("--targets", type=int, help="number of target identities (full: every eligible one)")
    parser.add_argument("--shots", help="comma-separated K values (full 1,3,5; quick 5)")
    parser.add_argument("--gallery", type=int, help="gallery photos per identity (full 10, quick 2)")
    parser.add_argument("--seed", default=P.DEFAULT_SEED)
    parser.add_argument("--generator", type=Path, help="generator .safetensors to evaluate as 'ours' "
                        "(default: the shipped weights/fewshot_generator_128.safetensors if present)")
    parser.add_argument("--structure-lock", type=float, default=None,
                        help="the swap's structure_lock setting, 0-1 (default: the pipeline's default)")
    parser.add_argument("--lock-detail", choices=sorted(LOCK_DETAIL), default=None,
                        help="the swap's lock_detail setting (default: the pipeline's default)")
    parser.add_argument("--source-detail-px", type=int, default=None,
                        help="the swap's source_detail_px setting (default: the pipeline's default)")
    parser.add_argument("--photo-detail", type=float, default=None,
                        help="the swap's photo_detail setting, 0-1 (default: the pipeline's default)")
    parser.add_argument("--identity-refine-steps", type=int, default=None, metavar="STEPS",
                        help="the swap's identity_refine_steps setting (default: the pipeline's default)")
    parser.add_argument("--compare", nargs="*", default=[],
                        metavar="FILE[:LOCK[:DETAIL[:PX[:PHOTO[:REFINE[:SKIN[:CHANNELS]]]]]]]",
                        help="more generators or settings (structure_lock, lock_detail, source_detail_px, "
                             "photo_detail, identity_refine_steps) scored on the same pairs as extra rows "
                             "'ours STEM lockX DETAIL pxN photoY refineZ'; the real photos are analysed once for all")
    parser.add_argument("--per-pair", type=Path, default=None, metavar="CSV",
                        help="also write one row per pair, method and K (for `python -m fewshot_core.eval paired`), "
                             "and the outputs' realism features beside it (CSV.features.npz, for its FD* interval)")
    parser.add_argument("--baselines-only", action="store_true", help="do not evaluate a generator")
    parser.add_argument("--fairness", action="store_true", help="add the UTKFace per-race-group table")
    parser.add_argument("--fairness-pairs", type=int, help="1-shot pairs per group (full 40, quick 8)")
    parser.add_argument("--max-identities", type=int,
                        help="TESTS ONLY: restrict retrieval to this many held-out identities")
    parser.add_argument("--data", type=Path,
                        help="shared face data folder (default: FEWSHOT_DATA_DIR or ../shared/data)")
    parser.add_argument("--write-docs", action="store_true", help="write EVALUATION.md and eval_grid.png")
    parser.add_argument("--docs-dir", type=Path, default=DOCS_DIR)
    parser.add_argument("--no-gaze", action="store_true", help="skip the parser's iris centres (gaze n/a)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the generator and parser")
    parser.add_argument("--realism", choices=("auto", "facenet512", "dlib"), default="auto",
                        help="features of the FD* realism proxy: FaceNet-512 when fetched (auto, the default; "
                             "python -m fewshot_core.models fetch --eval), else dlib descriptors")
    args = parser.parse_args(argv)

    wall, cpu = time.perf_counter(), time.process_time()
    preset = QUICK if args.quick else FULL
    ks = tuple(sorted({int(x) for x in args.shots.split(",")})) if args.shots else preset["ks"]
    if not ks or min(ks) < 1 or max(ks) > P.MAX_SHOTS:
        parser.error(f"--shots must be values between 1 and {P.MAX_SHOTS}")
    cfg = Config(n_pairs=args.pairs or preset["n_pairs"],
                 n_targets=args.targets if args.targets is not None else preset["n_targets"],
                 ks=ks, gallery=args.gallery or preset["gallery"],
                 fairness_pairs=args.fairness_pairs or preset["fairness_pairs"], seed=args.seed,
                 max_identities=args.max_identities, data_root=args.data or default_data_root())

    try:
        import torch

        torch.set_num_threads(args.threads)
        from ..weights import default_generator_path

        iris = None if args.no_gaze else ParserIrisLocator.from_default()
        analyser = Analyser(DlibEvaluator.from_package(), realism_features(args.realism), iris=iris)
        generator = args.generator
        if generator is None and not args.baselines_only and default_generator_path().is_file():
            generator = default_generator_path()
        if args.baselines_only:
            generator = None
        if generator is not None and not Path(generator).is_file():
            raise FewShotError(f"Generator file {generator} does not exist; pass a trained generator "
                               "with --generator PATH or use --baselines-only.")
        methods: list[SwapMethod] = [ClassicalMethod(analyser)]
        methods += [compared_method(analyser, spec) for spec in args.compare]
        if generator is not None:  # last: the docs grid shows the last method
            methods.append(OursMethod(analyser, generator, structure_lock=args.structure_lock,
                                      lock_detail=args.lock_detail, source_detail_px=args.source_detail_px,
                                      photo_detail=args.photo_detail,
                                      identity_refine_steps=args.identity_refine_steps))
        per_pair: list[dict] | None = None
        if args.per_pair:  # fail now, not after the whole run, when the file cannot be written
            try:
                write_per_pair(args.per_pair, [])
            except OSError as exc:
                raise FewShotError(f"cannot write --per-pair {args.per_pair}: {exc}. Fix: pass a writable path.")
            per_pair = []
        rows, proto, gallery = run_protocol(cfg, analyser, methods, per_pair)
        if per_pair is not None:
            write_per_pair(args.per_pair, per_pair, gallery_features(proto, analyser))
        fair_rows = run_fairness(cfg, analyser, methods) if args.fairness else None
        t_eval, cpu_eval = time.perf_counter() - wall, time.process_time() - cpu
    except FewShotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1

    gen_label = f"ours = {Path(generator).name}" if generator is not None else \
        "no trained generator: baselines only (no 'ours' row)"
    mode = "quick" if args.quick else "full"
    title = (f"Swap evaluation ({mode}): {len(proto.pairs)} pairs x K={','.join(map(str, ks))}, "
             f"{len(proto.targets)} targets, retrieval among {len(gallery)} held-out identities; {gen_label}")
    if cfg.max_identities:
        title += f"  [TEST: identities limited to {cfg.max_identities}]"
    print(title)
    print(report.format_table(rows))
    print(f"FD*: {analyser.features.label}")
    region_rows = report.region_rows(rows)
    if region_rows:
        print(f"\n{report.REGION_HEADING}:")
        print(report.format_table(region_rows, report.REGION_COLUMNS))
    if fair_rows is not None:
        print("\nFairness (UTKFace held-out slice, 1 shot, retrieval among the group's target photos):")
        print(report.format_table(fair_rows, report.FAIR_COLUMNS))
    swaps = sum(m.count for m in methods)
    timing = {"wall_s": round(t_eval, 1), "cpu_s": round(cpu_eval, 1), "dlib_cpu_s": round(analyser.cpu_seconds, 1),
              "swap_cpu_s": round(sum(m.cpu_seconds for m in methods), 1)}
    print(f"\n{analyser.count} dlib analyses ({analyser.cpu_seconds / max(analyser.count, 1) * 1000:.0f} ms CPU "
          f"each), {swaps} distinct swaps rendered; {cpu_eval:.0f} s CPU, {t_eval:.0f} s wall")

    if args.write_docs:
        timing.update(_write_docs(args, argv, cfg, proto, analyser, methods, rows, fair_rows, gallery,
                                  gen_label, timing))

    summary = {"eval": "swap", "mode": mode, "pairs": len(proto.pairs), "targets": len(proto.targets),
               "identities": len(gallery), "ks": list(ks),
               "generator": Path(generator).name if generator is not None else None,
               "realism": analyser.features.label, "gaze_from": iris.name if iris is not None else None,
               "results": {_row_key(r): _compact(r) for r in rows}}
    if fair_rows is not None:
        summary["fairness"] = {f"{r['group']}/{_row_key(r)}": _compact(r) for r in fair_rows}
    summary.update(timing)
    summary["dlib_analyses"] = analyser.count
    print(json.dumps(summary, separators=(",", ":")))
    return 0


def compared_method(analyser: Analyser, spec: str) -> OursMethod:
    """'FILE[:LOCK[:DETAIL[:PX[:PHOTO[:REFINE[:SKIN[:CHANNELS]]]]]]]' -> an extra 'ours' row named after the file
    and its settings.

    LOCK is a structure_lock value, DETAIL a lock_detail name, PX a source_detail_px, PHOTO a photo_detail,
    REFINE an identity_refine_steps, SKIN a target_skin_tone, CHANNELS a skin_tone_channels name; an empty or
    missing part keeps the pipeline's default (for example 'gen.safetensors:1:fine', 'gen.safetensors:::24' or
    'gen.safetensors:::::10').
    """
    expected = "FILE[:LOCK[:DETAIL[:PX[:PHOTO[:REFINE[:SKIN[:CHANNELS]]]]]]]"
    path, *parts = spec.split(":")
    if len(parts) > 7:
        raise FewShotError(f"--compare {spec!r}: expected {expected}, got {len(parts) + 1} parts.")
    lock, detail, px, photo, refine, skin, channels = (parts + [""] * 7)[:7]
    try:
        structure_lock = float(lock) if lock else None
        source_px = int(px) if px else None
        photo_detail = float(photo) if photo else None
        refine_steps = int(refine) if refine else None
        skin_tone = float(skin) if skin else None
    except ValueError:
        raise FewShotError(f"--compare {spec!r}: LOCK, PHOTO and SKIN must be numbers like 0 or 1, PX and REFINE "
                           "whole numbers like 24 or 10.")
    if detail and detail not in LOCK_DETAIL:
        raise FewShotError(f"--compare {spec!r}: DETAIL must be one of {sorted(LOCK_DETAIL)}, got {detail!r}.")
    if channels and channels not in SHIFT_CHANNELS:
        raise FewShotError(f"--compare {spec!r}: CHANNELS must be one of {sorted(SHIFT_CHANNELS)}, got {channels!r}.")
    if not Path(path).is_file():
        raise FewShotError(f"--compare {spec!r}: generator file {path} does not exist.")
    name = f"ours {Path(path).stem}" + (f" lock{structure_lock:g}" if structure_lock is not None else "") + \
        (f" {detail}" if detail else "") + (f" px{source_px}" if source_px is not None else "") + \
        (f" photo{photo_detail:g}" if photo_detail is not None else "") + \
        (f" refine{refine_steps}" if refine_steps is not None else "") + \
        (f" skin{skin_tone:g}" if skin_tone is not None else "") + (f" {channels}" if channels else "")
    return OursMethod(analyser, Path(path), structure_lock=structure_lock, name=name, lock_detail=detail or None,
                      source_detail_px=source_px, photo_detail=photo_detail, identity_refine_steps=refine_steps,
                      target_skin_tone=skin_tone, skin_tone_channels=channels or None)


def _row_key(row: dict) -> str:
    name = row["method"].replace(" ", "_")
    return f"{name}_k{row['k']}" if row["k"] is not None and "group" not in row else name


def _compact(row: dict) -> dict:
    keep = ("n", "detected", "top1", "top5", "cos_tgt", "cos_src", "dist_tgt", "dist_src", "pose_deg", "expr",
            *(f"expr_{region}" for region in LANDMARK_REGIONS), "gaze", "fd", "failed")
    return {k: (round(row[k], 4) if isinstance(row[k], float) else row[k]) for k in keep if k in row}


PROTOCOL_TEXT = (
    "Held-out identities only (the committed split, `fewshot_core/data/heldout_identities.txt`): LFW people "
    "with at least 6 photos and celeba299 people.",
    "Each identity's photos are ranked by sha256(seed, identity, file): the first min(8, n-1) are its reserve "
    "(shots, probe, source photos), the rest its gallery pool, so shots never enter the gallery.",
    "Targets: identities with 5 usable reserve photos for shots and a 6th, the probe (a real unused photo, the "
    "upper bound). K = 1, 3, 5 use the first 1, 3, 5 shots. Sources: photos of other held-out people.",
    "Judge: dlib's HOG detector, 68 landmarks and ResNet descriptor (independent of the FaceNet we condition on). "
    "A photo is usable when dlib finds a face in it.",
    "Baselines on the same pairs: no swap (the source itself), classical (warp + colour transfer + Poisson blend of "
    "the shot whose descriptor is nearest the mean of the K shots), upper bound (the probe photo).",
)


def _write_docs(args, argv, cfg: Config, proto: P.Protocol, analyser: Analyser, methods: Sequence[SwapMethod],
                rows, fair_rows, gallery: Gallery, gen_label: str, timing: dict) -> dict:
    start = time.perf_counter()
    docs = Path(args.docs_dir)
    grid_method = methods[-1]  # ours when present, else classical
    k = max(cfg.ks)
    srcs, shots, cells, used = grid_for(proto, analyser, grid_method, k)
    if isinstance(grid_method, OursMethod):
        title = f"ours ({grid_method.generator_path.name}), K={k}"
    else:
        title = f"classical baseline (no trained generator), K={k}; red: the shot it used"
    size = report.save_png_under(report.grid_image(srcs, shots, cells, title, highlight=used),
                                 docs / "eval_grid.png")
    argv_text = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    command = f"python -m fewshot_core.eval swap {argv_text}".strip()
    if argv is None and sys.argv[0].endswith("swap.py"):
        command = f"python -m fewshot_core.eval.swap {argv_text}"
    status = (f"**Status:** {gen_label}. {len(proto.pairs)} pairs, {len(proto.targets)} target identities, "
              f"retrieval among {len(gallery)} held-out identities (gallery: up to {cfg.gallery} photos each).")
    if cfg.max_identities:
        status += f" TEST RUN: identities limited to {cfg.max_identities}."
    fair_notes = (
        "UTKFace has no identity labels, so there is no upper bound and no gallery of people: top-1 says whether "
        "the output's nearest photo among the group's target photos is the one used as the shot. That reference "
        "is the shot itself, which favours copying its texture (the classical baseline) over transferring identity.",
        "cos>tgt / cos>src compare with the single target / source photo, so 'no swap' has cos>src = 1 by "
        "construction.",
        f"Targets and sources are disjoint halves of the group's {split.UTK_PER_GROUP} held-out photos "
        f"(ranked by hash); {cfg.fairness_pairs} pairs per group.",
        "FD* is against the group's own source and target photos, so 'no swap' is partly compared with itself.",
    )
    timing_lines = [f"{timing['cpu_s']:.0f} s CPU ({timing['wall_s']:.0f} s wall on 2 CPU cores shared with other "
                    f"jobs; dlib runs single-threaded) for the evaluation.",
                    f"{analyser.count} dlib analyses, {analyser.cpu_seconds / max(analyser.count, 1) * 1000:.0f} ms "
                    f"CPU each; each real photo is analysed once per run (cached in memory).",
                    f"{sum(m.count for m in methods)} distinct swaps rendered ({timing['swap_cpu_s']:.0f} s CPU); "
                    "the classical output depends only on the shot it picks, so K values share outputs."]
    page = report.markdown_report(
        command=command, date=_dt.date.today().isoformat(), status=status, protocol=PROTOCOL_TEXT,
        rows=rows, fair_rows=fair_rows, fair_notes=fair_notes, timing=timing_lines, grid="eval_grid.png",
        gaze_from=analyser.iris.name if analyser.iris is not None else None, realism=analyser.features.label)
    path = docs / "EVALUATION.md"
    path.write_text(report.keep_extra_sections(page, path.read_text() if path.is_file() else None))
    _log(f"wrote {docs / 'EVALUATION.md'} and {docs / 'eval_grid.png'} ({size // 1000} KB)")
    return {"docs_s": round(time.perf_counter() - start, 1), "grid_bytes": size}


if __name__ == "__main__":
    raise SystemExit(main())
