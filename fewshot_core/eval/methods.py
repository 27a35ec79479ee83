"""The swappers the evaluation compares: the classical warp-and-blend baseline and ours.

Each renders an output for (source photo, target shots) once; the analysis of each output is
cached, so K values and tables that share an input share its cost.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import FewShotError
from .analysis import Analyser, Analysis, Reference, unit_vector
from .evaluator import load_rgb


def best_shot(shots: Sequence[Analysis]) -> int:
    """Index of the shot whose descriptor is nearest (cosine) the mean of the shots'."""
    descs = [s.face.descriptor for s in shots]
    mean = Reference.of(descs).unit
    return int(np.argmax([unit_vector(d) @ mean for d in descs]))


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

    def __init__(self, analyser: Analyser, generator: Path, model_dir: Path | None = None,
                 structure_lock: float | None = None, name: str = "ours", lock_detail: str | None = None,
                 source_detail_px: int | None = None, photo_detail: float | None = None,
                 identity_refine_steps: int | None = None, target_skin_tone: float | None = None,
                 skin_tone_channels: str | None = None) -> None:
        super().__init__(analyser)
        from ..pipeline import SwapModel, SwapSettings

        self.generator_path = Path(generator)
        self.name = name
        self.model = SwapModel.load(self.generator_path, model_dir=model_dir)
        self.settings = SwapSettings(faces=[0], order="largest_first")
        if structure_lock is not None:
            self.settings.structure_lock = structure_lock
        if lock_detail is not None:
            self.settings.lock_detail = lock_detail
        if source_detail_px is not None:
            self.settings.source_detail_px = source_detail_px
        if photo_detail is not None:
            self.settings.photo_detail = photo_detail
        if identity_refine_steps is not None:
            self.settings.identity_refine_steps = identity_refine_steps
        if target_skin_tone is not None:
            self.settings.target_skin_tone = target_skin_tone
        if skin_tone_channels is not None:
            self.settings.skin_tone_channels = skin_tone_channels
        self._embeddings: dict[Path, object] = {}

    def _embedding_and_skin(self, shot: Path):
        from ..errors import NoFaceError
        from ..imageio import load_image

        if shot not in self._embeddings:
            try:
                embedding, skin = self.model.describe_largest_faces([load_image(shot)[0]])
                self._embeddings[shot] = (embedding[0], skin[0] if skin is not None else None)
            except NoFaceError:
                self._embeddings[shot] = None
        return self._embeddings[shot]

    def render(self, source: Path, shots: Sequence[Path]) -> np.ndarray | None:
        import torch

        from ..errors import NoFaceError
        from ..identity import average_identity
        from ..imageio import load_image

        found = [e for e in (self._embedding_and_skin(Path(s)) for s in shots) if e is not None]
        if not found:
            return None
        skins = [skin for _, skin in found]
        identity = average_identity(torch.stack([emb for emb, _ in found]).cpu(),
                                    skin=None if any(skin is None for skin in skins) else torch.stack(skins))
        try:
            out, _ = self.model.swap(load_image(source), identity, self.settings)
        except NoFaceError:
            return None
        return (out[0].permute(1, 2, 0).clamp(0, 1) * 255.0 + 0.5).byte().numpy()
