"""The fewshot-swap nodes: thin wrappers around `fewshot_core`, described once as `NodeSpec`s."""
from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path

import torch

from fewshot_core.errors import InputShapeError, ModelFileMissingError
from fewshot_core.identity import DEFAULT_OUTLIER_THRESHOLD, IdentityEmbedding, load_identity, save_identity
from fewshot_core.identity_refine import MAX_REFINE_STEPS
from fewshot_core.paste import composite
from fewshot_core.pipeline import SwapModel, SwapSettings, parse_face_indices
from fewshot_core.skin_tone import SHIFT_CHANNELS
from fewshot_core.structure_lock import LOCK_DETAIL

from . import host
from .spec import NodeSpec, Out, Param

log = logging.getLogger("fewshot_swap")

NO_GENERATOR = "none (detect and encode only)"
MODEL, IDENTITY = "FEWSHOT_MODEL", "FEWSHOT_IDENTITY"


def to_core(image: torch.Tensor, what: str) -> torch.Tensor:
    """ComfyUI IMAGE [B, H, W, C] -> core [B, 3, H, W] (alpha dropped)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InputShapeError(f"{what}: expected a ComfyUI IMAGE of shape [B, H, W, 3], got {shape}.")
    return image[..., :3].permute(0, 3, 1, 2).float()


def to_comfy(images: torch.Tensor) -> torch.Tensor:
    """Core [B, 3, H, W] -> ComfyUI IMAGE [B, H, W, 3] on the CPU."""
    return images.permute(0, 2, 3, 1).clamp(0, 1).contiguous().cpu()


def mask_to_core(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """ComfyUI MASK [B, H, W] or [H, W] -> [B, 1, H, W], broadcast over the batch of `like`."""
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3:
        raise InputShapeError(f"mask: expected a ComfyUI MASK of shape [B, H, W], got {tuple(mask.shape)}.")
    mask = mask[:, None].float()
    if mask.shape[0] == 1 and like.shape[0] > 1:
        mask = mask.expand(like.shape[0], -1, -1, -1)
    return mask


# ------------------------------------------------------------------- loading
@lru_cache(maxsize=2)
def _load_model(path: str | None, mtime: float, device: str, dtype: torch.dtype, model_dir: str) -> SwapModel:
    return SwapModel.load(path, model_dir=Path(model_dir), device=device, dtype=dtype)


def load_model(generator: str, device: str, precision: str) -> tuple:
    torch_device = host.pick_device(device)
    dtype = host.pick_dtype(precision, torch_device)
    path = None
    if generator != NO_GENERATOR:
        path = host.generator_path(generator)
        if path is None:
            raise ModelFileMissingError(
                f"Generator file {generator!r} is not in any 'fewshot' model folder. Put it into ComfyUI/models/fewshot "
                f"or the pack's weights/ folder, then refresh.")
    mtime = path.stat().st_mtime if path else 0.0
    model = _load_model(str(path) if path else None, mtime, str(torch_device), dtype, str(host.primary_model_dir()))
    log.info("fewshot-swap: loaded %s on %s (%s)", generator, torch_device, dtype)
    return (model,)


def generator_choices() -> list[str]:
    return host.generator_files() + [NO_GENERATOR]


# ------------------------------------------------------------------ identity
def encode_identity(model: SwapModel, images: torch.Tensor, outlier_threshold: float) -> tuple:
    identity = model.encode_identity(to_core(images, "target photos"), outlier_threshold=outlier_threshold)
    report = identity.report()
    log.info("fewshot-swap: %s", report.replace("\n", "; "))
    if identity.outliers:
        log.warning("fewshot-swap: target photo(s) %s look like a different person", identity.outliers)
    return identity, report


def save_identity_node(identity: IdentityEmbedding, name: str) -> tuple:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name.strip()) or "identity"
    path = host.identity_dir() / f"{safe}.safetensors"
    save_identity(identity, path)
    log.info("fewshot-swap: identity saved to %s", path)
    return ()


def load_identity_node(name: str) -> tuple:
    path = host.identity_path(name)
    if path is None:
        raise ModelFileMissingError(f"Identity {name!r} not found in {host.identity_dir()}. Save one with "
                                    f"SaveFewShotIdentity first.")
    return (load_identity(path),)


# ---------------------------------------------------------------------- swap
def swap(model: SwapModel, identity: IdentityEmbedding, image: torch.Tensor, faces: str, order: str,
         strength: float, feather: float, color_match: bool, min_face_size: int, chunk_size: int,
         temporal_smoothing: float = 0.0, structure_lock: float = SwapSettings.structure_lock,
         lock_detail: str = SwapSettings.lock_detail, source_detail_px: int = SwapSettings.source_detail_px,
         photo_detail: float = SwapSettings.photo_detail,
         identity_refine_steps: int = SwapSettings.identity_refine_steps,
         target_skin_tone: float = SwapSettings.target_skin_tone,
         skin_tone_channels: str = SwapSettings.skin_tone_channels) -> tuple:
    images = to_core(image, "source image")
    settings = SwapSettings(faces=parse_face_indices(faces), order=order, strength=strength,
                            feather_px=feather, color_match=color_match, min_face_size=min_face_size,
                            temporal_smoothing=temporal_smoothing, structure_lock=structure_lock,
                            lock_detail=lock_detail, source_detail_px=source_detail_px, photo_detail=photo_detail,
                            identity_refine_steps=identity_refine_steps, target_skin_tone=target_skin_tone,
                            skin_tone_channels=skin_tone_channels)
    out, mask = model.swap(images, identity, settings, chunk_size=chunk_size,
                           progress=host.progress_reporter(images.shape[0]), check_interrupt=host.interrupt_check)
    return to_comfy(out), mask[:, 0].cpu()


def mask_composite(original: torch.Tensor, processed: torch.Tensor, mask: torch.Tensor, feather: float,
                   color_match: bool) -> tuple:
    base = to_core(original, "original")
    edited = to_core(processed, "processed")
    if edited.shape[0] not in (1, base.shape[0]):
        raise InputShapeError(f"processed has {edited.shape[0]} images but original has {base.shape[0]}: "
                              f"pass batches of the same length (or a single processed image).")
    out, _ = composite(base, edited.expand(base.shape[0], -1, -1, -1) if edited.shape[0] == 1 else edited,
                    mask_to_core(mask, base), feather, color_match)
    return (to_comfy(out),)


def structure_map(model: SwapModel, image: torch.Tensor) -> tuple:
    from fewshot_core.structure_preview import render_structure_preview

    return (to_comfy(render_structure_preview(model, to_core(image, "image"))),)


def face_indices(model: SwapModel, image: torch.Tensor, order: str, min_face_size: int) -> tuple:
    from fewshot_core.face_preview import face_index_preview

    images = to_core(image, "image")
    preview, report = face_index_preview(images, model.detect(images, min_face_size=min_face_size), order)
    log.info("fewshot-swap face indices (%s):\n%s", order, report)
    return to_comfy(preview), report


# --------------------------------------------------------------------- specs
MODEL_IN = Param("model", MODEL, tooltip="from Load Few-Shot Swap Model")

SPECS: list[NodeSpec] = [
    NodeSpec(
        node_id="LoadFewShotModel",
        display_name="Load Few-Shot Swap Model",
        description="Loads the face detector, the identity embedder and a generator from the 'fewshot' model folder.",
        inputs=[
            Param("generator", "COMBO", options=generator_choices, tooltip="generator weights (.safetensors)"),
            Param("device", "COMBO", options=["auto", "cpu", "cuda"], default="auto"),
            Param("precision", "COMBO", options=["auto", "fp32", "fp16", "bf16"], default="auto",
                  tooltip="auto: fp16 on CUDA, fp32 on CPU"),
        ],
        outputs=[Out(MODEL, "model")],
        run=load_model,
    ),
    NodeSpec(
        node_id="EncodeTargetIdentity",
        display_name="Encode Target Identity",
        description="Averages the identity of 1-5 (or more) photos of one person; reports photos that look like "
                    "someone else.",
        inputs=[
            MODEL_IN,
            Param("images", "IMAGE", tooltip="1-5 photos of the target person (a batch)"),
            Param("outlier_threshold", "FLOAT", default=DEFAULT_OUTLIER_THRESHOLD, min=-1.0, max=1.0, step=0.01,
                  tooltip="a photo whose similarity to the others is below this is reported"),
        ],
        outputs=[Out(IDENTITY, "identity"), Out("STRING", "report")],
        run=encode_identity,
    ),
    NodeSpec(
        node_id="FewShotSwap",
        display_name="Few-Shot Face Swap",
        description="Re-renders the faces of the source images with the target identity, keeping pose, expression, "
                    "gaze and occlusions. Returns the images and the mask of what was replaced.",
        inputs=[
            MODEL_IN,
            Param("identity", IDENTITY),
            Param("image", "IMAGE", tooltip="source image(s); a batch is processed as video frames"),
            Param("faces", "STRING", default="all", tooltip="'all' or indices like '0,2' in the chosen order"),
            Param("order", "COMBO", options=["left_to_right", "largest_first"], default="left_to_right"),
            Param("strength", "FLOAT", default=1.0, min=0.0, max=1.0, step=0.05,
                  tooltip="0 keeps the source identity, 1 is the target"),
            Param("feather", "FLOAT", default=6.0, min=0.0, max=64.0, step=0.5, tooltip="mask feather in pixels"),
            Param("color_match", "BOOLEAN", default=True),
            Param("min_face_size", "INT", default=40, min=12, max=1024, step=1),
            Param("chunk_size", "INT", default=8, min=1, max=256, step=1, tooltip="frames per step"),
            Param("temporal_smoothing", "FLOAT", default=0.0, min=0.0, max=1.0, step=0.05, optional=True,
                  tooltip="for a batch of video frames in order: steadies each face's alignment so the swap "
                          "does not wobble, and refines each face's identity on its first frame only, so it does "
                          "not flicker and later frames are faster (0 off; leave 0 for unrelated images)"),
            Param("structure_lock", "FLOAT", default=SwapSettings.structure_lock, min=0.0, max=1.0, step=0.05,
                  optional=True,
                  tooltip="nudges the generated brows, nose, eyes and lips onto the source's with a small smooth "
                          "warp, so expression is kept more faithfully (0 off; about 40 ms per face on 2 CPU cores)"),
            Param("lock_detail", "COMBO", options=sorted(LOCK_DETAIL), default=SwapSettings.lock_detail,
                  optional=True,
                  tooltip="resolution of that warp: 'fine' also moves the parts' outlines, keeping more of the "
                          "source's expression and a little less of the target's face shape (about twice the lock's time)"),
            Param("source_detail_px", "INT", default=SwapSettings.source_detail_px, min=0, max=128, step=1,
                  optional=True,
                  tooltip="size the source face reaches the generator at (0: the model's own setting); larger "
                          "keeps more of the source's expression and lighting, smaller lets more identity through"),
            Param("photo_detail", "FLOAT", default=SwapSettings.photo_detail, min=0.0, max=1.0, step=0.05,
                  optional=True,
                  tooltip="lays the source photo's own fine detail (grain, sharp edges, skin texture), which "
                          "the 128 px generator cannot draw, back over the swapped face, so a large face is as "
                          "sharp as the photo around it; that detail is partly the source's identity (at 1, about "
                          "8 points less identity retrieval in our evaluation). 0 off"),
            Param("identity_refine_steps", "INT", default=SwapSettings.identity_refine_steps, min=0,
                  max=MAX_REFINE_STEPS, step=1, optional=True,
                  tooltip="gradient steps on the identity code so the rendered face carries the target more "
                          "strongly (the default 10 gives 10 to 12 points more identity retrieval in our "
                          "evaluation; each step costs about 0.12 s per face on 2 CPU cores). 0 off, for speed"),
            Param("target_skin_tone", "FLOAT", default=SwapSettings.target_skin_tone, min=0.0, max=1.0, step=0.05,
                  optional=True,
                  tooltip="with color_match on: 0 gives the face the source's skin tone (it fits the neck and "
                          "the photo's light), 1 the target photos' skin tone, measured on their skin; in "
                          "between blends. Needs an identity encoded by this version"),
            Param("skin_tone_channels", "COMBO", options=sorted(SHIFT_CHANNELS),
                  default=SwapSettings.skin_tone_channels, optional=True,
                  tooltip="what target_skin_tone moves: 'colour' only the hue and saturation (the lightness stays "
                          "the source's, so the photo's lighting holds), 'colour+lightness' also how light or dark "
                          "the skin is (the target photos' own lighting comes along)"),
        ],
        outputs=[Out("IMAGE", "image"), Out("MASK", "mask")],
        run=swap,
    ),
    NodeSpec(
        node_id="FaceMaskComposite",
        display_name="Face Mask Composite",
        description="Pastes a processed image (upscaled, inpainted, ...) back into the original inside a mask, "
                    "with feathering and optional colour matching.",
        inputs=[
            Param("original", "IMAGE"),
            Param("processed", "IMAGE", tooltip="resized to the original's size when it differs"),
            Param("mask", "MASK"),
            Param("feather", "FLOAT", default=6.0, min=0.0, max=128.0, step=0.5),
            Param("color_match", "BOOLEAN", default=False),
        ],
        outputs=[Out("IMAGE", "image")],
        run=mask_composite,
    ),
    NodeSpec(
        node_id="SaveFewShotIdentity",
        display_name="Save Few-Shot Identity",
        description="Saves an encoded identity as a small safetensors file, to reuse without the photos.",
        inputs=[Param("identity", IDENTITY), Param("name", "STRING", default="person")],
        outputs=[],
        run=save_identity_node,
        output_node=True,
    ),
    NodeSpec(
        node_id="LoadFewShotIdentity",
        display_name="Load Few-Shot Identity",
        description="Loads an identity saved with Save Few-Shot Identity.",
        inputs=[Param("name", "COMBO", options=host.identity_files)],
        outputs=[Out(IDENTITY, "identity")],
        run=load_identity_node,
    ),
    NodeSpec(
        node_id="FaceStructureMap",
        display_name="Face Structure Map",
        description="Shows the structure map the swap keeps from the source (one aligned face per image).",
        inputs=[MODEL_IN, Param("image", "IMAGE")],
        outputs=[Out("IMAGE", "image")],
        run=structure_map,
    ),
    NodeSpec(
        node_id="FewShotFaceIndices",
        display_name="Preview Face Indices",
        description="Boxes and numbers every face the swap would find, in the swap's order, so you know what to "
                    "put into Few-Shot Face Swap's 'faces' (use the same order and minimum face size there).",
        inputs=[
            MODEL_IN,
            Param("image", "IMAGE"),
            Param("order", "COMBO", options=["left_to_right", "largest_first"], default="left_to_right"),
            Param("min_face_size", "INT", default=40, min=12, max=1024, step=1),
        ],
        outputs=[Out("IMAGE", "image"), Out("STRING", "report")],
        run=face_indices,
    ),
]
