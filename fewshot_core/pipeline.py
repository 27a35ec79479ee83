"""The whole swap: detect, align, embed, generate, paste back.

`SwapModel` bundles the parts once (they are reused across calls and frames);
`encode_identity` and `swap` are what the nodes and the CLI call.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import torch

from .align import SWAP_TEMPLATE, estimate_similarity, template_pixels, transform_points, warp_to_crop
from .detect import FaceDetections, FaceDetector, order_faces
from .embed import FaceEmbedder
from .errors import InputShapeError, ModelFileMissingError, NoFaceError
from .generator import FewShotGenerator, GeneratorConfig, degrade_for_inference, load_generator
from .identity import DEFAULT_OUTLIER_THRESHOLD, IdentityEmbedding, average_identity, blend_identity
from .identity_refine import MAX_REFINE_STEPS, refine_identity_code
from .models import require_part
from .paste import color_match as match_colours
from .paste import paste_back, photo_detail
from .skin_tone import check_skin_tone, skin_statistics, skin_tone_shift
from .structure import LandmarkStructureMapper, StructureMapper
from .structure_lock import apply_warp, fit_structure_warp, lock_detail_options
from .temporal import LandmarkStabiliser

log = logging.getLogger(__name__)

FaceOrder = Literal["left_to_right", "largest_first"]
ProgressFn = Callable[[int, int], None]
InterruptFn = Callable[[], None]


def check_images(images: torch.Tensor, what: str) -> torch.Tensor:
    """Validate a core image batch [B, 3, H, W] in [0, 1] with a message that names `what`."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise InputShapeError(f"{what}: expected an RGB image batch of shape [B, 3, H, W], got {shape}.")
    if images.shape[0] == 0:
        raise InputShapeError(f"{what}: the image batch is empty.")
    if not images.is_floating_point():
        raise InputShapeError(f"{what}: expected float values in [0, 1], got dtype {images.dtype}.")
    return images


def parse_face_indices(text: str) -> list[int] | None:
    """'all' or '' -> None (every face); '0,2' -> [0, 2]. A clear error for anything else."""
    text = text.strip().lower()
    if text in ("", "all", "*"):
        return None
    try:
        indices = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise InputShapeError(f"Face selection {text!r} is not 'all' or a comma-separated list of indices like '0,2'.")
    if any(i < 0 for i in indices):
        raise InputShapeError(f"Face indices must be 0 or more, got {indices}.")
    return indices


@dataclass
class SwapSettings:
    """What a user tunes per swap."""

    faces: list[int] | None = None  # None: every face
    order: FaceOrder = "left_to_right"
    strength: float = 1.0
    feather_px: float = 6.0
    color_match: bool = True
    min_face_size: int = 40
    temporal_smoothing: float = 0.0  # 0..1: steadies each face's alignment across the frames of a batch
    structure_lock: float = 1.0  # 0..1: warp the generated parts onto the source's (parser maps; `structure_lock.py`)
    # The four below were chosen together on the validation pairs (docs/EVALUATION.md, "Identity refinement"):
    # the source's geometry and detail for expression, the refinement to win back the identity they cost.
    lock_detail: str = "fine"  # that warp's resolution: a `structure_lock.LOCK_DETAIL` name
    source_detail_px: int = 20  # the source crop reaches the generator at this size (0: the generator's own setting)
    photo_detail: float = 1.0  # 0..1: lay the source photo's fine detail the crop cannot hold back over the swap
    identity_refine_steps: int = 10  # gradient steps on the identity code so the render carries it (`identity_refine.py`)
    target_skin_tone: float = 0.0  # 0..1: the colour match's skin tone, from the source's (0) to the target's (1)
    skin_tone_channels: str = "colour"  # what that moves: a `skin_tone.SHIFT_CHANNELS` name


