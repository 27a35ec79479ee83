"""One declarative description per node, turned into V3 (or V1) ComfyUI classes by the adapters.

Why: the host decides which node API it speaks; the node's inputs, outputs and
behaviour are written once here and never twice.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence


@dataclass(frozen=True)
class Param:
    """One input socket or widget."""

    name: str
    type: str  # IMAGE, MASK, INT, FLOAT, BOOLEAN, STRING, COMBO or a custom type name
    default: Any = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    options: Sequence[str] | Callable[[], Sequence[str]] | None = None  # COMBO choices (callable: listed fresh)
    tooltip: str = ""
    optional: bool = False
    multiline: bool = False

    def choices(self) -> list[str]:
        opts = self.options() if callable(self.options) else self.options
        return list(opts or [])


@dataclass(frozen=True)
class Out:
    """One output socket."""

    type: str
    name: str


@dataclass(frozen=True)
class NodeSpec:
    """A node: stable id, what it shows, what it takes, what it gives, and the function that runs it."""

    node_id: str
    display_name: str
    description: str
    inputs: list[Param]
    outputs: list[Out]
    run: Callable[..., tuple]
    category: str = "fewshot-swap"
    output_node: bool = False
    not_idempotent: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
