"""What the swap evaluation's judge sees in an image, and the identity references it ranks against.

Why its own module: the judge (dlib descriptor and 68 landmarks, pose, iris centres,
realism features) is shared by every method and every table of `swap.py`, and
caching real photos' analyses by path is what keeps a 500-pair run affordable.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol as TypingProtocol, Sequence

import numpy as np

from . import report
from .evaluator import DlibEvaluator, Face, load_rgb
from .pose import head_pose


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

def unit_vector(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


@dataclass(frozen=True)
class Reference:
    """One identity's mean descriptor: the unit mean (cosine) and the plain mean (dlib distance)."""

    unit: np.ndarray
    mean: np.ndarray

    @classmethod
    def of(cls, descriptors: Sequence[np.ndarray]) -> "Reference":
        d = np.asarray(descriptors, dtype=np.float64)
        return cls(unit_vector(np.mean([unit_vector(x) for x in d], axis=0)), d.mean(0))


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
        sims = self._units @ unit_vector(descriptor)
        return 1 + int(np.sum(sims > sims[self._index[key]]))
