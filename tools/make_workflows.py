"""Write workflows/*.json (UI format, listed by ComfyUI's template browser) and workflows/api/*.json.

Both come from one description per workflow, so the UI and API twins never
drift apart. Run: `python tools/make_workflows.py` after changing a node's widgets.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GENERATOR = "fewshot_generator_128.safetensors"


@dataclass
class Node:
    id: int
    type: str
    widgets: dict[str, Any] = field(default_factory=dict)  # in the node's widget order
    inputs: dict[str, tuple[int, int, str]] = field(default_factory=dict)  # name -> (node, slot, type)
    outputs: list[tuple[str, str]] = field(default_factory=list)  # (name, type)
    column: int = 0
    title: str | None = None
    ui_widgets: list[Any] | None = None  # UI widgets_values when they differ (e.g. LoadImage's upload)


def load_image(id: int, name: str, column: int = 0, title: str | None = None) -> Node:
    return Node(id, "LoadImage", {"image": name}, outputs=[("IMAGE", "IMAGE"), ("MASK", "MASK")], column=column,
                title=title, ui_widgets=[name, "image"])


def model_nodes(first_id: int) -> list[Node]:
    """Source, two target photos batched, model, identity: the start of every workflow."""
    i = first_id
    return [
        load_image(i, "source.png", title="Source image"),
        load_image(i + 1, "target_1.png", title="Target photo 1"),
        load_image(i + 2, "target_2.png", title="Target photo 2"),
        Node(i + 3, "ImageBatch", inputs={"image1": (i + 1, 0, "IMAGE"), "image2": (i + 2, 0, "IMAGE")},
             outputs=[("IMAGE", "IMAGE")], column=1, title="Target photos (add more with ImageBatch)"),
        Node(i + 4, "LoadFewShotModel", {"generator": GENERATOR, "device": "auto", "precision": "auto"},
             outputs=[("model", "FEWSHOT_MODEL")], column=1),
        Node(i + 5, "EncodeTargetIdentity", {"outlier_threshold": 0.35},
             inputs={"model": (i + 4, 0, "FEWSHOT_MODEL"), "images": (i + 3, 0, "IMAGE")},
             outputs=[("identity", "FEWSHOT_IDENTITY"), ("report", "STRING")], column=2),
        Node(i + 6, "FewShotSwap",
             {"faces": "all", "order": "left_to_right", "strength": 1.0, "feather": 6.0, "color_match": True,
              "min_face_size": 40, "chunk_size": 8},
             inputs={"model": (i + 4, 0, "FEWSHOT_MODEL"), "identity": (i + 5, 0, "FEWSHOT_IDENTITY"),
                     "image": (i, 0, "IMAGE")},
             outputs=[("image", "IMAGE"), ("mask", "MASK")], column=3),
    ]


def basic() -> list[Node]:
    nodes = model_nodes(1)
    nodes += [
        Node(8, "SaveImage", {"filename_prefix": "fewshot_swap"}, inputs={"images": (7, 0, "IMAGE")}, column=4),
        Node(9, "MaskToImage", inputs={"mask": (7, 1, "MASK")}, outputs=[("IMAGE", "IMAGE")], column=4),
        Node(10, "SaveImage", {"filename_prefix": "fewshot_swap_mask"}, inputs={"images": (9, 0, "IMAGE")}, column=5),
    ]
    return nodes


def upscale_composite() -> list[Node]:
    nodes = model_nodes(1)
    nodes += [
        Node(8, "ImageScaleBy", {"upscale_method": "lanczos", "scale_by": 2.0}, inputs={"image": (7, 0, "IMAGE")},
             outputs=[("IMAGE", "IMAGE")], column=4, title="Upscale (swap in an upscale model here)"),
        Node(9, "FaceMaskComposite", {"feather": 6.0, "color_match": False},
             inputs={"original": (1, 0, "IMAGE"), "processed": (8, 0, "IMAGE"), "mask": (7, 1, "MASK")},
             outputs=[("image", "IMAGE")], column=5),
        Node(10, "SaveImage", {"filename_prefix": "fewshot_swap_upscaled"}, inputs={"images": (9, 0, "IMAGE")},
             column=6),
    ]
    return nodes


def inpaint_mask() -> list[Node]:
    nodes = model_nodes(1)
    nodes += [
        Node(8, "GrowMask", {"expand": 12, "tapered_corners": True}, inputs={"mask": (7, 1, "MASK")},
             outputs=[("MASK", "MASK")], column=4),
        Node(9, "FeatherMask", {"left": 16, "top": 16, "right": 16, "bottom": 16}, inputs={"mask": (8, 0, "MASK")},
             outputs=[("MASK", "MASK")], column=5,
             title="Inpainting mask: wire into VAE Encode (for Inpainting) / InpaintModelConditioning"),
        Node(10, "SaveImage", {"filename_prefix": "fewshot_swap_for_inpaint"}, inputs={"images": (7, 0, "IMAGE")},
             column=5),
        Node(11, "MaskToImage", inputs={"mask": (9, 0, "MASK")}, outputs=[("IMAGE", "IMAGE")], column=6),
        Node(12, "SaveImage", {"filename_prefix": "fewshot_swap_inpaint_mask"}, inputs={"images": (11, 0, "IMAGE")},
             column=7),
    ]
    return nodes


WORKFLOWS = {
    "fewshot_swap_basic": basic,
    "fewshot_swap_upscale_composite": upscale_composite,
    "fewshot_swap_inpaint_mask": inpaint_mask,
}


def to_api(nodes: list[Node]) -> dict[str, Any]:
    api = {}
    for node in nodes:
        inputs: dict[str, Any] = dict(node.widgets)
        inputs.update({name: [str(src), slot] for name, (src, slot, _) in node.inputs.items()})
        api[str(node.id)] = {"class_type": node.type, "inputs": inputs, "_meta": {"title": node.title or node.type}}
    return api


def to_ui(nodes: list[Node]) -> dict[str, Any]:
    links: list[list[Any]] = []
    out_links: dict[tuple[int, int], list[int]] = {}
    ui_inputs: dict[int, list[dict[str, Any]]] = {n.id: [] for n in nodes}
    for node in nodes:
        for name, (src, slot, kind) in node.inputs.items():
            link_id = len(links) + 1
            links.append([link_id, src, slot, node.id, len(ui_inputs[node.id]), kind])
            out_links.setdefault((src, slot), []).append(link_id)
            ui_inputs[node.id].append({"name": name, "type": kind, "link": link_id})
    rows: dict[int, int] = {}
    ui_nodes = []
    for order, node in enumerate(nodes):
        row = rows.get(node.column, 0)
        rows[node.column] = row + 1
        entry: dict[str, Any] = {
            "id": node.id, "type": node.type, "pos": [40 + node.column * 340, 60 + row * 260],
            "size": [300, 120 + 26 * len(node.widgets)], "flags": {}, "order": order, "mode": 0,
            "inputs": ui_inputs[node.id],
            "outputs": [{"name": name, "type": kind, "links": out_links.get((node.id, slot), []), "slot_index": slot}
                        for slot, (name, kind) in enumerate(node.outputs)],
            "properties": {"Node name for S&R": node.type},
            "widgets_values": node.ui_widgets if node.ui_widgets is not None else list(node.widgets.values()),
        }
        if node.title:
            entry["title"] = node.title
        ui_nodes.append(entry)
    return {"last_node_id": max(n.id for n in nodes), "last_link_id": len(links), "nodes": ui_nodes,
            "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def main() -> None:
    (ROOT / "workflows" / "api").mkdir(parents=True, exist_ok=True)
    for name, build in WORKFLOWS.items():
        nodes = build()
        (ROOT / "workflows" / f"{name}.json").write_text(json.dumps(to_ui(nodes), indent=1) + "\n")
        (ROOT / "workflows" / "api" / f"{name}.json").write_text(json.dumps(to_api(nodes), indent=1) + "\n")
        print(f"wrote workflows/{name}.json and workflows/api/{name}.json")


if __name__ == "__main__":
    main()
