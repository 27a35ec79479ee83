"""Generator hyper-parameters, stored inside every weights file.

The config travels in the safetensors metadata so a file alone is enough to
rebuild its network; `from_dict` is strict (unknown keys, wrong types and
impossible values raise `WeightsMismatchError`) because a silently defaulted
field would build a network the weights do not fit.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from ..errors import WeightsMismatchError
from ..structure import STRUCTURE_CHANNELS


@dataclass
class GeneratorConfig:
    """Shape of a `FewShotGenerator` and how its source input is degraded at inference."""

    resolution: int = 128            # crop side R in px; a power of two, 64..256
    id_dim: int = 128                # identity embedding size (FaceNet)
    struct_channels: int = len(STRUCTURE_CHANNELS)  # N, from the structure mapper in use
    structure: str = "landmarks"     # the structure mapper's `name` the weights were trained with
    base_channels: int = 32          # channels at full resolution
    max_channels: int = 192          # cap when doubling per downsample (192: ~7.3M params at 128 px)
    n_down: int = 4                  # downsamples: 128 -> 8 at the bottleneck
    n_adain_blocks: int = 3          # identity-driven residual blocks in the bottleneck
    n_skips: int = 2                 # lowest decoder levels that get the encoder's features added
    decoder_adain: bool = True       # identity also modulates the SPADE decoder blocks
    mlp_hidden: int = 256            # width of the identity mapping MLP
    mlp_layers: int = 3              # linear layers in the identity mapping MLP
    spade_hidden: int = 64           # hidden width of SPADE's structure convs (capped by the level's width)
    infer_degrade_px: int = 16       # source crop is downsampled to this size before being fed in
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes (training run, data), not used to build

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `WeightsMismatchError` if the values cannot describe a working network."""
        problems: list[str] = []
        r = self.resolution
        if r < 32 or r > 1024 or r & (r - 1):
            problems.append(f"resolution must be a power of two between 32 and 1024, got {r}")
        elif r >> self.n_down < 4:
            problems.append(f"n_down={self.n_down} shrinks resolution {r} below 4 px at the bottleneck")
        if self.n_down < 1:
            problems.append(f"n_down must be >= 1, got {self.n_down}")
        for name in ("id_dim", "struct_channels", "base_channels", "max_channels", "mlp_hidden",
                     "mlp_layers", "spade_hidden"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_channels < self.base_channels:
            problems.append(f"max_channels ({self.max_channels}) is below base_channels ({self.base_channels})")
        if self.n_adain_blocks < 0:
            problems.append(f"n_adain_blocks must be >= 0, got {self.n_adain_blocks}")
        if not 0 <= self.n_skips <= self.n_down:
            problems.append(f"n_skips must be between 0 and n_down={self.n_down}, got {self.n_skips}")
        if not 2 <= self.infer_degrade_px <= r:
            problems.append(f"infer_degrade_px must be between 2 and resolution={r}, got {self.infer_degrade_px}")
        if not self.structure:
            problems.append("structure must name the structure mapper (e.g. 'landmarks')")
        if problems:
            raise WeightsMismatchError("Invalid generator config: " + "; ".join(problems) + ".")

    @classmethod
    def for_mapper(cls, mapper: Any, **overrides: Any) -> "GeneratorConfig":
        """Config whose structure input matches `mapper` (a `StructureMapper`)."""
        return cls(struct_channels=len(mapper.channels), structure=str(mapper.name), **overrides)

    def check_mapper(self, mapper: Any) -> None:
        """Raise `WeightsMismatchError` unless `mapper` produces the maps these weights expect."""
        n, name = len(mapper.channels), str(mapper.name)
        if n != self.struct_channels or name != self.structure:
            raise WeightsMismatchError(
                f"The generator was trained on '{self.structure}' structure maps with "
                f"{self.struct_channels} channels, but the structure mapper in use is '{name}' with {n}; "
                "use the matching mapper or generator weights trained for this one."
            )

    def channels_at(self, level: int) -> int:
        """Feature width after `level` downsamples (level 0 = full resolution)."""
        return min(self.base_channels * 2 ** level, self.max_channels)

    def architecture(self) -> dict[str, Any]:
        """The fields that build the network (all but the free-form notes): equal ones load each other's weights."""
        return {k: v for k, v in self.to_dict().items() if k != "extra"}

    def architecture_changes(self, other: "GeneratorConfig") -> list[str]:
        """The architecture fields in which `other` differs (empty: each loads the other's weights)."""
        mine, theirs = self.architecture(), other.architecture()
        return sorted(k for k in mine if mine[k] != theirs.get(k))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GeneratorConfig":
        """Strict inverse of `to_dict`; missing keys take defaults (older files), unknown ones fail."""
        if not isinstance(data, Mapping):
            raise WeightsMismatchError(f"Generator config must be a JSON object, got {type(data).__name__}.")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise WeightsMismatchError(
                f"Generator config has unknown keys {unknown}; the file was written by a newer or "
                "different version of fewshot-swap: update the node pack or use matching weights."
            )
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            expected = type(getattr(_DEFAULTS, name))
            ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
            if not ok:
                raise WeightsMismatchError(
                    f"Generator config key '{name}' must be {expected.__name__}, got "
                    f"{type(value).__name__} ({value!r}); the weights file's config is corrupt."
                )
            kwargs[name] = dict(value) if expected is dict else value
        return cls(**kwargs)


_DEFAULTS = GeneratorConfig()
