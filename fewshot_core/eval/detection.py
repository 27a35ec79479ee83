"""`python -m fewshot_core.eval.detection [--limit N]`: how often the detector finds the face.

LFW photos are 250x250 with the subject's face centred (other people may
appear): the central face counts as found when a detected box contains the
image centre. CelebA-299 crops are centred on a face that an earlier detector
found: any face counts. Prints a table, then a one-line JSON summary as the
very last line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..detect import FaceDetector
from ..errors import FewShotError
from .split import default_data_root


def _subset(paths: list[Path], limit: int | None) -> list[Path]:
    """Every k-th of the sorted paths, so a limited run still spreads over all identities."""
    if limit is None or limit >= len(paths):
        return paths
    picks = np.linspace(0, len(paths) - 1, limit).round().astype(int)
    return [paths[i] for i in picks]


def _load(path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)


def measure(
    detector: FaceDetector, paths: list[Path], batch_size: int, min_face_size: int, device: str
) -> dict[str, float]:
    """Detection statistics over `paths` (images of one size per batch are detected together)."""
    any_face = central = several = faces = 0
    offsets: list[float] = []
    scores: list[float] = []
    start = time.perf_counter()
    for i in range(0, len(paths), batch_size):
        images = [_load(p) for p in paths[i:i + batch_size]]
        groups: dict[tuple[int, int], list[torch.Tensor]] = {}
        for image in images:
            groups.setdefault(tuple(image.shape[1:]), []).append(image)
        for (h, w), members in groups.items():
            centre = torch.tensor([(w - 1) / 2, (h - 1) / 2])
            for dets in detector.detect(torch.stack(members).to(device), min_face_size=min_face_size):
                dets = dets.to("cpu")
                n = len(dets)
                faces += n
                any_face += n > 0
                several += n > 1
                if n == 0:
                    continue
                box_centres = (dets.boxes[:, :2] + dets.boxes[:, 2:]) / 2
                nearest = int((box_centres - centre).norm(dim=1).argmin())
                inside = (dets.boxes[:, :2] <= centre).all(dim=1) & (dets.boxes[:, 2:] >= centre).all(dim=1)
                central += bool(inside.any())
                offsets.append(float((box_centres[nearest] - centre).norm()) / max(h, w))
                scores.append(float(dets.scores[nearest]))
    seconds = time.perf_counter() - start
    count = max(len(paths), 1)
    return {
        "images": len(paths),
        "any_face": any_face / count,
        "central_face": central / count,
        "several_faces": several / count,
        "faces_per_image": faces / count,
        "median_centre_offset": float(np.median(offsets)) if offsets else float("nan"),
        "median_score": float(np.median(scores)) if scores else float("nan"),
        "ms_per_image": 1000 * seconds / count,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fewshot_core.eval.detection", description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="evenly spaced subset of N photos per data set")
    parser.add_argument("--data", type=Path, default=None, help="shared data folder (default ../shared/data)")
    parser.add_argument("--model", type=Path, default=None, help="mtcnn.safetensors (default: the model folder)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--min-face-size", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    root = args.data or default_data_root()
    try:
        if args.model is None:
            from ..models import require_part

            args.model = require_part("mtcnn")
        detector = FaceDetector.from_file(args.model, device=args.device)
    except FewShotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    sets = {
        "lfw": sorted((root / "lfw").glob("*/*.jpg")),
        "celeba299": sorted((root / "celeba299" / "images").glob("*.jpg")),
    }
    if not any(sets.values()):
        print(f"error: no photos under {root}; set FEWSHOT_DATA_DIR or pass --data", file=sys.stderr)
        return 1
    results = {}
    for name, paths in sets.items():
        results[name] = measure(detector, _subset(paths, args.limit), args.batch_size, args.min_face_size, args.device)
    columns = ["images", "any_face", "central_face", "several_faces", "faces_per_image",
               "median_centre_offset", "median_score", "ms_per_image"]
    print(f"{'set':10s} " + " ".join(f"{c:>20s}" for c in columns))
    for name, row in results.items():
        print(f"{name:10s} " + " ".join(f"{row[c]:>20.4f}" if isinstance(row[c], float) else f"{row[c]:>20d}"
                                        for c in columns))
    summary = {
        "lfw_central_face_rate": round(results["lfw"]["central_face"], 4),
        "lfw_any_face_rate": round(results["lfw"]["any_face"], 4),
        "celeba_any_face_rate": round(results["celeba299"]["any_face"], 4),
        "lfw_images": results["lfw"]["images"],
        "celeba_images": results["celeba299"]["images"],
        "min_face_size": args.min_face_size,
        "threads": args.threads,
        "ms_per_image_lfw": round(results["lfw"]["ms_per_image"], 1),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
