"""Turn `NodeSpec`s into classes of the host's node API: V3 where it exists, V1 otherwise."""
from __future__ import annotations

import logging
import os
from typing import Any

from .spec import NodeSpec, Param

log = logging.getLogger("fewshot_swap")

_BUILTIN = {"IMAGE", "MASK", "INT", "FLOAT", "BOOLEAN", "STRING", "COMBO"}


NODE_API_ENV = "FEWSHOT_SWAP_NODE_API"  # "v1" registers the classic V1 classes even where V3 exists


def has_v3_api() -> bool:
    try:
        from comfy_api.latest import ComfyExtension, io  # noqa: F401
    except Exception:
        return False
    return True


def use_v3_api() -> bool:
    """V3 where the host has it, unless the user asked for V1 (a frontend or tool that only knows V1)."""
    wanted = os.environ.get(NODE_API_ENV, "").strip().lower()
    if wanted not in ("", "v1", "v3"):
        log.warning("fewshot-swap: %s=%r is not 'v1' or 'v3'; ignored", NODE_API_ENV, wanted)
    if wanted == "v1":
        return False
    available = has_v3_api()
    if wanted == "v3" and not available:
        log.warning("fewshot-swap: %s=v3 but this ComfyUI has no V3 node API; registering V1 nodes", NODE_API_ENV)
    return available


# ----------------------------------------------------------------------- V3
_custom_types: dict[str, Any] = {}


def _v3_type(io: Any, name: str) -> Any:
    """The io class for a socket type; custom types are created once and reused (io.Custom makes a new class)."""
    builtin = {"IMAGE": io.Image, "MASK": io.Mask, "INT": io.Int, "FLOAT": io.Float,
               "BOOLEAN": io.Boolean, "STRING": io.String, "COMBO": io.Combo}
    if name in builtin:
        return builtin[name]
    if name not in _custom_types:
        _custom_types[name] = io.Custom(name)
    return _custom_types[name]


def _v3_input(io: Any, param: Param) -> Any:
    kind = _v3_type(io, param.type)
    kwargs: dict[str, Any] = {"optional": param.optional}
    if param.tooltip:
        kwargs["tooltip"] = param.tooltip
    if param.type == "COMBO":
        choices = param.choices()
        kwargs["options"] = choices
        kwargs["default"] = param.default if param.default in choices else (choices[0] if choices else None)
    elif param.type in ("INT", "FLOAT"):
        for key in ("default", "min", "max", "step"):
            value = getattr(param, key)
            if value is not None:
                kwargs[key] = int(value) if param.type == "INT" else float(value)
    elif param.type == "BOOLEAN":
        kwargs["default"] = bool(param.default)
    elif param.type == "STRING":
        kwargs["default"] = param.default or ""
        kwargs["multiline"] = param.multiline
    return kind.Input(param.name, **kwargs)


def build_v3(spec: NodeSpec) -> type:
    from comfy_api.latest import io

    def define_schema(cls: type) -> Any:
        return io.Schema(
            node_id=spec.node_id,
            display_name=spec.display_name,
            category=spec.category,
            description=spec.description,
            inputs=[_v3_input(io, p) for p in spec.inputs],
            outputs=[_v3_type(io, o.type).Output(display_name=o.name) for o in spec.outputs],
            is_output_node=spec.output_node,
            not_idempotent=spec.not_idempotent,
        )

    def execute(cls: type, **kwargs: Any) -> Any:
        return io.NodeOutput(*spec.run(**kwargs))

    return type(spec.node_id, (io.ComfyNode,), {
        "define_schema": classmethod(define_schema),
        "execute": classmethod(execute),
        "__doc__": spec.description,
    })


# ----------------------------------------------------------------------- V1
def _v1_input(param: Param) -> tuple:
    if param.type == "COMBO":
        opts: dict[str, Any] = {"default": param.default} if param.default is not None else {}
        return (param.choices(), opts | ({"tooltip": param.tooltip} if param.tooltip else {}))
    opts = {k: getattr(param, k) for k in ("default", "min", "max", "step") if getattr(param, k) is not None}
    if param.type == "STRING":
        opts["multiline"] = param.multiline
    if param.tooltip:
        opts["tooltip"] = param.tooltip
    return (param.type, opts)


def build_v1(spec: NodeSpec) -> type:
    def input_types(cls: type) -> dict[str, Any]:
        required = {p.name: _v1_input(p) for p in spec.inputs if not p.optional}
        optional = {p.name: _v1_input(p) for p in spec.inputs if p.optional}
        return {"required": required, "optional": optional} if optional else {"required": required}

    def run(self: Any, **kwargs: Any) -> tuple:
        return tuple(spec.run(**kwargs))

    return type(spec.node_id, (), {
        "INPUT_TYPES": classmethod(input_types),
        "RETURN_TYPES": tuple(o.type for o in spec.outputs),
        "RETURN_NAMES": tuple(o.name for o in spec.outputs),
        "FUNCTION": "run",
        "CATEGORY": spec.category,
        "DESCRIPTION": spec.description,
        "OUTPUT_NODE": spec.output_node,
        "run": run,
    })
