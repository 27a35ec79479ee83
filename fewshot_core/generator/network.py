"""The one generator for every identity: source + structure in, identity-swapped face out.

Encoder: the degraded source crop concatenated with the structure map, strided
convs down to R / 2**n_down. Bottleneck: AdaIN residual blocks whose
scale/shift come from the identity code through an MLP. Decoder: SPADE
residual blocks (structure per pixel, identity per channel when
`decoder_adain`) with nearest upsampling; the lowest `n_skips` levels also get
the encoder's features, which carry pose and lighting at the resolution the
source keeps after degradation. Heads: RGB (sigmoid) and a soft blend mask.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputShapeError
from .config import GeneratorConfig
from .layers import AdaINResBlock, SPADEResBlock

_SLOPE = 0.2


class IdentityMLP(nn.Module):
    """Maps a unit-norm identity embedding to the style vector every AdaIN reads."""

    def __init__(self, id_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        width = id_dim
        for _ in range(layers):
            mods += [nn.Linear(width, hidden), nn.LeakyReLU(_SLOPE)]
            width = hidden
        self.net = nn.Sequential(*mods)

    def forward(self, identity: Tensor) -> Tensor:
        return self.net(identity)


class FewShotGenerator(nn.Module):
    """forward(source [B,3,R,R], structure [B,N,R,R], identity [B,id_dim]) -> (rgb [B,3,R,R], mask [B,1,R,R]).

    Computes in the parameters' dtype and returns in `source.dtype`; both
    outputs lie in [0, 1]. `identity` is re-normalised to unit length, so an
    averaged (shorter) embedding is accepted as is.
    """

    def __init__(self, cfg: GeneratorConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or GeneratorConfig()
        cfg.validate()
        self.config = cfg
        ch = [cfg.channels_at(i) for i in range(cfg.n_down + 1)]
        style_dim = cfg.mlp_hidden

        self.stem = nn.Conv2d(3 + cfg.struct_channels, ch[0], 3, padding=1)
        self.down = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(ch[i], ch[i + 1], 3, stride=2, padding=1), nn.LeakyReLU(_SLOPE),
                nn.Conv2d(ch[i + 1], ch[i + 1], 3, padding=1), nn.LeakyReLU(_SLOPE),
            )
            for i in range(cfg.n_down)
        )
        self.mlp = IdentityMLP(cfg.id_dim, cfg.mlp_hidden, cfg.mlp_layers)
        self.bottleneck = nn.ModuleList(AdaINResBlock(ch[-1], style_dim) for _ in range(cfg.n_adain_blocks))
        dec_style = style_dim if cfg.decoder_adain else None
        # decoder block k runs at level k (R / 2**k) and maps ch[k] -> ch[k-1] (ch[0] at level 0)
        self.up = nn.ModuleList(
            SPADEResBlock(ch[k], ch[max(k - 1, 0)], cfg.struct_channels, cfg.spade_hidden, dec_style)
            for k in range(cfg.n_down, -1, -1)
        )
        self.skip_levels = list(range(cfg.n_down - 1, cfg.n_down - 1 - cfg.n_skips, -1))
        self.skips = nn.ModuleDict({str(k): nn.Conv2d(ch[k], ch[k], 1) for k in self.skip_levels})
        self.head = nn.Conv2d(ch[0], 4, 3, padding=1)

    @property
    def cfg(self) -> GeneratorConfig:
        """Short alias of `config`."""
        return self.config

    # ------------------------------------------------------------------ checks
    def _check_inputs(self, batch: int | None, **inputs: Tensor) -> None:
        """Shapes, dtypes and batch sizes of the named inputs (`source`, `structure`, `identity`); `batch` is the
        source's batch size, or None to take it from `source`."""
        cfg = self.config
        r, n = cfg.resolution, cfg.struct_channels
        source = inputs.get("source")
        if batch is None and isinstance(source, Tensor) and source.ndim == 4:
            batch = source.shape[0]
        shapes = {
            "source": ((3, r, r), f"[B, 3, {r}, {r}] (the degraded source crop in [0, 1])"),
            "structure": ((n, r, r), f"[B, {n}, {r}, {r}] (the structure map)"),
            "identity": ((cfg.id_dim,), f"[B, {cfg.id_dim}] (the identity embedding)"),
        }
        for name, t in inputs.items():
            tail, text = shapes[name]
            if not isinstance(t, Tensor) or t.ndim != len(tail) + 1 or tuple(t.shape[1:]) != tail:
                got = list(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise InputShapeError(f"Generator input '{name}' must have shape {text}, got {got}.")
            if not t.is_floating_point():
                raise InputShapeError(f"Generator input '{name}' must be a float tensor, got {t.dtype}.")
            if batch is not None and t.shape[0] != batch:
                raise InputShapeError(
                    f"Generator input '{name}' has batch size {t.shape[0]} but source has {batch}; "
                    "pass one structure map and one identity per source crop."
                )

    # ----------------------------------------------------------------- forward
    def forward(self, source: Tensor, structure: Tensor, identity: Tensor) -> tuple[Tensor, Tensor]:
        return self.render(self.condition(source, structure, keep_modulations=False), identity)

    def condition(self, source: Tensor, structure: Tensor, keep_modulations: bool = True) -> SourceCondition:
        """Everything the generator computes from the source and its structure map alone: the encoder's
        features, the skip terms and every SPADE modulation. None of it depends on the identity, so the
        identity refinement, which renders one source under ten codes, computes it once (`render`).

        `keep_modulations` False leaves the SPADE modulations to `render`, block by block, so a single
        pass holds no more at once than it needs (a few MB a face at 128 px)."""
        self._check_inputs(None, source=source, structure=structure)
        out_dtype = source.dtype
        dtype = self.head.weight.dtype
        source, structure = source.to(dtype), structure.to(dtype)
        x = F.leaky_relu(self.stem(torch.cat([source, structure], dim=1)), _SLOPE)
        feats = [x]
        for block in self.down:
            x = block(x)
            feats.append(x)
        n_down = self.config.n_down
        skips: dict[int, Tensor] = {}
        modulations: list[tuple[Tensor, Tensor]] | None = [] if keep_modulations else None
        for i, block in enumerate(self.up):
            level = n_down - i
            if str(level) in self.skips:
                skips[level] = self.skips[str(level)](feats[level])
            if modulations is not None:
                modulations.append(block.modulations(structure, (feats[level].shape[-2], feats[level].shape[-1])))
        return SourceCondition(bottom=x, skips=skips, structure=structure, modulations=modulations,
                               out_dtype=out_dtype)

    def render(self, condition: SourceCondition, identity: Tensor) -> tuple[Tensor, Tensor]:
        """The face for `identity` [B, id_dim] from a `condition` of the same batch; equal to `forward`."""
        self._check_inputs(condition.bottom.shape[0], identity=identity)
        dtype = self.head.weight.dtype
        style = self.mlp(F.normalize(identity.float(), dim=1).to(dtype))
        x = condition.bottom
        for block in self.bottleneck:
            x = block(x, style)
        n_down, kept = self.config.n_down, condition.modulations
        for i, block in enumerate(self.up):
            level = n_down - i
            if level in condition.skips:
                x = x + condition.skips[level]
            x = block(x, condition.structure, style, kept[i] if kept is not None else None)
            if level > 0:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        out = self.head(F.leaky_relu(x, _SLOPE))
        rgb = torch.sigmoid(out[:, :3])
        mask = torch.sigmoid(out[:, 3:4])
        return rgb.to(condition.out_dtype), mask.to(condition.out_dtype)


@dataclass
class SourceCondition:
    """The identity-free part of one generator pass (`FewShotGenerator.condition`), in the generator's dtype:
    the encoder's bottom features, the skip terms by level, the structure map, each decoder block's two SPADE
    modulations (None: `render` computes them from the map), and the dtype the caller's source came in (the
    outputs' dtype)."""

    bottom: Tensor
    skips: dict[int, Tensor]
    structure: Tensor
    modulations: list[tuple[Tensor, Tensor]] | None
    out_dtype: torch.dtype


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
