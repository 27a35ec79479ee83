"""A differentiable 68-point landmark judge for training: the parser's network with a landmark head.

Why: the expression figure compares dlib's 68 landmarks of the swap with the source's, after a similarity
alignment, and the swaps lose most on the nose and brows, where the generator draws the target's shapes.
dlib's regression trees give no gradient, so this network learns dlib's points on our training crops
(heatmap per point, soft-argmax to pixels) and a loss can then ask a cross output's points to sit where
the source's are. It starts from the shipped parser's trunk (it already knows where the face parts are)
with a new head of 68 heatmaps. It is a training aid: nothing at run time loads it.

Files: fp16 safetensors, metadata "format" = "fewshot-landmark-judge-v1" and the trunk's `ParserConfig`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from ..errors import InputShapeError, ModelFileMissingError, WeightsMismatchError
from ..parsing.network import FaceParser, ParserConfig, load_parser
from ..paths import cache_root
from ..state_check import state_dict_mismatch

FORMAT = "fewshot-landmark-judge-v1"
CONFIG_KEY = "trunk_config"
POINT_NAMES = tuple(f"lm{i:02d}" for i in range(68))
# iBUG 300-W index after a horizontal flip: jaw reversed, brows swapped, ridge kept, nostrils, eyes, mouth mirrored.
FLIP_68 = (list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
           + [45, 44, 43, 42, 47, 46] + [39, 38, 37, 36, 41, 40] + [54, 53, 52, 51, 50, 49, 48]
           + [59, 58, 57, 56, 55] + [64, 63, 62, 61, 60] + [67, 66, 65])
OUTER_EYE_CORNERS = (36, 45)


def default_judge_path(resolution: int = 128) -> Path:
    """Where `judge_train` writes the judge and the trainer looks for it (a cache file, never in git)."""
    return cache_root() / "judges" / f"landmarks68_{resolution}.safetensors"


def judge_path(name: str | os.PathLike[str]) -> Path:
    """A judge named in a config: a bare file name ("landmarks68_128_seed1.safetensors") lies in the judges
    cache folder beside `default_judge_path`, so a committed recipe names no machine's home; a path is a path."""
    path = Path(name).expanduser()
    return default_judge_path().parent / path if path.parent == Path(".") else path