class SwapModel:
    """Detector, embedder, structure mapper and (optionally) generator, on one device."""

    def __init__(
        self,
        detector: FaceDetector,
        embedder: FaceEmbedder,
        generator: FewShotGenerator | None,
        structure: StructureMapper | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        generator_path: Path | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = dtype
        self.detector = detector.to(self.device).eval()
        self.embedder = embedder.to(self.device).eval()
        self.generator = generator.to(self.device, dtype).eval() if generator is not None else None
        self.structure = structure or LandmarkStructureMapper()
        self.generator_path = generator_path

    @classmethod
    def load(
        cls,
        generator_path: Path | str | None,
        model_dir: Path | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> "SwapModel":
        """Load every part; `generator_path=None` gives a model that can only detect and encode."""
        detector = FaceDetector.from_file(require_part("mtcnn", model_dir), device=device)
        embedder = FaceEmbedder.from_file(require_part("facenet", model_dir), device=device)
        generator = None
        if generator_path is not None:
            generator = load_generator(Path(generator_path), device=device, dtype=dtype)
        structure = _structure_mapper_for(generator, model_dir, device)
        return cls(detector, embedder, generator, structure, device, dtype,
                   Path(generator_path) if generator_path else None)

    @property
    def config(self) -> GeneratorConfig:
        if self.generator is None:
            raise ModelFileMissingError(
                "No generator weights are loaded, so no swap can be made. Put a generator .safetensors file "
                "into weights/ (or ComfyUI's models/fewshot folder) and load it."
            )
        return self.generator.config

    # ---------------------------------------------------------------- detection
    @torch.no_grad()
    def detect(self, images: torch.Tensor, min_face_size: int = 40) -> list[FaceDetections]:
        images = check_images(images, "detect").to(self.device, torch.float32)
        return self.detector.detect(images, min_face_size=min_face_size)

    # ----------------------------------------------------------------- identity
    @torch.no_grad()
    def describe_largest_faces(self, photos: Sequence[torch.Tensor], what: str = "target photo",
                               with_skin: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The embedding [K, D] and skin statistics [K, 2, 3] (`skin_tone.py`) of each photo's largest face;
        a photo with no face is an error naming it.

        The skin is measured on the face's aligned crop at the generator's resolution, on the structure map's
        skin class, the same way `swap` measures the source's; without a generator it is left out (None)."""
        embeddings, skins = [], []
        with_skin = with_skin and self.generator is not None
        for index, photo in enumerate(photos):
            batch = check_images(photo[None] if photo.ndim == 3 else photo, f"{what} {index}")
            dets = self.detect(batch[:1], min_face_size=20)[0]
            if dets.boxes.shape[0] == 0:
                raise NoFaceError(
                    f"No face found in {what} {index} (size {batch.shape[-1]}x{batch.shape[-2]}). "
                    f"Use a photo where the face is visible and at least 20 px wide, or remove it."
                )
            largest = order_faces(dets, "largest_first")
            frame = batch[:1].to(self.device, torch.float32)
            landmarks = largest.landmarks[:1].to(frame)
            embeddings.append(self.embedder.embed_faces(frame, landmarks)[0])
            if with_skin:
                crops, landmarks_in_crop, _ = self._aligned_crops(frame, landmarks)
                skins.append(skin_statistics(crops, self.structure(crops, landmarks_in_crop))[0].cpu())
        return torch.stack(embeddings), (torch.stack(skins) if with_skin else None)

    def _aligned_crops(self, frame: torch.Tensor, landmarks: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each face's crop at the generator's resolution [F, 3, R, R], its landmarks there, and the matrices."""
        size = self.config.resolution
        frames = frame.expand(landmarks.shape[0], -1, -1, -1)
        matrices = estimate_similarity(landmarks, template_pixels(SWAP_TEMPLATE, size).to(frame))
        return warp_to_crop(frames, matrices, size), transform_points(landmarks, matrices), matrices

    def encode_identity(self, photos: Sequence[torch.Tensor] | torch.Tensor,
                        outlier_threshold: float = DEFAULT_OUTLIER_THRESHOLD) -> IdentityEmbedding:
        """One identity from 1..N photos of a person: averaged unit embeddings with an outlier report."""
        if isinstance(photos, torch.Tensor):
            photos = list(check_images(photos, "target photos"))
        if len(photos) == 0:
            raise InputShapeError("No target photos given: pass 1 to 5 photos of the person whose identity to use.")
        embeddings, skin = self.describe_largest_faces(photos)
        return average_identity(embeddings.cpu(), outlier_threshold=outlier_threshold, skin=skin)

    # --------------------------------------------------------------------- swap
    def _select(self, dets: FaceDetections, settings: SwapSettings) -> FaceDetections:
        ordered = order_faces(dets, settings.order)
        if settings.faces is None:
            return ordered
        keep = [i for i in settings.faces if i < ordered.boxes.shape[0]]
        return ordered.select(torch.tensor(keep, dtype=torch.long, device=ordered.boxes.device))

    @torch.no_grad()
    def swap(
        self,
        images: torch.Tensor,
        identity: IdentityEmbedding,
        settings: SwapSettings | None = None,
        chunk_size: int = 8,
        progress: ProgressFn | None = None,
        check_interrupt: InterruptFn | None = None,
        stabiliser: LandmarkStabiliser | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Swap the selected faces of every image; returns (images, full-frame masks [B, 1, H, W]).

        With `settings.temporal_smoothing` > 0 the images are frames of one video, in order; pass your
        own `stabiliser` to carry the smoothing across calls (frames read one file at a time). Along a
        video, each tracked face's identity is refined on its first frame only and that code is reused.
        """
        settings = settings or SwapSettings()
        if not 0.0 <= settings.structure_lock <= 1.0:
            raise InputShapeError(f"structure_lock must be between 0 (off) and 1, got {settings.structure_lock}.")
        if not 0.0 <= settings.photo_detail <= 1.0:
            raise InputShapeError(f"photo_detail must be between 0 (off) and 1, got {settings.photo_detail}.")
        if not 0 <= settings.identity_refine_steps <= MAX_REFINE_STEPS:
            raise InputShapeError(f"identity_refine_steps must be between 0 (off) and {MAX_REFINE_STEPS}, "
                                  f"got {settings.identity_refine_steps}.")
        check_skin_tone(settings.target_skin_tone, settings.skin_tone_channels)
        if settings.target_skin_tone > 0 and settings.color_match:
            self._target_skin(identity)
        lock_detail_options(settings.lock_detail)  # an unknown name fails here, before any work
        self._source_px(settings)
        images = check_images(images, "source image")
        outputs, masks = [], []
        total = images.shape[0]
        any_face = False
        if stabiliser is None and settings.temporal_smoothing > 0:
            stabiliser = LandmarkStabiliser(settings.temporal_smoothing)
        for start in range(0, total, chunk_size):
            if check_interrupt is not None:
                check_interrupt()
            chunk = images[start:start + chunk_size].to(self.device, torch.float32)
            detections = self.detect(chunk, settings.min_face_size)
            out_chunk, mask_chunk = chunk.clone(), torch.zeros_like(chunk[:, :1])
            for b, dets in enumerate(detections):
                chosen = self._select(dets, settings)
                memos = None
                if stabiliser is not None:  # every frame, even a faceless one, which ends the tracks
                    chosen = FaceDetections(chosen.boxes, chosen.scores, stabiliser(chosen.landmarks))
                    memos = stabiliser.memos()
                if chosen.boxes.shape[0] == 0:
                    continue
                any_face = True
                frame, mask = self._swap_faces(out_chunk[b:b + 1], chosen, identity, settings, check_interrupt,
                                               memos)
                out_chunk[b:b + 1] = frame
                mask_chunk[b:b + 1] = torch.maximum(mask_chunk[b:b + 1], mask)
            outputs.append(out_chunk.cpu())
            masks.append(mask_chunk.cpu())
            if progress is not None:
                progress(min(start + chunk_size, total), total)
        if not any_face:
            raise NoFaceError(
                f"No face found in the source image{'s' if total > 1 else ''} "
                f"(faces smaller than {settings.min_face_size} px are ignored; face selection {settings.faces or 'all'}). "
                f"Use an image with a clearly visible face, or lower min_face_size."
            )
        return torch.cat(outputs), torch.cat(masks)

    def _swap_faces(
        self,
        frame: torch.Tensor,
        faces: FaceDetections,
        identity: IdentityEmbedding,
        settings: SwapSettings,
        check_interrupt: InterruptFn | None = None,
        memos: list[dict] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Swap every face of one frame [1, 3, H, W]; faces are pasted one after another.

        `memos`: one dict per face that lives along its video track (`LandmarkStabiliser.memos`)."""
        count = faces.landmarks.shape[0]
        frames = frame.expand(count, -1, -1, -1)
        crops, landmarks_in_crop, matrices = self._aligned_crops(frame, faces.landmarks.to(frame))
        structure = self.structure(crops, landmarks_in_crop)
        target = identity.vector.to(self.device)[None].expand(count, -1)
        if settings.strength < 1.0:
            source_ids = self.embedder.embed_faces(frames, faces.landmarks.to(frame))
            code = blend_identity(source_ids, target, settings.strength)
        else:
            code = target
        degraded = degrade_for_inference(crops, self._source_px(settings))
        generated, gen_mask = self._render(degraded, structure, crops, landmarks_in_crop, code, target, settings,
                                           memos, check_interrupt)
        generated, gen_mask = generated.float(), gen_mask.float()
        if settings.structure_lock > 0 and self.structure.name == "parser":
            generated, gen_mask = self.lock_structure(generated, gen_mask, crops, structure, settings.structure_lock,
                                                      settings.lock_detail)
        if settings.color_match:
            mean_shift = std_ratio = None
            if settings.target_skin_tone > 0:
                mean_shift, std_ratio = skin_tone_shift(skin_statistics(crops, structure),
                                                        self._target_skin(identity), settings.target_skin_tone,
                                                        settings.skin_tone_channels)
            generated = match_colours(generated, crops, gen_mask, mean_shift, std_ratio)
        full_mask = torch.zeros_like(frame[:, :1])
        original = frame
        for i in range(count):
            one = slice(i, i + 1)
            frame, mask = paste_back(frame, generated[one], gen_mask[one], matrices[one], settings.feather_px)
            if settings.photo_detail > 0:  # what the crop lost of the photo, laid back over this face
                detail = photo_detail(original, crops[one], gen_mask[one], matrices[one], settings.feather_px)
                frame = (frame + settings.photo_detail * detail).clamp(0, 1)
            full_mask = torch.maximum(full_mask, mask)
        return frame, full_mask

    def _render(self, degraded: torch.Tensor, structure: torch.Tensor, crops: torch.Tensor,
                landmarks_in_crop: torch.Tensor, code: torch.Tensor, target: torch.Tensor, settings: SwapSettings,
                memos: list[dict] | None, check_interrupt: InterruptFn | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The generator's face and mask for each crop, with its identity code refined (`identity_refine.py`).

        Why the memos: refined on every frame of a video, the code moves a little from frame to frame and the
        face flickers with it (docs/BENCHMARKS.md). A face whose track already holds a code refined for the
        same target, strength and steps reuses it, which also spares the refinement's time on later frames.
        """
        steps = settings.identity_refine_steps
        refined_code = code.clone()
        todo = list(range(code.shape[0])) if steps > 0 else []
        key = ("refined_identity_code", steps, float(settings.strength))
        if memos is not None and todo:
            for i, memo in enumerate(memos):
                kept = memo.get(key)
                if kept is not None and torch.equal(kept[0], target[i]):
                    refined_code[i] = kept[1]
                    todo.remove(i)
        if todo:
            index = torch.tensor(todo, device=code.device)
            refined = refine_identity_code(self.generator, self.embedder, degraded[index], structure[index],
                                           crops[index], landmarks_in_crop[index], code[index], steps,
                                           check_interrupt=check_interrupt)
            log.debug("fewshot-swap: identity refinement, %d steps: FaceNet cosine to the code %s -> %s",
                      steps, _cosines(refined.cosine_before), _cosines(refined.cosine_after))
            refined_code[index] = refined.code.to(refined_code)
            if memos is not None:
                for j, i in enumerate(todo):
                    memos[i][key] = (target[i].clone(), refined.code[j].clone())
            if len(todo) == code.shape[0]:  # the refinement rendered every face already
                return refined.generated, refined.mask
        return self.generator(degraded.to(self.dtype), structure.to(self.dtype), refined_code.to(self.dtype))

    @staticmethod
    def _target_skin(identity: IdentityEmbedding) -> torch.Tensor:
        """The identity's skin statistics [2, 3], or a clear error for an identity without them."""
        skin = identity.skin_tone
        if skin is None:
            raise InputShapeError(
                "This identity has no skin-tone statistics (saved by an older version of fewshot-swap, or no "
                "skin was found in its photos, or they are all black and white), so target_skin_tone cannot be "
                "used. Encode the identity again from colour photos, or set target_skin_tone to 0."
            )
        return skin

    def _source_px(self, settings: SwapSettings) -> int:
        """The size the source crop is degraded to: `settings.source_detail_px`, or the generator's own when 0."""
        config = self.config
        px = settings.source_detail_px or config.infer_degrade_px
        if not 2 <= px <= config.resolution:
            raise InputShapeError(f"source_detail_px must be 0 (the generator's own, {config.infer_degrade_px}) or "
                                  f"between 2 and the generator's resolution {config.resolution}, got {px}.")
        return px

    def lock_structure(self, generated: torch.Tensor, gen_mask: torch.Tensor, crops: torch.Tensor,
                       structure: torch.Tensor, strength: float,
                       detail: str = SwapSettings.lock_detail) -> tuple[torch.Tensor, torch.Tensor]:
        """Warp the generated face (and its mask) so that it parses like the source (`structure_lock.py`)."""
        composite = gen_mask * generated + (1 - gen_mask) * crops
        displacement = fit_structure_warp(self.structure(composite).float(), structure.float(),
                                          **lock_detail_options(detail))
        return apply_warp(generated, displacement, strength), apply_warp(gen_mask, displacement, strength)


def _cosines(values: torch.Tensor) -> str:
    return ", ".join(f"{float(v):.3f}" for v in values)


def _structure_mapper_for(generator: FewShotGenerator | None, model_dir: Path | None, device) -> StructureMapper:
    """The structure mapper the generator was trained with (its config records the mapper's name).

    Without a generator (detect/encode/preview only) the parser is used when its weights ship.
    """
    from .parsing.mapper import ParserStructureMapper, default_parser_path

    if generator is None:
        return ParserStructureMapper.from_default(device=device) if default_parser_path().is_file() \
            else LandmarkStructureMapper()
    mapper = ParserStructureMapper.from_default(device=device) if generator.config.structure == "parser" \
        else LandmarkStructureMapper()
    generator.config.check_mapper(mapper)
    return mapper
