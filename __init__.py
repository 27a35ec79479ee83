"""ComfyUI entry point of the fewshot-swap node pack.

V3 node API (`comfy_entrypoint`) where the host has it, V1 mappings otherwise
(or when FEWSHOT_SWAP_NODE_API=v1); a host only ever sees one of the two.
Imported outside ComfyUI (by pytest, or as a plain package) it defines nothing.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("fewshot_core") is None:  # cloned into custom_nodes, not pip-installed
    sys.path.append(str(Path(__file__).resolve().parent))

if importlib.util.find_spec("folder_paths") is not None:  # inside ComfyUI
    from .nodes import host as _host
    from .nodes.adapters import build_v1, build_v3, log as _log, use_v3_api
    from .nodes.definitions import SPECS

    _host.register_folders()

    if use_v3_api():
        from comfy_api.latest import ComfyExtension

        _V3_NODES = [build_v3(spec) for spec in SPECS]

        class FewShotSwapExtension(ComfyExtension):
            async def get_node_list(self) -> list[type]:
                return list(_V3_NODES)

        async def comfy_entrypoint() -> FewShotSwapExtension:
            return FewShotSwapExtension()

        _log.info("fewshot-swap: %d nodes registered through the V3 node API", len(_V3_NODES))

    else:
        NODE_CLASS_MAPPINGS = {spec.node_id: build_v1(spec) for spec in SPECS}
        NODE_DISPLAY_NAME_MAPPINGS = {spec.node_id: spec.display_name for spec in SPECS}
        _log.info("fewshot-swap: %d nodes registered through the V1 node API", len(NODE_CLASS_MAPPINGS))
