"""Training batches from the prepared shards: crops, landmarks, embeddings, identities.

Everything lives in memory as uint8/float16 arrays (23k crops at 128 px are
about 1.1 GB), so a batch is an index lookup plus a flip, never a JPEG decode.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import FewShotError
from ..parsing.classes import FLIP_PERMUTATION

# Class index after a horizontal flip (brow_l <-> brow_r, ...), as a lookup table.
CLASS_FLIP = torch.tensor(list(FLIP_PERMUTATION), dtype=torch.long)

# Landmark order after a horizontal flip: the eyes swap, the nose stays, the mouth corners swap.
FLIP_ORDER = [1, 0, 2, 4, 3]


@dataclass
class Batch:
    """One training batch on a device; `identity` holds the conditioning embeddings already chosen."""

    crops: torch.Tensor  # [B, 3, R, R] in [0, 1]
    landmarks: torch.Tensor  # [B, 5, 2] crop px
    own_embedding: torch.Tensor  # [B, D] FaceNet of this photo
    identity_mean: torch.Tensor  # [B, D] mean over this identity's training photos (own when alone)
    identity_index: torch.Tensor  # [B]
    class_maps: torch.Tensor | None = None  # [B, R, R] long, parser classes (MediaPipe-rendered), when loaded


class PreparedFaces:
    """The prepared shards of one split, with per-identity mean embeddings for conditioning."""

    def __init__(self, folder: Path, split: str = "train", datasets: tuple[str, ...] | None = None,
                 max_images: int | None = None, seed: int = 0, with_labels: bool = False) -> None:
        shards = sorted(p for p in folder.glob("*.npz") if not p.name.endswith(".tmp.npz"))
        if datasets:
            shards = [p for p in shards if p.name.rsplit("_", 1)[0] in datasets]
        if not shards:
            raise FewShotError(f"No prepared shards in {folder}. Run `python -m fewshot_core.train.prepare` first.")
        crops, lms, embs, ids, maps, sources = [], [], [], [], [], []
        for shard in shards:
            label_file = folder / "labels" / shard.name
            if with_labels and not label_file.is_file():
                print(f"note: {shard.name} has no MediaPipe labels yet; left out")
                continue
            with np.load(shard) as data:
                keep = ~data["heldout"] if split == "train" else data["heldout"]
                if with_labels:
                    with np.load(label_file) as labels:
                        keep = keep & labels["found"]
                        maps.append(labels["class_maps"][keep])
                crops.append(data["crops"][keep])
                lms.append(data["landmarks"][keep])
                embs.append(data["embeddings"][keep].astype(np.float32))
                ids.extend(data["identities"][keep].tolist())
                # the dataset from the identity's prefix ("utkface/..."), which survives packing
                sources.extend(name.split("/", 1)[0] for name in data["identities"][keep].tolist())
        self.crops = np.concatenate(crops)
        self.landmarks = np.concatenate(lms)
        self.embeddings = np.concatenate(embs)
        names = sorted(set(ids))
        lookup = {name: i for i, name in enumerate(names)}
        self.identity = np.array([lookup[name] for name in ids], dtype=np.int64)
        self.class_maps = np.concatenate(maps) if with_labels else None
        self.dataset = np.array(sources)  # which dataset each crop came from, for weighted sampling
        if max_images is not None and max_images < len(self.identity):
            pick = np.sort(np.random.default_rng(seed).choice(len(self.identity), max_images, replace=False))
            self.crops, self.landmarks = self.crops[pick], self.landmarks[pick]
            if self.class_maps is not None:
                self.class_maps = self.class_maps[pick]
            self.embeddings, self.identity = self.embeddings[pick], self.identity[pick]
            self.dataset = self.dataset[pick]
        self.identity_names = names
        sums = np.zeros((len(names), self.embeddings.shape[1]), np.float32)
        np.add.at(sums, self.identity, self.embeddings)
        self.identity_means = sums / np.linalg.norm(sums, axis=1, keepdims=True).clip(1e-6)
        self.resolution = int(self.crops.shape[1])

    def sampling_probabilities(self, dataset_weights: dict[str, float]) -> np.ndarray | None:
        """Per-crop draw probabilities from per-dataset weights (absent datasets weigh 1); None when uniform.

        Why: UTKFace is the one race-balanced source, but only 15% of the crops; weighting it up
        gives the under-represented groups more of the training signal.
        """
        if not dataset_weights:
            return None
        unknown = sorted(set(dataset_weights) - set(self.dataset.tolist()))
        if unknown:
            raise ValueError(f"dataset_weights names datasets not in the training data: {unknown}; "
                             f"it has {sorted(set(self.dataset.tolist()))} (the identities' prefixes)")
        weights = np.array([dataset_weights.get(name, 1.0) for name in self.dataset], dtype=np.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError(f"dataset_weights must be non-negative and not all zero, got {dataset_weights}")
        return weights / weights.sum()

    def __len__(self) -> int:
        return len(self.identity)

    def batch(self, index: np.ndarray, device: torch.device, rng: np.random.Generator, flip: bool = True) -> Batch:
        crops = torch.from_numpy(self.crops[index]).permute(0, 3, 1, 2).float().div_(255)
        lms = torch.from_numpy(self.landmarks[index]).clone()
        maps = torch.from_numpy(self.class_maps[index]).long() if self.class_maps is not None else None
        if flip:
            mask = torch.from_numpy(rng.random(len(index)) < 0.5)
            if mask.any():
                crops[mask] = crops[mask].flip(-1)
                flipped = lms[mask][:, FLIP_ORDER]
                flipped[..., 0] = self.resolution - 1 - flipped[..., 0]
                lms[mask] = flipped
                if maps is not None:  # mirror the map and swap the left/right classes
                    maps[mask] = CLASS_FLIP[maps[mask].flip(-1)]
        identity = self.identity[index]
        return Batch(
            crops=crops.to(device),
            landmarks=lms.to(device),
            own_embedding=F.normalize(torch.from_numpy(self.embeddings[index]), dim=1).to(device),
            identity_mean=torch.from_numpy(self.identity_means[identity]).to(device),
            identity_index=torch.from_numpy(identity).to(device),
            class_maps=maps.to(device) if maps is not None else None,
        )


def soft_class_maps(class_maps: torch.Tensor, channels: int, soften_px: int = 1) -> torch.Tensor:
    """Hard class maps [B, R, R] -> soft one-hot [B, N, R, R] summing to 1, edges blurred like a parser's softmax."""
    one_hot = F.one_hot(class_maps.clamp(0, channels - 1), channels).permute(0, 3, 1, 2).float()
    if soften_px > 0:
        k = 2 * soften_px + 1
        one_hot = F.avg_pool2d(one_hot, k, stride=1, padding=soften_px, count_include_pad=False)
    return one_hot
