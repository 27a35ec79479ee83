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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol as TypingProtocol, Sequence

import numpy as np

from ..errors import FewShotError
from . import protocol as P
from . import report
from .evaluator import DlibEvaluator, Face, load_rgb
from .expression import expression_error, gaze_error
from .frechet import frechet_distance
from .pose import head_pose
from . import split
from .split import default_data_root

DOCS_DIR = Path(__file__).resolve().parents[2] / "docs"
QUICK = {"n_pairs": 40, "n_targets": 8, "ks": (5,), "gallery": 2, "fairness_pairs": 8}
FULL = {"n_pairs": 500, "n_targets": None, "ks": (1, 3, 5), "gallery": 10, "fairness_pairs": 40}


# --- analyses -----------------------------------------------------------------------

class RealismFeatures(TypingProtocol):
    """Features for the realism proxy: `name` says which, `label` is the FD* column's wording."""

    name: str
    label: str

    def __call__(self, image: np.ndarray, face: Face | None) -> np.ndarray | None: ...


class DlibDescriptorFeatures:
    """dlib's 128-D descriptor, already computed by the analysis (no extra cost): the fallback where
    FaceNet-512 is not fetched. dlib also judges identity, so FD* then shares its judge."""

    name = "dlib ResNet 128-D descriptor"

    def __init__(self, label: str = report.REALISM_LABEL_DLIB) -> None:
        self.label = label

    def __call__(self, image: np.ndarray, face: Face | None) -> np.ndarray | None:
        return None if face is None else face.descriptor


class FaceNet512Features:
    """Unit FaceNet-512 embeddings (`FaceEmbedder.facenet512`): a recogniser the generator never trains with
    (it trains with the 128-D FaceNet) and that does not judge identity here (dlib does).

    The face is aligned as FaceNet expects, by the embedder's own 5-point similarity warp onto
    `FACENET_TEMPLATE`, with the 5 points taken from dlib's 68 (as `ParserIrisLocator` does), so the
    judge never depends on the swapper's MTCNN.
    """

    name = "FaceNet-512 embedding (Inception-ResNet-v1, Sandberg 20180408-102900)"
    label = report.REALISM_LABEL

    def __init__(self, embedder) -> None:
        self.embedder = embedder

    @classmethod
    def from_file(cls, path: Path) -> "FaceNet512Features":
        from ..embed.embedder import FaceEmbedder

        return cls(FaceEmbedder.facenet512(path))

    def __call__(self, image: np.ndarray, face: Face | None) -> np.ndarray | None:
        import torch

        if face is None:
            return None
        img = torch.tensor(image).permute(2, 0, 1)[None].float() / 255.0  # a copy: dlib's arrays are read-only
        five = torch.from_numpy(five_from_68(face.landmarks)).float()[None]
        with torch.inference_mode():
            return self.embedder.embed_faces(img, five)[0].double().numpy()


def realism_features(choice: str, model_dir: Path | None = None) -> RealismFeatures:
    """FaceNet-512 when fetched ('auto') or demanded ('facenet512'); dlib descriptors otherwise."""
    from ..models.fetch import part_path, require_part

    if choice == "dlib":
        return DlibDescriptorFeatures(report.REALISM_LABEL_DLIB_CHOSEN)
    if choice == "facenet512" or part_path("facenet512", model_dir).is_file():
        return FaceNet512Features.from_file(require_part("facenet512", model_dir))  # clear error when missing
    return DlibDescriptorFeatures()


IrisLocator = Callable[[np.ndarray, Face], "np.ndarray | None"]  # -> [2, 2] pixel iris centres, image-left first


def five_from_68(landmarks68: np.ndarray) -> np.ndarray:
    """The project's 5 points (eye centres, nose tip, mouth corners; image-left first) from iBUG 68."""
    lm = np.asarray(landmarks68, dtype=np.float64)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


