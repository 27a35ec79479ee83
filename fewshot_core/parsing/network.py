"""A small face parser: aligned crop [B,3,R,R] in [0,1] -> class logits [B,12,R,R].

Why this shape: it must run in ~10 ms per 128 px face on two CPU cores, and its
classes range from the whole face down to irises ~6 px across. So a U-Net with
a stride-2 stem and depthwise-separable blocks does the expensive context work
at 1/16..1/4 resolution, and a thin full-resolution branch (a few channels
straight from the pixels) restores the 1 px edges of eyes, irises and lips.
It is fully convolutional, so any R that is a multiple of 16 works (others are
padded); the mapper resizes crops to the training resolution where the face
scale matters.

Files: safetensors with the state dict (fp16 by default) and metadata
"format" = "fewshot-parser-v1", "parser_config" = `ParserConfig` as JSON.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from ..state_check import state_dict_mismatch
from ..errors import InputShapeError, ModelFileMissingError, WeightsMismatchError
from .classes import NUM_CLASSES, PARSE_CLASSES

FORMAT = "fewshot-parser-v1"
CONFIG_KEY = "parser_config"
# Per-class logit offsets fitted after training (`parsing/calibrate.py`); belong to one set of weights only,
# so `save_parser` never carries them over to a retrained parser.
CLASS_BIAS_KEY = "class_logit_bias"


@dataclass(frozen=True)
class ParserConfig:
    """Everything needed to rebuild the network; stored inside the weights file."""

    widths: tuple[int, ...] = (32, 64, 128, 256)  # channels at 1/2, 1/4, 1/8, 1/16 resolution
    blocks: tuple[int, ...] = (1, 3, 4, 4)        # residual blocks after each downsampling
    full_res: int = 12                            # head channels per output pixel (x4 at half resolution)
    classes: tuple[str, ...] = field(default_factory=lambda: tuple(PARSE_CLASSES))
    resolution: int = 128                         # crop side the weights were trained at

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ParserConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise WeightsMismatchError(f"parser config has unknown fields {unknown}; the file is from a newer version.")
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        cfg = cls(**kw)
        if len(cfg.widths) != 4 or len(cfg.blocks) != 4:
            raise WeightsMismatchError(f"parser config needs 4 widths and 4 block counts, got {cfg.widths}, {cfg.blocks}.")
        return cfg


def _bn_act(c: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]


class SepConv(nn.Sequential):
    """Depthwise 3x3 (optionally strided) then pointwise 1x1, each with BN + ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cin, 3, stride, padding=dilation, dilation=dilation, groups=cin, bias=False),
            *_bn_act(cin),
            nn.Conv2d(cin, cout, 1, bias=False),
            *_bn_act(cout),
        )


class ResBlock(nn.Module):
    """x + SepConv(x): cheap depth for context."""

    def __init__(self, c: int, dilation: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation, groups=c, bias=False),
            nn.BatchNorm2d(c),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.body(x))


