"""`python -m fewshot_core.demo`: a real swap on public-domain photos from a registry package.

The photos are official White House portraits (US government works, public
domain) that ship in the sdist of `face_recognition==1.3.0` as test images.
"""
from __future__ import annotations

import argparse
import json
import sys
import tarfile
from pathlib import Path

import torch

from .align import SWAP_TEMPLATE, estimate_similarity, template_pixels, warp_to_crop
from .detect import order_faces
from .errors import FewShotError
from .imageio import load_image, make_row, save_image, stack_rows
from .models import fetch_all
from .models.download import fetch_archive
from .paths import cache_root
from .pipeline import SwapModel
from .weights import default_generator_path

DEMO_PACKAGE = ("face_recognition", "1.3.0", "face_recognition-1.3.0.tar.gz",
                "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec")
SOURCE = "biden.jpg"
TARGETS = ("obama.jpg", "obama2.jpg", "obama3.jpg")


def demo_images() -> Path:
    """Extract the demo photos from the registry sdist into the cache (once)."""
    folder = cache_root() / "demo"
    wanted = (SOURCE, *TARGETS)
    if all((folder / name).is_file() for name in wanted):
        return folder
    archive = fetch_archive(*DEMO_PACKAGE, sdist=True)
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        for name in wanted:
            member = tar.extractfile(f"face_recognition-1.3.0/tests/test_images/{name}")
            if member is None:
                raise FewShotError(f"{archive} has no tests/test_images/{name}; the demo needs it.")
            (folder / name).write_bytes(member.read())
    return folder


def face_matrix(model: SwapModel, image: torch.Tensor, size: int = 128) -> torch.Tensor:
    """The similarity transform of the image's largest face onto the swap crop."""
    dets = order_faces(model.detect(image)[0], "largest_first")
    if dets.boxes.shape[0] == 0:
        raise FewShotError("No face found in a demo image.")
    return estimate_similarity(dets.landmarks[:1], template_pixels(SWAP_TEMPLATE, size))


def aligned_preview(model: SwapModel, image: torch.Tensor, size: int = 128) -> torch.Tensor:
    """The image's largest face aligned to the swap crop: what the generator would see."""
    return warp_to_crop(image, face_matrix(model, image, size), size)


def both_ways_grid(model: SwapModel, folder: Path, size: int = 192) -> torch.Tensor:
    """Face crops, one row per direction: source | target shots | swap (Biden -> Obama, Obama -> Biden).

    Why: all four photos are public domain, so this grid may live in docs/ (held-out
    evaluation grids are derived from the shared data and stay out of git).
    """
    biden = load_image(folder / SOURCE)
    obamas = [load_image(folder / name) for name in TARGETS]
    rows = []
    for source, shots in ((biden, obamas), (obamas[0], [biden])):
        swapped, _ = model.swap(source, model.encode_identity([s[0] for s in shots]))
        crops = [aligned_preview(model, image, size) for image in shots]
        matrix = face_matrix(model, source, size)  # the swap keeps the source's geometry: crop both alike
        rows.append(make_row([warp_to_crop(source, matrix, size), *crops, warp_to_crop(swapped, matrix, size)],
                             height=size))
    return stack_rows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fewshot_core.demo")
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--generator", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        fetch_all()
        folder = demo_images()
        source = load_image(folder / SOURCE)
        targets = [load_image(folder / name) for name in TARGETS]
        generator = args.generator or default_generator_path()
        model = SwapModel.load(generator if generator.is_file() else None)
        identity = model.encode_identity([t[0] for t in targets])
        print(identity.report())
        args.out.mkdir(parents=True, exist_ok=True)
        if model.generator is None:
            preview = make_row([source, aligned_preview(model, source), *targets])
            save_image(preview, args.out / "detect_align_preview.png")
            print(f"error: generator weights {generator} are missing, so the demo stops after detection, alignment "
                  f"and identity encoding (preview written to {args.out / 'detect_align_preview.png'}). "
                  f"Train them with `python -m fewshot_core.train` or pass --generator PATH.", file=sys.stderr)
            return 2
        swapped, mask = model.swap(source, identity)
        save_image(swapped, args.out / "swap.png")
        save_image(mask.expand(-1, 3, -1, -1), args.out / "mask.png")
        grid = stack_rows([make_row([source, swapped]), make_row(targets, height=192)])
        save_image(grid, args.out / "before_after.png")
        save_image(both_ways_grid(model, folder), args.out / "both_ways.png")
        print(json.dumps({"swap": str(args.out / "swap.png"), "grid": str(args.out / "before_after.png"),
                          "both_ways": str(args.out / "both_ways.png"), "target_outliers": identity.outliers}))
        return 0
    except FewShotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