class ParserIrisLocator:
    """Iris centres from the shipped face parser: the centroid of each iris class in the aligned crop.

    The crop is aligned on 5 points taken from dlib's 68 (not MTCNN's), so the
    judge stays independent of the swapper's detector; the parser was trained
    with +-4 px / 8 degree alignment jitter, which covers the difference.
    """

    name = "shipped face parser (iris-class centroid)"

    def __init__(self, mapper) -> None:
        self.mapper = mapper
        self.size = int(mapper.parser.config.resolution)

    @classmethod
    def from_default(cls) -> "ParserIrisLocator | None":
        """The locator with weights/parser_128.safetensors, or None where the parser is not shipped."""
        from ..parsing.mapper import ParserStructureMapper, default_parser_path

        return cls(ParserStructureMapper.from_default()) if default_parser_path().is_file() else None

    def __call__(self, image: np.ndarray, face: Face) -> np.ndarray:
        import torch

        from ..align import SWAP_TEMPLATE, estimate_similarity, invert_affine, template_pixels, \
            transform_points, warp_to_crop

        img = torch.tensor(image).permute(2, 0, 1)[None].float() / 255.0  # a copy: dlib's arrays are read-only
        five = torch.from_numpy(five_from_68(face.landmarks)).float()[None]
        M = estimate_similarity(five, template_pixels(SWAP_TEMPLATE, self.size))
        iris = self.mapper.iris_centres(warp_to_crop(img, M, self.size))
        return transform_points(iris, invert_affine(M))[0].double().numpy()


@dataclass
class Analysis:
    """What the judge saw in one image: its face (or None), size, realism feature and iris centres."""

    face: Face | None
    size: tuple[int, int]  # (H, W)
    feature: np.ndarray | None = None
    iris: np.ndarray | None = None
    _pose: tuple[float, float, float] | None = field(default=None, repr=False)

    def pose(self) -> tuple[float, float, float] | None:
        if self.face is None:
            return None
        if self._pose is None:
            self._pose = head_pose(self.face.landmarks, self.size)
        return self._pose


class Analyser:
    """dlib analyses of images; the real (read-only) photos are cached by path for the run."""

    def __init__(self, evaluator: DlibEvaluator, features: RealismFeatures | None = None,
                 iris: IrisLocator | None = None) -> None:
        self.evaluator = evaluator
        self.features = features or DlibDescriptorFeatures()
        self.iris = iris
        self._cache: dict[Path, Analysis] = {}
        self.count = 0
        self.cpu_seconds = 0.0  # CPU, not wall: the machine is shared, so wall time says little

    def image(self, rgb: np.ndarray) -> Analysis:
        start = time.process_time()
        face = self.evaluator.analyse(rgb)
        feat = self.features(rgb, face)
        iris = self.iris(rgb, face) if (self.iris is not None and face is not None) else None
        self.count += 1
        self.cpu_seconds += time.process_time() - start
        return Analysis(face, (rgb.shape[0], rgb.shape[1]), feat, iris)

    def photo(self, path: Path) -> Analysis:
        path = Path(path)
        if path not in self._cache:
            self._cache[path] = self.image(load_rgb(path))
        return self._cache[path]

    def usable(self, path: Path) -> bool:
        return self.photo(path).face is not None

    @property
    def cached(self) -> int:
        return len(self._cache)


# --- identity references ------------------------------------------------------------

def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


@dataclass(frozen=True)
class Reference:
    """One identity's mean descriptor: the unit mean (cosine) and the plain mean (dlib distance)."""

    unit: np.ndarray
    mean: np.ndarray

    @classmethod
    def of(cls, descriptors: Sequence[np.ndarray]) -> "Reference":
        d = np.asarray(descriptors, dtype=np.float64)
        return cls(_unit(np.mean([_unit(x) for x in d], axis=0)), d.mean(0))


class Gallery:
    """Identity references to retrieve outputs among."""

    def __init__(self, refs: dict[str, Reference]) -> None:
        self.keys = list(refs)
        self.refs = refs
        self._index = {k: i for i, k in enumerate(self.keys)}
        self._units = np.stack([refs[k].unit for k in self.keys])

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, key: str) -> Reference:
        return self.refs[key]

    def rank(self, descriptor: np.ndarray, key: str) -> int:
        """1-based rank of `key` among all references by cosine to `descriptor`."""
        sims = self._units @ _unit(descriptor)
        return 1 + int(np.sum(sims > sims[self._index[key]]))


# --- scoring ------------------------------------------------------------------------

@dataclass(frozen=True)
class Score:
    """One output judged against its source and target (None where no face was found)."""

    detected: bool
    rank: int | None = None
    cos_tgt: float | None = None
    cos_src: float | None = None
    dist_tgt: float | None = None
    dist_src: float | None = None
    pose_deg: float | None = None
    expr: float | None = None
    gaze: float | None = None
    feature: np.ndarray | None = None
    failed: bool = False


def pose_difference(a: Analysis, b: Analysis) -> float | None:
    """Mean |yaw, pitch, roll| difference in degrees (each face posed in its own image size)."""
    pa, pb = a.pose(), b.pose()
    if pa is None or pb is None:
        return None
    d = (np.array(pa) - np.array(pb) + 180.0) % 360.0 - 180.0
    return float(np.mean(np.abs(d)))


