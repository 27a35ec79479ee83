"""A target person's identity: averaged unit embeddings of 1..N photos, with an outlier report.

Averaging unit vectors and normalising again is what the generator was trained
with; a photo of someone else drags the average away, so each photo is compared
with the mean of the others and reported when it disagrees.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import InputShapeError, ModelFileMissingError, WeightsMismatchError

# Cosine similarity of FaceNet (128-D) embeddings below which a photo is likely
# another person: same-person LFW pairs sit far above it (see docs/BENCHMARKS.md).
DEFAULT_OUTLIER_THRESHOLD = 0.35

IDENTITY_FORMAT = "fewshot-identity-v1"


@dataclass
class IdentityEmbedding:
    """The averaged identity of one person and how each photo agreed with it."""

    vector: torch.Tensor  # [D], unit norm
    per_photo: torch.Tensor  # [K, D], unit norm
    agreement: torch.Tensor  # [K], cosine of each photo to the mean of the others (1.0 when K == 1)
    outliers: list[int] = field(default_factory=list)
    embedder: str = "facenet128"
    # [K, 2, 3]: each photo's skin colour, Lab mean and std (`skin_tone.py`; NaN rows where no skin was found).
    # None for identities saved before it existed.
    skin: torch.Tensor | None = None

    @property
    def num_photos(self) -> int:
        return int(self.per_photo.shape[0])

    @property
    def skin_tone(self) -> torch.Tensor | None:
        """The person's skin statistics [2, 3], from the photos that are not outliers; None if unknown."""
        if self.skin is None:
            return None
        from .skin_tone import mean_skin_statistics

        keep = [i for i in range(self.skin.shape[0]) if i not in self.outliers] or list(range(self.skin.shape[0]))
        return mean_skin_statistics(self.skin[keep])

    def report(self) -> str:
        """A short human-readable line per photo, for the node's UI and the CLI."""
        lines = [f"identity from {self.num_photos} photo(s), embedder {self.embedder}"]
        no_skin = [] if self.skin is None else torch.isnan(self.skin).any(dim=(1, 2)).tolist()
        for index, score in enumerate(self.agreement.tolist()):
            flag = "  <- likely a different person" if index in self.outliers else ""
            if no_skin and no_skin[index]:
                flag += "  (no skin tone: black and white, or the skin is hidden)"
            lines.append(f"photo {index}: similarity to the others {score:.2f}{flag}")
        return "\n".join(lines)


def average_identity(
    embeddings: torch.Tensor,
    outlier_threshold: float = DEFAULT_OUTLIER_THRESHOLD,
    embedder: str = "facenet128",
    skin: torch.Tensor | None = None,
) -> IdentityEmbedding:
    """Average K photo embeddings [K, D] into one identity and flag photos that disagree.

    `skin` [K, 2, 3]: the photos' skin statistics (`skin_tone.skin_statistics`), kept with the identity."""
    if embeddings.ndim != 2 or embeddings.shape[0] < 1:
        raise InputShapeError(f"Expected embeddings of shape [K, D] with K >= 1, got {tuple(embeddings.shape)}.")
    if skin is not None and tuple(skin.shape) != (embeddings.shape[0], 2, 3):
        raise InputShapeError(f"Expected skin statistics of shape [K, 2, 3] = [{embeddings.shape[0]}, 2, 3], "
                              f"got {tuple(skin.shape)}.")
    units = F.normalize(embeddings.float(), dim=1)
    count = units.shape[0]
    if count == 1:
        agreement = torch.ones(1)
    else:
        total = units.sum(dim=0, keepdim=True)
        rest = F.normalize(total - units, dim=1)  # mean of the others, per photo
        agreement = (units * rest).sum(dim=1)
    outliers = [i for i, score in enumerate(agreement.tolist()) if count > 1 and score < outlier_threshold]
    vector = F.normalize(units.mean(dim=0), dim=0)
    return IdentityEmbedding(vector=vector, per_photo=units, agreement=agreement, outliers=outliers, embedder=embedder,
                             skin=None if skin is None else skin.float().cpu())


def blend_identity(source: torch.Tensor, target: torch.Tensor, strength: float) -> torch.Tensor:
    """Spherical interpolation from source (strength 0) to target (strength 1) embeddings, unit norm.

    Works on [D] or [B, D]; slerp keeps the norm at 1, which the generator expects.
    """
    if not 0.0 <= strength <= 1.0:
        raise InputShapeError(f"Identity strength must be within 0..1, got {strength}.")
    source = F.normalize(source.float(), dim=-1)
    target = F.normalize(target.float(), dim=-1).to(source.device).expand_as(source)
    cos = (source * target).sum(dim=-1, keepdim=True).clamp(-1 + 1e-6, 1 - 1e-6)
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    mixed = (torch.sin((1 - strength) * omega) * source + torch.sin(strength * omega) * target) / sin
    return F.normalize(mixed, dim=-1)


def save_identity(identity: IdentityEmbedding, path: str | Path) -> Path:
    """Write an identity as a small safetensors file (vector, per-photo embeddings, agreement)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        "vector": identity.vector.float().contiguous(),
        "per_photo": identity.per_photo.float().contiguous(),
        "agreement": identity.agreement.float().contiguous(),
    }
    if identity.skin is not None:
        tensors["skin"] = identity.skin.float().contiguous()
    metadata = {"format": IDENTITY_FORMAT, "embedder": identity.embedder, "outliers": json.dumps(identity.outliers)}
    save_file(tensors, str(path), metadata=metadata)
    return path


def load_identity(path: str | Path) -> IdentityEmbedding:
    """Read an identity written by `save_identity`, with clear errors for wrong files."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileMissingError(f"Identity file {path} does not exist. Save one with the SaveFewShotIdentity node "
                                    f"or `fewshot-swap --targets ... --save-identity {path}`.")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsMismatchError(f"{path} is not a readable safetensors identity file ({exc}).") from exc
    if metadata.get("format") != IDENTITY_FORMAT or "vector" not in tensors:
        raise WeightsMismatchError(
            f"{path} is not a fewshot-swap identity file (format {metadata.get('format')!r}, "
            f"expected {IDENTITY_FORMAT!r}). Encode the identity again with EncodeTargetIdentity."
        )
    skin = tensors.get("skin")
    per_photo = tensors.get("per_photo", tensors["vector"][None])
    if skin is not None and tuple(skin.shape) != (per_photo.shape[0], 2, 3):
        raise WeightsMismatchError(f"{path} holds skin statistics of shape {list(skin.shape)}, expected "
                                   f"[{per_photo.shape[0]}, 2, 3]. Encode the identity again with "
                                   f"EncodeTargetIdentity.")
    return IdentityEmbedding(
        vector=tensors["vector"],
        per_photo=per_photo,
        agreement=tensors.get("agreement", torch.ones(1)),
        outliers=json.loads(metadata.get("outliers", "[]")),
        embedder=metadata.get("embedder", "facenet128"),
        skin=skin,
    )
