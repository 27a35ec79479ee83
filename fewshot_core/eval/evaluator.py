"""dlib's face recogniser and 68 landmarks: the independent judge of swaps.

Why: we condition and train on FaceNet, so measuring identity with FaceNet
would reward the swapper for fooling its own teacher. dlib's ResNet
(`dlib_face_recognition_resnet_model_v1`, 128-D, trained on different data
with a different loss) is what the field uses as an outside recogniser.

dlib and the `.dat` models are evaluation extras (`pip install -e .[eval]`),
never runtime dependencies of the node pack, so they are imported lazily.
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import FewShotError, InputShapeError, ModelFileMissingError

EVAL_INSTALL_HINT = "pip install -e .[eval]  (dlib-bin, face-recognition-models==0.3.0, scipy, opencv-python-headless)"

RECOGNISER_FILE = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS68_FILE = "shape_predictor_68_face_landmarks.dat"
CHIP_SIZE = 150       # what the dlib ResNet was trained on
CHIP_PADDING = 0.25   # dlib's default for compute_face_descriptor
SAME_PERSON_THRESHOLD = 0.6  # dlib's published Euclidean threshold


class EvalExtrasMissingError(FewShotError):
    """An evaluation-only package (dlib, opencv, scipy, face models) is not installed."""


def require(module: str) -> Any:
    """Import an evaluation extra or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise EvalExtrasMissingError(
            f"The evaluation needs the Python module '{module}', which is not installed. "
            f"Install the evaluation extras: {EVAL_INSTALL_HINT}") from exc



def face_models_dir() -> Path:
    """The `models/` folder of the installed face_recognition_models package.

    Found without importing the package: its __init__ needs pkg_resources,
    which recent setuptools no longer ships.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise EvalExtrasMissingError(
            "The dlib model files come from the package face-recognition-models, which is not installed. "
            f"Install the evaluation extras: {EVAL_INSTALL_HINT}")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = f"{type(image).__name__} {getattr(image, 'shape', '')} {getattr(image, 'dtype', '')}"
        raise InputShapeError(f"dlib needs an RGB uint8 image of shape [H, W, 3]; got {got}. "
                              "Convert a core tensor with (img[0].permute(1, 2, 0) * 255).round().byte().numpy().")
    return np.ascontiguousarray(image)


@dataclass(frozen=True)
class Face:
    """One detected face: box (left, top, right, bottom), 68 landmarks, 128-D descriptor."""

    box: tuple[int, int, int, int]
    landmarks: np.ndarray
    descriptor: np.ndarray


class DlibEvaluator:
    """HOG detector, 68-point shape predictor and ResNet recogniser from dlib."""

    def __init__(self, recogniser_path: Path, landmarks68_path: Path, upsample: int = 1) -> None:
        dlib = require("dlib")
        for p in (recogniser_path, landmarks68_path):
            if not Path(p).is_file():
                raise ModelFileMissingError(f"dlib model file {p} is missing. Reinstall: {EVAL_INSTALL_HINT}")
        self._dlib = dlib
        self.upsample = upsample
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(landmarks68_path))
        self.recogniser = dlib.face_recognition_model_v1(str(recogniser_path))

    @classmethod
    def from_package(cls, upsample: int = 1) -> "DlibEvaluator":
        """Load the `.dat` files shipped inside face_recognition_models."""
        d = face_models_dir()
        return cls(d / RECOGNISER_FILE, d / LANDMARKS68_FILE, upsample=upsample)

    # -- single image ---------------------------------------------------
    def detect(self, image: np.ndarray) -> list[Any]:
        """dlib rectangles of the frontal faces (HOG), largest first."""
        rects = list(self.detector(_check_image(image), self.upsample))
        return sorted(rects, key=lambda r: r.width() * r.height(), reverse=True)

    def _shape(self, image: np.ndarray, rect: Any) -> Any:
        return self.predictor(_check_image(image), rect)

    def landmarks68(self, image: np.ndarray, rect: Any) -> np.ndarray:
        """[68, 2] float pixel (x, y) in iBUG 300-W order."""
        s = self._shape(image, rect)
        return np.array([(s.part(i).x, s.part(i).y) for i in range(s.num_parts)], dtype=np.float64)

    def chip(self, image: np.ndarray, rect: Any) -> np.ndarray:
        """The 150x150 aligned crop the recogniser sees (dlib's own alignment)."""
        image = _check_image(image)
        return self._dlib.get_face_chip(image, self._shape(image, rect), size=CHIP_SIZE, padding=CHIP_PADDING)

    def embed(self, image: np.ndarray, rect: Any) -> np.ndarray:
        """[128] descriptor of the face in `rect`; same-person pairs are < 0.6 apart."""
        return np.asarray(self.recogniser.compute_face_descriptor(self.chip(image, rect)), dtype=np.float64)

    def analyse(self, image: np.ndarray) -> Face | None:
        """Largest face: box, landmarks and descriptor; None when no face is found."""
        image = _check_image(image)
        rects = self.detect(image)
        if not rects:
            return None
        r = rects[0]
        shape = self._shape(image, r)
        lm = np.array([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)], dtype=np.float64)
        chip = self._dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
        desc = np.asarray(self.recogniser.compute_face_descriptor(chip), dtype=np.float64)
        return Face((r.left(), r.top(), r.right(), r.bottom()), lm, desc)

    # -- batches ---------------------------------------------------------
    def analyse_many(self, images: Sequence[np.ndarray]) -> list[Face | None]:
        """`analyse` over a list; the ResNet runs once on all the chips."""
        found: list[tuple[int, Any, np.ndarray, Any]] = []
        for i, img in enumerate(images):
            img = _check_image(img)
            rects = self.detect(img)
            if rects:
                shape = self._shape(img, rects[0])
                found.append((i, rects[0], img, shape))
        out: list[Face | None] = [None] * len(images)
        if not found:
            return out
        chips = [self._dlib.get_face_chip(img, s, size=CHIP_SIZE, padding=CHIP_PADDING) for _, _, img, s in found]
        descs = self.recogniser.compute_face_descriptor(chips)
        for (i, r, _, s), d in zip(found, descs):
            lm = np.array([(s.part(k).x, s.part(k).y) for k in range(s.num_parts)], dtype=np.float64)
            out[i] = Face((r.left(), r.top(), r.right(), r.bottom()), lm, np.asarray(d, dtype=np.float64))
        return out

    def embed_many(self, images: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        """Descriptor of the largest face in each image (None where none is found)."""
        return [f.descriptor if f is not None else None for f in self.analyse_many(images)]

    def landmarks68_many(self, images: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        """68 landmarks of the largest face in each image (None where none is found)."""
        out: list[np.ndarray | None] = []
        for img in images:
            rects = self.detect(img)
            out.append(self.landmarks68(img, rects[0]) if rects else None)
        return out


def descriptor_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between dlib descriptors (dlib's metric)."""
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def load_rgb(path: str | Path) -> np.ndarray:
    """Read a photo as RGB uint8 [H, W, 3] (Pillow is a core dependency)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