def score_output(out: Analysis, source: Analysis, gallery: Gallery, target: str,
                 source_ref: Reference, failed: bool = False) -> Score:
    """Identity (vs the gallery), attributes (vs the source face) and realism feature of one output."""
    if out.face is None:
        return Score(False, failed=failed)
    d = out.face.descriptor
    tgt = gallery[target]
    gaze = None
    if out.iris is not None and source.iris is not None and source.face is not None:
        gaze = gaze_error(source.face.landmarks, source.iris, out.face.landmarks, out.iris)
    return Score(
        True, gallery.rank(d, target),
        float(_unit(d) @ tgt.unit), float(_unit(d) @ source_ref.unit),
        float(np.linalg.norm(d - tgt.mean)), float(np.linalg.norm(d - source_ref.mean)),
        pose_difference(source, out) if source.face is not None else None,
        expression_error(source.face.landmarks, out.face.landmarks) if source.face is not None else None,
        gaze, out.feature, failed)


def _mean(values: Sequence[float | None]) -> float | None:
    v = [x for x in values if x is not None]
    return float(np.mean(v)) if v else None


def summarise(method: str, k: int | None, scores: Sequence[Score], real_features: np.ndarray | None,
              **extra: object) -> dict:
    """One table row: rates over all outputs, means over the detected ones, realism over the set."""
    n = len(scores)
    ranks = [s.rank for s in scores]
    feats = [s.feature for s in scores if s.feature is not None]
    fd = None
    if real_features is not None and len(feats) >= 2 and len(real_features) >= 2:
        fd = frechet_distance(np.stack(feats), real_features)
    return {
        "method": method, "k": k, "n": n, **extra,
        "detected": sum(s.detected for s in scores) / n if n else None,
        "failed": sum(s.failed for s in scores),
        "top1": sum(r == 1 for r in ranks if r is not None) / n if n else None,
        "top5": sum(r <= 5 for r in ranks if r is not None) / n if n else None,
        **{key: _mean([getattr(s, key) for s in scores])
           for key in ("cos_tgt", "cos_src", "dist_tgt", "dist_src", "pose_deg", "expr", "gaze")},
        "fd": fd,
    }


# --- methods ------------------------------------------------------------------------

def best_shot(shots: Sequence[Analysis]) -> int:
    """Index of the shot whose descriptor is nearest (cosine) the mean of the shots'."""
    descs = [s.face.descriptor for s in shots]
    mean = Reference.of(descs).unit
    return int(np.argmax([_unit(d) @ mean for d in descs]))


class SwapMethod:
    """A swapper judged on (source photo, target shots); outputs are analysed once per input."""

    name = "method"

    def __init__(self, analyser: Analyser) -> None:
        self.analyser = analyser
        self.cpu_seconds = 0.0
        self.count = 0
        self._outputs: dict[tuple, tuple[Analysis, bool]] = {}

    def key(self, source: Path, shots: Sequence[Path]) -> tuple:
        return (Path(source), tuple(shots))

    def render(self, source: Path, shots: Sequence[Path]) -> np.ndarray | None:
        raise NotImplementedError

    def output(self, source: Path, shots: Sequence[Path]) -> tuple[Analysis, bool]:
        """(analysis of the output, whether the swap failed); a failed swap has no face."""
        key = self.key(source, shots)
        if key not in self._outputs:
            start = time.process_time()
            rgb = self.render(source, shots)
            self.cpu_seconds += time.process_time() - start
            self.count += 1
            if rgb is None:
                h, w = self.analyser.photo(source).size
                self._outputs[key] = (Analysis(None, (h, w)), True)
            else:
                self._outputs[key] = (self.analyser.image(rgb), False)
        return self._outputs[key]


class ClassicalMethod(SwapMethod):
    """Landmark warp + colour transfer + Poisson blend of the best shot (`classical.py`)."""

    name = "classical"

    def key(self, source: Path, shots: Sequence[Path]) -> tuple:
        # the output depends only on the chosen shot, so K = 1, 3, 5 often share one
        analyses = [self.analyser.photo(s) for s in shots]
        return (Path(source), Path(shots[best_shot(analyses)]))

    def render(self, source: Path, shots: Sequence[Path]) -> np.ndarray | None:
        from .classical import classical_swap
        from .evaluator import require

        analyses = [self.analyser.photo(s) for s in shots]
        shot = shots[best_shot(analyses)]
        src = self.analyser.photo(source)
        try:
            return classical_swap(load_rgb(source), load_rgb(shot), src.face.landmarks,
                                  self.analyser.photo(shot).face.landmarks)
        except (FewShotError, require("cv2").error):  # e.g. landmarks off the image: a failed swap
            return None