class UpFuse(nn.Module):
    """Upsample the coarse features 2x, project to the skip's width, add, refine."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.refine = SepConv(cout, cout)

    def forward(self, coarse: Tensor, skip: Tensor) -> Tensor:
        up = F.interpolate(self.proj(coarse), size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.refine(F.relu(up + skip))


class FaceParser(nn.Module):
    """Lightweight U-Net face parser; forward returns logits [B, len(classes), H, W].

    Full resolution is never convolved: the crop is folded 2x2 into channels
    (pixel unshuffle) on the way in, and the head predicts the 2x2 sub-pixel
    logits of every 64 px cell (pixel shuffle) on the way out, seeing the folded
    raw pixels again so edges stay at 1 px precision.
    """

    def __init__(self, config: ParserConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or ParserConfig()
        self.class_bias: Tensor | None = None  # [classes] logit offsets read from the file; the mapper adds them
        w, n = cfg.widths, cfg.blocks
        self.stem = nn.Sequential(nn.Conv2d(12, w[0], 3, 1, 1, bias=False), *_bn_act(w[0]))
        self.stem_blocks = nn.Sequential(*[ResBlock(w[0]) for _ in range(n[0])])
        self.down = nn.ModuleList()
        for i in range(1, 4):
            dil = [1, 2, 4, 1, 2, 4][: n[i]] if i == 3 else [1] * n[i]
            self.down.append(nn.Sequential(SepConv(w[i - 1], w[i], stride=2), *[ResBlock(w[i], d) for d in dil]))
        # Image-level context (pose, lighting) as a channel gate at the coarsest scale.
        self.context = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(w[3], w[3], 1), nn.Sigmoid())
        self.up = nn.ModuleList([UpFuse(w[3], w[2]), UpFuse(w[2], w[1]), UpFuse(w[1], w[0])])
        head_in = w[0] + 12
        self.head = nn.Sequential(
            nn.Conv2d(head_in, cfg.full_res * 4, 3, padding=1, bias=False),
            *_bn_act(cfg.full_res * 4),
            nn.Conv2d(cfg.full_res * 4, 4 * len(cfg.classes), 1),
        )

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.classes

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputShapeError(f"the parser takes crops [B, 3, H, W] in [0, 1]; got {list(x.shape)}.")
        h, w = x.shape[-2:]
        ph, pw = (-h) % 16, (-w) % 16
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        folded = F.pixel_unshuffle(x * 2.0 - 1.0, 2)
        s0 = self.stem_blocks(self.stem(folded))
        s1 = self.down[0](s0)
        s2 = self.down[1](s1)
        s3 = self.down[2](s2)
        s3 = s3 * self.context(s3)
        y = self.up[0](s3, s2)
        y = self.up[1](y, s1)
        y = self.up[2](y, s0)
        logits = F.pixel_shuffle(self.head(torch.cat([y, folded], dim=1)), 2)
        return logits[..., :h, :w]


@torch.no_grad()
def fuse_batchnorm(model: FaceParser) -> FaceParser:
    """A copy of an eval-mode parser with every BatchNorm folded into the convolution before it.

    Same outputs (up to float rounding), a third fewer ops per forward: at batch 1 on CPU the
    per-op overhead is a good part of the ~5 ms. Inference only: the copy cannot be trained or saved.
    """
    fused = copy.deepcopy(model).eval()
    for seq in fused.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
            new = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                            conv.dilation, conv.groups, bias=True).to(conv.weight)
            new.weight.copy_(conv.weight * scale[:, None, None, None])
            new.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
            seq[i], seq[i + 1] = new, nn.Identity()
    return fused


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def iris_centres_from_probs(probs: Tensor, iris_l: int, iris_r: int, eye_l: int, eye_r: int) -> Tensor:
    """Iris centres [B, 2, 2] (x, y px; image's left then right) as the centroid of each iris's probability.

    The eye opening's probability enters with a weight of 1%, so a closed eye (no iris
    pixels) still gets a centre, on the lid line, instead of a division by zero.
    """
    b, _, h, w = probs.shape
    ys = torch.arange(h, device=probs.device, dtype=probs.dtype)
    xs = torch.arange(w, device=probs.device, dtype=probs.dtype)
    out = []
    for iris, eye in ((iris_l, eye_l), (iris_r, eye_r)):
        m = probs[:, iris] + 0.01 * probs[:, eye]
        m = m * (m > 0.05 * m.amax(dim=(1, 2), keepdim=True))   # drop faint far-away mass
        total = m.sum(dim=(1, 2)).clamp_min(1e-6)
        cx = (m.sum(dim=1) * xs).sum(dim=1) / total
        cy = (m.sum(dim=2) * ys).sum(dim=1) / total
        out.append(torch.stack([cx, cy], dim=-1))
    return torch.stack(out, dim=1)


# --- files -------------------------------------------------------------------------------------------


def save_parser(model: FaceParser, path: str | os.PathLike[str], dtype: torch.dtype = torch.float16,
                extra_metadata: dict[str, str] | None = None) -> Path:
    """Write the weights (floats cast to `dtype`) and config to `path`; returns the path."""
    state = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).cpu().contiguous()
             for k, v in model.state_dict().items()}
    meta = dict(extra_metadata or {})
    meta.update({"format": FORMAT, CONFIG_KEY: json.dumps(model.config.to_dict(), sort_keys=True)})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata=meta)
    return path


def _foreign(path: Path, why: str) -> WeightsMismatchError:
    return WeightsMismatchError(
        f"{path} is not a fewshot face-parser file ({why}). Fix: point at weights/parser_128.safetensors "
        "or train one with `python -m fewshot_core.parsing.train`."
    )


def load_parser(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> FaceParser:
    """Build the parser described by the file at `path`, load its weights (float32, eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileMissingError(
            f"Face-parser weights not found at {path}. Fix: restore weights/parser_128.safetensors from the "
            "repository, or train them with `python -m fewshot_core.parsing.train --labels DIR --out PATH`."
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise _foreign(path, f"metadata format {meta.get('format')!r}, expected {FORMAT!r}")
            try:
                cfg = ParserConfig.from_dict(json.loads(meta[CONFIG_KEY]))
            except (KeyError, json.JSONDecodeError, TypeError) as exc:
                raise _foreign(path, f"unreadable '{CONFIG_KEY}' metadata: {exc}") from exc
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except WeightsMismatchError:
        raise
    except Exception as exc:  # safetensors raises several types for corrupt or foreign files
        raise _foreign(path, f"unreadable safetensors: {exc}") from exc
    model = FaceParser(cfg)
    problem = state_dict_mismatch(model, tensors)
    if problem:
        raise _foreign(path, problem)
    model.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in tensors.items()})
    if CLASS_BIAS_KEY in meta:
        try:
            bias = torch.tensor(json.loads(meta[CLASS_BIAS_KEY]), dtype=torch.float32)
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise _foreign(path, f"unreadable '{CLASS_BIAS_KEY}' metadata: {exc}") from exc
        if bias.shape != (len(cfg.classes),):
            raise _foreign(path, f"'{CLASS_BIAS_KEY}' has {bias.numel()} values for {len(cfg.classes)} classes")
        model.class_bias = bias.to(device)
    return model.to(device).eval()


def read_parser_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata of a parser file (format, config, training notes) without loading tensors."""
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


__all__ = ["FaceParser", "ParserConfig", "load_parser", "save_parser", "count_parameters", "fuse_batchnorm",
           "iris_centres_from_probs", "read_parser_metadata", "NUM_CLASSES"]