def soft_argmax(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Heatmap logits [B, P, H, W] -> expected pixel (x, y) [B, P, 2] under each map's softmax."""
    b, p, h, w = logits.shape
    probs = F.softmax(logits.float().flatten(2) / temperature, dim=-1).view(b, p, h, w)
    xs = torch.arange(w, device=logits.device, dtype=torch.float32)
    ys = torch.arange(h, device=logits.device, dtype=torch.float32)
    return torch.stack([(probs.sum(2) * xs).sum(-1), (probs.sum(3) * ys).sum(-1)], dim=-1)


class LandmarkJudge(nn.Module):
    """Aligned crop [B, 3, R, R] in [0, 1] -> 68 landmarks [B, 68, 2] in crop pixels (dlib's scheme).

    The parser's trunk (stem, encoder, decoder up to half resolution) with a 1x1 head of 68 heatmaps at
    R/2: soft-argmax places points between cells, so the parser's full-resolution head, the costliest part
    on CPU, is not needed.
    """

    def __init__(self, config: ParserConfig | None = None) -> None:
        super().__init__()
        self.config = config or ParserConfig()
        self.trunk = FaceParser(self.config)
        del self.trunk.head  # replaced by `points`
        self.points = nn.Conv2d(self.config.widths[0], len(POINT_NAMES), 1)

    def heatmaps(self, crops: Tensor) -> Tensor:
        """Point logits [B, 68, R/2, R/2] (R a multiple of 16)."""
        t = self.trunk
        if crops.ndim != 4 or crops.shape[1] != 3 or crops.shape[-1] % 16 or crops.shape[-2] % 16:
            raise InputShapeError(f"the landmark judge takes crops [B, 3, R, R] in [0, 1], R a multiple of 16; "
                                  f"got {list(crops.shape)}")
        s0 = t.stem_blocks(t.stem(F.pixel_unshuffle(crops * 2.0 - 1.0, 2)))
        s1 = t.down[0](s0)
        s2 = t.down[1](s1)
        s3 = t.down[2](s2)
        s3 = s3 * t.context(s3)
        y = t.up[2](t.up[1](t.up[0](s3, s2), s1), s0)
        return self.points(y)

    def forward(self, crops: Tensor) -> Tensor:
        # cell i of the half-resolution map covers crop pixels 2i and 2i + 1: its centre is 2i + 0.5
        return soft_argmax(self.heatmaps(crops)) * 2.0 + 0.5

    @classmethod
    def from_parser(cls, parser_path: str | os.PathLike[str]) -> "LandmarkJudge":
        """A new judge: the parser file's trunk, a fresh point head."""
        parser = load_parser(parser_path)
        judge = cls(parser.config)
        trunk = {k: v for k, v in parser.state_dict().items() if not k.startswith("head.")}
        judge.trunk.load_state_dict(trunk)
        return judge

    @torch.no_grad()
    def save(self, path: str | os.PathLike[str], metadata: dict[str, str] | None = None) -> Path:
        """fp16 safetensors with the trunk's config; a reader never sees half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to(torch.float16).cpu().contiguous() for k, v in self.state_dict().items()}
        meta = {**(metadata or {}), "format": FORMAT, CONFIG_KEY: json.dumps(self.config.to_dict(), sort_keys=True)}
        partial = path.with_name(path.name + ".partial")
        save_file(state, str(partial), metadata=meta)
        partial.replace(path)
        return path


def load_judge(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> LandmarkJudge:
    """The judge at `path`, frozen (eval mode, no gradients to its weights)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileMissingError(
            f"Landmark judge not found at {path}. Fix: `python -m fewshot_core.train.judge_labels` then "
            f"`python -m fewshot_core.train.judge_train --out {path}`, or set w_landmarks to 0.")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise WeightsMismatchError(f"{path} is not a landmark judge (format {meta.get('format')!r}, expected "
                                           f"{FORMAT!r}); train one with `python -m fewshot_core.train.judge_train`.")
            config = ParserConfig.from_dict(json.loads(meta[CONFIG_KEY]))
            tensors = {k: f.get_tensor(k).float() for k in f.keys()}
    except WeightsMismatchError:
        raise
    except Exception as exc:  # corrupt or foreign files raise several types
        raise WeightsMismatchError(f"{path} is not a readable landmark judge ({exc}); retrain it with "
                                   "`python -m fewshot_core.train.judge_train`.") from exc
    judge = LandmarkJudge(config)
    problem = state_dict_mismatch(judge, tensors)
    if problem:
        raise WeightsMismatchError(f"{path} does not fit the landmark judge network: {problem}")
    judge.load_state_dict(tensors)
    return judge.to(device).eval().requires_grad_(False)


def similarity_aligned_error(moving: Tensor, fixed: Tensor) -> Tensor:
    """[B] mean distance of `moving` [B, P, 2] after its least-squares similarity fit onto `fixed`, over
    `fixed`'s outer-eye-corner distance: the expression figure's formula, differentiable.

    In 2-D the best rotation-and-scale is one complex factor, sum(conj(m) f) / sum(|m|^2), so no SVD.
    """
    m = moving - moving.mean(1, keepdim=True)
    f = fixed - fixed.mean(1, keepdim=True)
    denom = (m ** 2).sum((1, 2)).clamp_min(1e-8)
    a = ((m * f).sum(-1)).sum(1) / denom                                  # real part
    b = ((m[..., 0] * f[..., 1] - m[..., 1] * f[..., 0])).sum(1) / denom  # imaginary part
    aligned_x = a[:, None] * m[..., 0] - b[:, None] * m[..., 1]
    aligned_y = b[:, None] * m[..., 0] + a[:, None] * m[..., 1]
    diff = torch.stack([aligned_x, aligned_y], -1) - f
    dist = torch.sqrt((diff ** 2).sum(-1) + 1e-12)
    left, right = OUTER_EYE_CORNERS
    iod = (fixed[:, right] - fixed[:, left]).norm(dim=-1).clamp_min(1e-6)
    return dist.mean(1) / iod


def blur3(crops: Tensor) -> Tensor:
    """A [1, 2, 1] x [1, 2, 1] / 16 blur per channel, edges replicated.

    Why here: the judge trains on crops partly blurred this way, and the trainer shows it outputs through the
    same low-pass so that a generator cannot move the judge's points with pixel-level texture.
    """
    k = torch.tensor([1.0, 2.0, 1.0], device=crops.device, dtype=crops.dtype) / 4
    kernel = (k[:, None] * k[None, :]).expand(crops.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(crops, (1, 1, 1, 1), mode="replicate"), kernel, groups=crops.shape[1])


def paired_jitter(a: Tensor, b: Tensor, gen: torch.Generator, shift: float = 0.03, scale: float = 0.05,
                  degrees: float = 5.0) -> tuple[Tensor, Tensor]:
    """The same random small similarity (per row) applied to two image batches [B, C, H, W].

    Why: the similarity-aligned point error is unchanged by a shared similarity, but an adversarial texture that
    moves a frozen judge's points rarely survives a random resampling, so the loss keeps only geometric changes.
    """
    n = a.shape[0]
    u = torch.rand(n, 4, generator=gen).to(a.device, a.dtype) * 2 - 1
    zoom = 1 + scale * u[:, 0]
    angle = torch.deg2rad(degrees * u[:, 1])
    theta = torch.zeros(n, 2, 3, device=a.device, dtype=a.dtype)
    theta[:, 0, 0], theta[:, 0, 1] = zoom * torch.cos(angle), -zoom * torch.sin(angle)
    theta[:, 1, 0], theta[:, 1, 1] = zoom * torch.sin(angle), zoom * torch.cos(angle)
    theta[:, :, 2] = 2 * shift * u[:, 2:]
    grid = F.affine_grid(theta, list(a.shape), align_corners=False)
    warp = lambda t: F.grid_sample(t, grid.to(t.dtype), mode="bilinear", padding_mode="border",  # noqa: E731
                                   align_corners=False)
    return warp(a), warp(b)