class OursMethod(SwapMethod):
    """The swap model (`pipeline.SwapModel`) with a trained generator file."""

    def __init__(self, analyser: Analyser, generator: Path, model_dir: Path | None = None) -> None:
        super().__init__(analyser)
        from ..pipeline import SwapModel, SwapSettings

        self.generator_path = Path(generator)
        self.name = "ours"
        self.model = SwapModel.load(self.generator_path, model_dir=model_dir)
        self.settings = SwapSettings(faces=[0], order="largest_first")
        self._embeddings: dict[Path, object] = {}

    def _embedding(self, shot: Path):
        from ..errors import NoFaceError
        from ..imageio import load_image

        if shot not in self._embeddings:
            try:
                self._embeddings[shot] = self.model.embed_largest_faces([load_image(shot)[0]])[0]
            except NoFaceError:
                self._embeddings[shot] = None
        return self._embeddings[shot]

    def render(self, source: Path, shots: Sequence[Path]) -> np.ndarray | None:
        import torch

        from ..errors import NoFaceError
        from ..identity import average_identity
        from ..imageio import load_image

        embs = [e for e in (self._embedding(Path(s)) for s in shots) if e is not None]
        if not embs:
            return None
        identity = average_identity(torch.stack(embs).cpu())
        try:
            out, _ = self.model.swap(load_image(source), identity, self.settings)
        except NoFaceError:
            return None
        return (out[0].permute(1, 2, 0).clamp(0, 1) * 255.0 + 0.5).byte().numpy()


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


def run_protocol(cfg: Config, analyser: Analyser,
                 methods: Sequence[SwapMethod]) -> tuple[list[dict], P.Protocol, Gallery]:
    """Swap every pair with every method and K; returns the table rows."""
    photos = P.heldout_photos(cfg.data_root, cfg.max_identities, cfg.seed)
    proto = P.build_protocol(photos, n_pairs=cfg.n_pairs, n_targets=cfg.n_targets, gallery_size=cfg.gallery,
                             shots=max(cfg.ks), seed=cfg.seed, usable=analyser.usable)
    gallery = Gallery({ident: Reference.of([analyser.photo(p).face.descriptor for p in ps])
                       for ident, ps in proto.gallery.items()})
    real = np.stack([f for f in (analyser.photo(p).feature for ps in proto.gallery.values() for p in ps)
                     if f is not None])
    _log(f"protocol: {len(proto.pairs)} pairs, {len(proto.targets)} targets, {len(gallery)} gallery identities, "
         f"{analyser.cached} real photos analysed")
    scores: dict[tuple[str, int | None], list[Score]] = {}
    start = time.perf_counter()
    for i, pair in enumerate(proto.pairs):
        src = analyser.photo(pair.source)
        src_ref = gallery[pair.source_identity]
        target = proto.targets[pair.target]
        scores.setdefault(("no swap", None), []).append(score_output(src, src, gallery, pair.target, src_ref))
        scores.setdefault(("upper bound", None), []).append(
            score_output(analyser.photo(target.probe), src, gallery, pair.target, src_ref))
        for method in methods:
            for k in cfg.ks:
                out, failed = method.output(pair.source, target.shots[:k])
                scores.setdefault((method.name, k), []).append(
                    score_output(out, src, gallery, pair.target, src_ref, failed))
        if (i + 1) % 25 == 0 or i + 1 == len(proto.pairs):
            _log(f"  {i + 1}/{len(proto.pairs)} pairs, {time.perf_counter() - start:.0f} s")
    rows = [summarise(m, k, s, real) for (m, k), s in scores.items()]
    return rows, proto, gallery


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
        if generator is not None:
            methods.append(OursMethod(analyser, generator))
        rows, proto, gallery = run_protocol(cfg, analyser, methods)
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


def _row_key(row: dict) -> str:
    name = row["method"].replace(" ", "_")
    return f"{name}_k{row['k']}" if row["k"] is not None and "group" not in row else name


def _compact(row: dict) -> dict:
    keep = ("n", "detected", "top1", "top5", "cos_tgt", "cos_src", "dist_tgt", "dist_src", "pose_deg", "expr",
            "gaze", "fd", "failed")
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
